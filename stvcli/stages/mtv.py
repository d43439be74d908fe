"""The MTV baseline (Huang et al., NeurIPS 2024), docs/method.md §6.

Mean last-token activations over N many-shot forwards at every head [L, H, D] (the
scan's many-shot passes, which are exactly those forwards); locations by the shared
REINFORCE loop over an independent Bernoulli per head (logits [L, H] init -1, p
clamped to [1e-3, 1 - 1e-3], Adam lr 0.1, 600 iterations, one training query and 32
samples per iteration, reward = -CE of the first answer token); final = the best of 10
draws scored on 50 support items. Checkpoints and resumes like STV's search.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stvcli import distributed as dist
from stvcli.artifacts import Artifact
from stvcli.console import say
from stvcli.data.types import TaskData
from stvcli.engine import InsertMode, Intervention, all_locations
from stvcli.models.base import ModelAdapter
from stvcli.stages.common import Meter, check_inputs
from stvcli.stages.config import MTVConfig
from stvcli.stages.reinforce import BernoulliPolicy, CandidateScorer, Checkpoint, best_draw, reinforce, search_queries
from stvcli.vectors import make_intervention
from stvcli.workspace import Provenance, Workspace


@dataclass
class MTVResult:
    kind: str  # the artifact it is stored as: "mtv" (replace, the paper's) or "mtv-add"
    means: torch.Tensor  # [L, H, D]
    locations: torch.Tensor  # [K, 2]
    logits: torch.Tensor  # [L, H]
    rewards: list[float]
    reused: bool
    stats: dict[str, Any]


def run_mtv(
    workspace: Path,
    adapter: ModelAdapter,
    task_data: TaskData,
    config: MTVConfig,
    batch_size: int | None = None,
    quiet: bool = False,
    force: bool = False,
) -> MTVResult:
    """Build (or reuse, or resume) ``W/mtv.safetensors`` from the scan's many-shot means."""
    dist.init()
    space = Workspace(workspace, force, quiet)
    kind = "mtv" if config.insert == "replace" else "mtv-add"
    start = space.begin(kind, config.settings(), upstream="scan", fingerprint=adapter.fingerprint())
    scan, settings, done = start.upstream, start.settings, start.done
    if done is not None:
        extra = done.meta["extra"]
        return MTVResult(kind, done["means"], done["locations"], done["logits"], extra.get("rewards", []), True,
                         extra.get("stats", {}))

    means = scan["many_mean"]  # [L, H, D]
    n_layers, n_heads, _ = means.shape
    every = all_locations(n_layers, n_heads)
    flat_means = means.reshape(n_layers * n_heads, -1)
    flat_zero = scan["zero_mean"].reshape(n_layers * n_heads, -1)
    queries = search_queries(task_data.support, set(scan.meta["extra"].get("query_uids", [])), config.seed,
                             config.holdout, config.queries_per_iteration,
                             fix="lower the MTV hold-out, scan fewer --queries, or give more support data")
    holdout, train = queries.holdout, queries.train
    check_inputs(adapter, task_data.task, holdout + train, stage="mtv", answers=True)

    meter = Meter()
    score = CandidateScorer(
        adapter, task_data.task,
        lambda masks: make_intervention(every, flat_means, flat_zero, config.insert, row_mask=masks.bool()),
        "first-token", meter, batch_size,
    )
    policy = BernoulliPolicy(torch.full((n_layers, n_heads), config.init_logit))
    provenance = Provenance.of(scan)
    history = reinforce(
        policy, score, train, iterations=config.iterations, samples=config.samples, queries_per_iteration=config.queries_per_iteration,
        lr=config.lr, seed=config.seed, label="mtv search",
        checkpoint=Checkpoint(space, f"{kind}-state", settings, provenance, config.checkpoint_every, meter), quiet=quiet,
    )
    draws = final_draws(policy, config, adapter.family)
    best = draws[best_draw(draws, holdout or train[:1], score)].bool()
    locations = every[best]
    logits = policy.logits.detach()
    stats = dist.merge_stats(dist.all_gather_object(meter.summary()))
    stats["scan_forwards_shared"] = int(scan.meta["extra"].get("n_queries", 0))
    result = MTVResult(kind, means, locations, logits, history.rewards, False, stats)
    if dist.is_main():  # every rank holds the same result; rank 0 writes it
        space.save(kind, {"means": means, "locations": locations, "logits": logits, "zero_mean": scan["zero_mean"]},
                   settings=settings, provenance=provenance, seed=config.seed,
                   extra={"stats": stats, "rewards": history.rewards, "history": history.as_dict(),
                          "queries": queries.record()})
        space.discard(f"{kind}-state")
        say(f"{kind}: {config.iterations} iterations, {len(locations)} heads selected -> {space.path(kind)}", quiet)
    dist.barrier()  # the artifact exists before any rank reads it
    return result


#: Families whose final draws the official MTV code thresholds (p < 0.8 -> never drawn).
THRESHOLD_FAMILIES = {"idefics2": 0.8}


def final_draws(policy: BernoulliPolicy, config: MTVConfig, family: str) -> torch.Tensor:
    """The best-of candidates: ``config.best_of`` head sets drawn from the trained
    probabilities, with heads below the threshold (``config.threshold``, or the official
    code's per-family value, 0.8 for Idefics2) never drawn: [best_of, L*H]. Unlike the
    training draws, p is not clamped to [1e-3, 1 - 1e-3] (on 1,024 heads that clamp
    alone adds about one stray head per draw)."""
    threshold = config.threshold if config.threshold is not None else THRESHOLD_FAMILIES.get(family, 0.0)
    p = torch.sigmoid(policy.logits.detach().flatten())  # unclamped, as the official code draws its finalists
    p = torch.where(p < threshold, torch.zeros_like(p), p)
    return torch.bernoulli(p.expand(config.best_of, -1), generator=torch.Generator().manual_seed(config.seed + 7))


def mtv_intervention(artifact: Artifact, mode: InsertMode = "replace") -> Intervention:
    """The MTV vectors to insert: the mean activations at the selected heads."""
    locations = artifact["locations"]
    means = artifact["means"][locations[:, 0], locations[:, 1]]
    zero = artifact["zero_mean"][locations[:, 0], locations[:, 1]]
    return make_intervention(locations, means, zero, mode)
