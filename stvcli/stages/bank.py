"""Stage 2, the activation bank ("what").

For T many-shot contexts keep the activations at the K scanned locations, [T, K, D];
per location run k-means into M clusters (FAISS, on GPU when one is present).
Output: ``bank`` [K, M, D] float32, ``counts`` [K, M], ``baseline`` [K, D] (the
zero-shot mean at each location, for ``add`` insertion).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stvcli import distributed as dist
from stvcli.artifacts import load_artifact, save_artifact
from stvcli.config import ModelOptions
from stvcli.data.loading import load_task_data
from stvcli.data.options import DataOptions
from stvcli.errors import StvError
from stvcli.stages.common import Meter, artifact_path, file_digest, get_adapter, progress, reuse_artifact, say, say_rank
from stvcli.stages.config import BankConfig
from stvcli.stages.scan import capture_prompts, many_shot_prompts


@dataclass
class BankResult:
    bank: torch.Tensor  # [K, M, D]
    counts: torch.Tensor  # [K, M]
    reused: bool
    stats: dict[str, Any]


def faiss_kmeans(
    points: np.ndarray, clusters: int, seed: int, niter: int = 25, nredo: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """k-means of points [T, D] into ``clusters``: (centroids [M, D], counts [M]).

    Uses FAISS (its GPU index when faiss-gpu and a GPU are present); keeps the best of
    ``nredo`` seeded restarts, since one random start often lands in a poor optimum.
    """
    import faiss

    points = np.ascontiguousarray(points, dtype=np.float32)
    use_gpu = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    kmeans = faiss.Kmeans(
        points.shape[1], clusters, niter=niter, nredo=nredo, seed=seed, gpu=use_gpu, verbose=False,
        min_points_per_centroid=1, max_points_per_centroid=1 << 20,
    )
    kmeans.train(points)
    _, assignment = kmeans.index.search(points, 1)
    counts = np.bincount(assignment[:, 0], minlength=clusters)
    return kmeans.centroids.copy(), counts


def cluster_locations(activations: torch.Tensor, clusters: int, seed: int, niter: int = 25):
    """Per-location k-means. activations: [T, K, D] -> (bank [K, M, D], counts [K, M])."""
    n_contexts, n_locations, _ = activations.shape
    if n_contexts < clusters:
        raise StvError(f"k-means needs at least as many contexts as clusters: {n_contexts} < {clusters}")
    banks, counts = [], []
    for k in range(n_locations):
        centroids, sizes = faiss_kmeans(activations[:, k].numpy(), clusters, seed + k, niter)
        banks.append(torch.from_numpy(centroids))
        counts.append(torch.from_numpy(sizes))
    return torch.stack(banks), torch.stack(counts).long()


def run_bank(config: BankConfig) -> BankResult:
    """Build (or reuse) the bank from the scan's locations.

    Under torchrun the extra many-shot contexts are split across ranks (shards in
    ``W/shards``, reused after a crash); rank 0 clusters and writes the bank.
    """
    dist.init()
    if config.contexts < config.clusters:
        raise StvError(
            f"--contexts {config.contexts} is below --clusters {config.clusters}; k-means needs T >= M "
            f"(raise --contexts or lower --clusters)"
        )
    scan_path = artifact_path(config.workspace, "scan")
    scan = load_artifact(scan_path, "scan")
    scan_settings = scan.settings
    settings = {
        "clusters": config.clusters,
        "contexts": config.contexts,
        "seed": config.seed,
        "niter": config.niter,
        "scan": file_digest(scan_path),
        "task": scan_settings["task"],
        "model": scan_settings["model"],
        "data": scan_settings["data"],
        "shots": scan_settings["shots"],
    }
    path = artifact_path(config.workspace, "bank")
    bank = reuse_artifact(path, "bank", settings, config.force, quiet=config.quiet,
                          why="same settings and scan; --force rebuilds")
    if bank is not None:
        return BankResult(bank["bank"], bank["counts"], True, bank.meta["extra"].get("stats", {}))

    locations = scan["locations"]
    meter = Meter()
    activations = _kept_activations(config, locations)
    adapter = None
    shard_stats = None
    if len(activations) < config.contexts:
        model_options = ModelOptions(**scan_settings["model"])
        adapter = get_adapter(model_options)
        task_data = load_task_data(DataOptions(**scan_settings["data"]))
        missing = config.contexts - len(activations)
        rng = random.Random(config.seed + 1)
        queries = [rng.choice(task_data.support) for _ in range(missing)]
        prompts = many_shot_prompts(task_data.task, queries, task_data.support, scan_settings["shots"], rng)
        if dist.active():
            more, shard_stats = _bank_contexts_sharded(config, adapter, prompts, locations, settings)
        else:
            with progress(config.quiet) as bar:
                job = bar.add_task("bank contexts", total=missing)
                more = capture_prompts(
                    adapter, prompts, meter, config.batch_size, locations, on_batch=lambda n: bar.advance(job, n)
                )
        if not dist.is_main():  # rank 0 clusters and writes the bank
            return dist.broadcast_object(None)
        activations = torch.cat([activations, more]) if len(activations) else more
        say(f"bank: reused {config.contexts - missing} scan contexts, ran {missing} more", config.quiet)
    else:
        say(f"bank: reusing {config.contexts} many-shot contexts from the scan", config.quiet)
    if not dist.is_main():
        return dist.broadcast_object(None)
    activations = activations[: config.contexts]
    bank, counts = cluster_locations(activations, config.clusters, config.seed, config.niter)
    stats = shard_stats or meter.summary()
    baseline = scan["zero_mean"][locations[:, 0], locations[:, 1]]  # [K, D]
    save_artifact(
        path,
        "bank",
        {"bank": bank, "counts": counts, "locations": locations, "baseline": baseline},
        model=scan.meta["model"],
        fingerprint=scan.fingerprint,
        settings=settings,
        data=scan.meta.get("data"),
        seed=config.seed,
        extra={"stats": stats},
    )
    say(f"bank: {len(locations)} locations x {config.clusters} clusters from {len(activations)} contexts -> {path}",
        config.quiet)
    return dist.broadcast_object(BankResult(bank, counts, False, stats))  # rank 0's result on every rank


def _bank_contexts_sharded(config: BankConfig, adapter, prompts, locations, settings):
    """Each rank captures its share of the extra contexts into ``W/shards/bank-<r>-of-<w>``.

    Returns (activations [n, K, D] in prompt order, merged stats) on rank 0, (None, None)
    elsewhere. A shard with the same settings from an earlier (crashed) run is reused.
    """
    n = len(prompts)
    shard = dist.my_shard("bank", config.workspace, settings, n, config.force)
    start, stop = shard.start, shard.stop
    if shard.done is not None:
        say_rank(f"bank: reusing the finished shard {shard.path} (contexts {start}:{stop})", config.quiet)
    else:
        meter = Meter()
        if stop > start:
            with progress(config.quiet) as bar:
                job = bar.add_task(f"bank contexts (rank {dist.rank()})", total=stop - start)
                part = capture_prompts(adapter, prompts[start:stop], meter, config.batch_size, locations,
                                       on_batch=lambda n: bar.advance(job, n))
        else:
            part = torch.zeros(0, len(locations), adapter.head_dim)
        dist.save_shard(shard.path, {"activations": part}, shard.settings, {"stats": meter.summary()})
    dist.crash_for_test("bank")
    reused = dist.all_gather_object(shard.done is not None)  # also the barrier: every shard is on disk
    if not dist.is_main():
        return None, None
    shards = dist.read_shards(config.workspace, "bank", settings, n)
    stats = dist.merge_stats([s.meta["extra"]["stats"] for s in shards])
    stats["reused_shards"] = [r for r, flag in enumerate(reused) if flag]
    dist.clear_shards(config.workspace, "bank")
    return torch.cat([s["activations"] for s in shards]), stats


def _kept_activations(config: BankConfig, locations: torch.Tensor) -> torch.Tensor:
    """The scan's many-shot activations at ``locations`` ([T, K, D]), or an empty tensor."""
    path = artifact_path(config.workspace, "activations")
    if not path.exists():
        return torch.empty(0)
    kept = load_artifact(path, "activations")
    if not torch.equal(kept["locations"], locations):
        return torch.empty(0)
    return kept["activations"]
