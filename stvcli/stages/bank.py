"""Stage 2, the activation bank ("what").

For T many-shot contexts keep the activations at the K scanned locations, [T, K, D];
per location run k-means into M clusters (FAISS, on GPU when one is present).
Output: ``bank`` [K, M, D] float32, ``counts`` [K, M], ``baseline`` [K, D] (the
zero-shot mean at each location, for ``add`` insertion).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stvcli import distributed as dist
from stvcli.artifacts import Artifact, check_fingerprint
from stvcli.config import ModelOptions
from stvcli.console import progress, say
from stvcli.data.loading import load_task_data
from stvcli.data.options import DataOptions
from stvcli.data.types import Item
from stvcli.errors import StvError
from stvcli.stages.common import Meter, check_inputs, get_adapter
from stvcli.stages.config import CONTEXTS_PER_CLUSTER, BankConfig
from stvcli.stages.scan import capture_prompts, many_shot_prompts
from stvcli.workspace import Provenance, Workspace


@dataclass
class BankResult:
    bank: torch.Tensor  # [K, M, D]
    counts: torch.Tensor  # [K, M]
    reused: bool
    stats: dict[str, Any]


def faiss_gpus() -> int:
    """GPUs FAISS can use (0 with faiss-cpu or without a GPU)."""
    import faiss

    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def faiss_kmeans(
    points: np.ndarray, clusters: int, seed: int, niter: int = 25, nredo: int = 5, gpu: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """k-means of points [T, D] into ``clusters``: (centroids [M, D], counts [M]).

    Uses FAISS (its GPU index when faiss-gpu and a GPU are present, or as ``gpu`` says);
    keeps the best of ``nredo`` seeded restarts, since one random start often lands in
    a poor optimum.
    """
    import faiss

    points = np.ascontiguousarray(points, dtype=np.float32)
    use_gpu = faiss_gpus() > 0 if gpu is None else gpu
    kmeans = faiss.Kmeans(
        points.shape[1], clusters, niter=niter, nredo=nredo, seed=seed, gpu=use_gpu, verbose=False,
        min_points_per_centroid=1, max_points_per_centroid=1 << 20,
    )
    kmeans.train(points)
    _, assignment = kmeans.index.search(points, 1)
    counts = np.bincount(assignment[:, 0], minlength=clusters)
    return kmeans.centroids.copy(), counts


def cluster_locations(activations: torch.Tensor, clusters: int, seed: int, niter: int = 25,
                      gpu: bool | None = None):
    """Per-location k-means. activations: [T, K, D] -> (bank [K, M, D], counts [K, M]);
    ``gpu``: FAISS on the GPU (None: when one is there)."""
    n_contexts, n_locations, _ = activations.shape
    if n_contexts < clusters:
        raise StvError(f"k-means needs at least as many contexts as clusters: {n_contexts} < {clusters}")
    banks, counts = [], []
    for k in range(n_locations):
        centroids, sizes = faiss_kmeans(activations[:, k].numpy(), clusters, seed + k, niter, gpu=gpu)
        banks.append(torch.from_numpy(centroids))
        counts.append(torch.from_numpy(sizes))
    return torch.stack(banks), torch.stack(counts).long()


def run_bank(config: BankConfig) -> BankResult:
    """Build (or reuse) the bank from the scan's locations.

    Contexts: the scan's kept many-shot activations first, then extra many-shot
    forwards (under torchrun split across ranks); rank 0 clusters and writes the bank.
    """
    dist.init()
    if config.contexts is None:
        config = config.model_copy(update={"contexts": CONTEXTS_PER_CLUSTER * config.clusters})
    assert config.contexts is not None
    workspace = Workspace(config.workspace, config.force, config.quiet)
    start = workspace.begin("bank", config.settings(), upstream="scan")
    scan, settings, bank = start.upstream, start.settings, start.done
    if bank is not None:
        return BankResult(bank["bank"], bank["counts"], True, bank.meta["extra"].get("stats", {}))

    started = time.perf_counter()
    locations = scan["locations"]
    activations, context_uids = _kept_activations(workspace, locations)
    activations, context_uids = activations[: config.contexts], context_uids[: config.contexts]
    missing = config.contexts - len(activations)
    meter = Meter()
    stats: dict[str, Any] | None = None
    if missing > 0:
        more, stats, more_uids = _more_contexts(workspace, config, scan, locations, missing, settings,
                                                   context_uids)
        context_uids += more_uids
        if more is not None:
            activations = torch.cat([activations, more]) if len(activations) else more
        say(f"bank: reused {config.contexts - missing} scan contexts, ran {missing} more", config.quiet)
    else:
        say(f"bank: reusing {config.contexts} many-shot contexts from the scan", config.quiet)
    if not dist.is_main():  # rank 0 clusters and writes the bank
        return dist.broadcast_object(None)
    clustering = time.perf_counter()
    bank, counts = cluster_locations(activations, config.clusters, config.seed, config.niter)
    baseline = scan["zero_mean"][locations[:, 0], locations[:, 1]]  # [K, D]
    # the whole stage's time: the forwards' meter alone would leave the k-means out
    stats = {**(stats or meter.summary()), "kmeans_seconds": round(time.perf_counter() - clustering, 3),
             "seconds": round(time.perf_counter() - started, 3)}
    workspace.save("bank", {"bank": bank, "counts": counts, "locations": locations, "baseline": baseline},
                   settings=settings, provenance=Provenance.of(scan), seed=config.seed,
                   extra={"stats": stats, "context_uids": context_uids})
    say(f"bank: {len(locations)} locations x {config.clusters} clusters from {len(activations)} contexts -> "
        f"{workspace.path('bank')}", config.quiet)
    return dist.broadcast_object(BankResult(bank, counts, False, stats))  # rank 0's result on every rank


def context_queries(support: list[Item], kept: list[str], n: int, rng: random.Random) -> list[Item]:
    """``n`` queries for new many-shot contexts. The kept contexts' queries (the scan's)
    are used again, each with fresh demonstrations, in shuffled rounds (every one once
    before any twice), so the contexts never use up support items the search needs
    (docs/method.md §3.1, §4.2); with no kept contexts, support items in rounds."""
    by_uid = {item.uid: item for item in support}
    pool = [by_uid[uid] for uid in dict.fromkeys(kept) if uid in by_uid] or list(support)
    queries: list[Item] = []
    while len(queries) < n:
        queries += rng.sample(pool, min(len(pool), n - len(queries)))
    return queries


def _more_contexts(workspace: Workspace, config: BankConfig, scan: Artifact, locations: torch.Tensor,
                   missing: int, settings: dict[str, Any], kept: list[str]) -> tuple[torch.Tensor | None, dict[str, Any], list[str]]:
    """Many-shot activations [missing, K, D] of new contexts at ``locations`` (None on
    ranks other than 0 under torchrun, where each rank captures its share), the stats,
    and the uids of the contexts' queries."""
    scan_settings = scan.settings
    adapter = get_adapter(ModelOptions(**scan_settings["model"]))
    check_fingerprint(scan, adapter.fingerprint())  # the model on disk may have changed since the scan
    task_data = load_task_data(DataOptions(**scan_settings["data"]))
    rng = random.Random(f"bank:{config.seed}")  # not Random(seed): the scan draws its queries from that
    queries = context_queries(task_data.support, kept, missing, rng)
    check_inputs(adapter, task_data.task, queries, task_data.support, scan_settings["shots"], stage="bank",
                 fix="rerun stv scan with --shots {n} or fewer")
    prompts = many_shot_prompts(task_data.task, queries, task_data.support, scan_settings["shots"], rng)

    def share(start: int, stop: int):
        meter = Meter()
        label = "bank contexts" if dist.world_size() == 1 else f"bank contexts (rank {dist.rank()})"
        if stop == start:
            return {"activations": torch.zeros(0, len(locations), adapter.head_dim)}, meter.summary()
        with progress(config.quiet) as bar:
            job = bar.add_task(label, total=stop - start)
            part = capture_prompts(adapter, prompts[start:stop], meter, config.batch_size, locations,
                                   on_batch=lambda n: bar.advance(job, n))
        return {"activations": part}, meter.summary()

    shares = workspace.sharded("bank", settings, missing, share, unit="contexts")
    uids = [q.uid for q in queries]
    if shares is None:
        return None, {}, uids
    return shares.cat("activations"), shares.stats, uids


def _kept_activations(workspace: Workspace, locations: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """The scan's many-shot activations at ``locations`` ([T, K, D]) and their queries'
    uids, or an empty tensor and list."""
    if not workspace.exists("activations"):
        return torch.empty(0), []
    kept = workspace.load("activations")
    if not torch.equal(kept["locations"], locations):
        return torch.empty(0), []
    return kept["activations"], list(kept.meta["extra"].get("query_uids", []))
