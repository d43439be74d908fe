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
from stvcli.stages.common import Meter
from stvcli.stages.config import MTVConfig
from stvcli.stages.reinforce import BernoulliPolicy, CandidateScorer, Checkpoint, best_draw, reinforce, split_support
from stvcli.vectors import make_intervention
from stvcli.workspace import Provenance, Workspace


@dataclass
class MTVResult:
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
    start = space.begin("mtv", config.settings(), upstream="scan", fingerprint=adapter.fingerprint())
    scan, settings, done = start.upstream, start.settings, start.done
    if done is not None:
        extra = done.meta["extra"]
        return MTVResult(done["means"], done["locations"], done["logits"], extra.get("rewards", []), True,
                         extra.get("stats", {}))

    means = scan["many_mean"]  # [L, H, D]
    n_layers, n_heads, _ = means.shape
    every = all_locations(n_layers, n_heads)
    flat_means = means.reshape(n_layers * n_heads, -1)
    flat_zero = scan["zero_mean"].reshape(n_layers * n_heads, -1)
    holdout, train = split_support(task_data.support, config.seed, config.holdout)
    train = train or holdout

    meter = Meter()
    score = CandidateScorer(
        adapter, task_data.task,
        lambda masks: make_intervention(every, flat_means, flat_zero, config.insert, row_mask=masks.bool()),
        "first-token", meter, batch_size,
    )
    policy = BernoulliPolicy(torch.full((n_layers, n_heads), config.init_logit))
    provenance = Provenance.of(scan)
    rewards = reinforce(
        policy, score, train, iterations=config.iterations, samples=config.samples, queries_per_iteration=1,
        lr=config.lr, seed=config.seed, label="mtv search",
        checkpoint=Checkpoint(space, "mtv-state", settings, provenance, config.checkpoint_every), quiet=quiet,
    )
    draws = policy.sample(config.best_of, torch.Generator().manual_seed(config.seed + 7))
    best = draws[best_draw(draws, holdout or train[:1], score)].bool()
    locations = every[best]
    logits = policy.logits.detach()
    stats = dist.merge_stats(dist.all_gather_object(meter.summary()))
    stats["scan_forwards_shared"] = int(scan.meta["extra"].get("n_queries", 0))
    result = MTVResult(means, locations, logits, rewards, False, stats)
    if dist.is_main():  # every rank holds the same result; rank 0 writes it
        space.save("mtv", {"means": means, "locations": locations, "logits": logits, "zero_mean": scan["zero_mean"]},
                   settings=settings, provenance=provenance, seed=config.seed,
                   extra={"stats": stats, "rewards": rewards})
        space.discard("mtv-state")
        say(f"mtv: {config.iterations} iterations, {len(locations)} heads selected -> {space.path('mtv')}", quiet)
    dist.barrier()  # the artifact exists before any rank reads it
    return result


def mtv_intervention(artifact: Artifact, mode: InsertMode = "replace") -> Intervention:
    """The MTV vectors to insert: the mean activations at the selected heads."""
    locations = artifact["locations"]
    means = artifact["means"][locations[:, 0], locations[:, 1]]
    zero = artifact["zero_mean"][locations[:, 0], locations[:, 1]]
    return make_intervention(locations, means, zero, mode)
