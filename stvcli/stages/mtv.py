"""The MTV baseline (Huang et al., NeurIPS 2024), faithful to METHOD.md.

Mean last-token activations over N many-shot forwards at every head [L, H, D] (the
scan's many-shot passes, which are exactly those forwards); locations by REINFORCE
over an independent Bernoulli per head (logits [L, H] init -1, p clamped to [1e-3,
1 - 1e-3], Adam lr 0.1, 600 iterations, one training query and 32 samples per
iteration, reward = -CE of the first answer token); final = the best of 10 draws
scored on 50 support items. Insertion uses the same replace rule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stvcli import distributed as dist
from stvcli.artifacts import Artifact, load_artifact, save_artifact
from stvcli.data.types import TaskData
from stvcli.engine import all_locations
from stvcli.models.base import ModelAdapter
from stvcli.stages.common import Meter, artifact_path, file_digest, progress, reuse_artifact, say
from stvcli.stages.config import MTVConfig
from stvcli.stages.reinforce import advantages, candidate_rewards
from stvcli.vectors import make_intervention

P_MIN, P_MAX = 1e-3, 1 - 1e-3


@dataclass
class MTVResult:
    means: torch.Tensor  # [L, H, D]
    locations: torch.Tensor  # [K, 2]
    logits: torch.Tensor  # [L, H]
    rewards: list[float]
    reused: bool
    stats: dict[str, Any]


def bernoulli_step(logits: torch.Tensor, optimizer: torch.optim.Optimizer, masks: torch.Tensor, rewards: torch.Tensor):
    """One REINFORCE update of per-head Bernoulli logits [L*H] from masks [S, L*H] and rewards [S]."""
    p = torch.sigmoid(logits).clamp(P_MIN, P_MAX)
    log_prob = (masks * p.log() + (1 - masks) * (1 - p).log()).sum(1)  # [S]
    loss = -(advantages(rewards) * log_prob).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def sample_masks(logits: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n Bernoulli draws of the head set: [n, L*H] float (1 = insert at that head)."""
    p = torch.sigmoid(logits.detach()).clamp(P_MIN, P_MAX)
    return torch.bernoulli(p.expand(n, -1), generator=generator)


def run_mtv(
    workspace: Path,
    adapter: ModelAdapter,
    task_data: TaskData,
    config: MTVConfig,
    batch_size: int | None = None,
    quiet: bool = False,
    force: bool = False,
) -> MTVResult:
    """Build (or reuse) ``W/mtv.safetensors`` from the scan's many-shot mean activations.

    Under torchrun like STV's search: same draws on every rank, each scores its slice
    of the samples, gathered rewards, the same step everywhere; rank 0 writes.
    """
    dist.init()
    scan_path = artifact_path(workspace, "scan")
    scan = load_artifact(scan_path, "scan", fingerprint=adapter.fingerprint())
    settings = {**config.model_dump(mode="json"), "scan": file_digest(scan_path), "task": scan.settings["task"]}
    path = artifact_path(workspace, "mtv")
    done = reuse_artifact(path, "mtv", settings, force, quiet=quiet, why="same settings and scan; --force reruns")
    if done is not None:
        extra = done.meta["extra"]
        return MTVResult(done["means"], done["locations"], done["logits"], extra.get("rewards", []), True,
                         extra.get("stats", {}))

    means = scan["many_mean"]  # [L, H, D]
    n_layers, n_heads, _ = means.shape
    every = all_locations(n_layers, n_heads)
    flat_means = means.reshape(n_layers * n_heads, -1)
    flat_zero = scan["zero_mean"].reshape(n_layers * n_heads, -1)
    task = task_data.task
    pool = list(task_data.support)
    random.Random(config.seed).shuffle(pool)
    holdout, train = pool[: config.holdout], pool[config.holdout :] or pool

    logits = torch.full((n_layers * n_heads,), config.init_logit, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=config.lr)
    meter = Meter()
    rewards_log: list[float] = []

    def candidates(masks: torch.Tensor):
        return make_intervention(every, flat_means, flat_zero, config.insert, row_mask=masks.bool())

    with progress(quiet) as bar:
        job = bar.add_task("mtv search", total=config.iterations)
        for iteration in range(config.iterations):
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + iteration)
            query = random.Random(config.seed * 1_000_003 + iteration).choice(train)
            masks = sample_masks(logits, config.samples, generator)
            rewards = dist.gather_shares(config.samples, lambda a, b: candidate_rewards(  # this rank's samples
                adapter, task, [query], candidates(masks[a:b]), b - a, "first-token", meter, batch_size))
            bernoulli_step(logits, optimizer, masks, rewards)
            rewards_log.append(float(rewards.mean()))
            bar.advance(job)

    draws = sample_masks(logits, config.best_of, torch.Generator().manual_seed(config.seed + 7))
    scored = dist.gather_shares(config.best_of, lambda a, b: candidate_rewards(
        adapter, task, holdout or train[:1], candidates(draws[a:b]), b - a, "first-token", meter, batch_size))
    best = draws[int(scored.argmax())].bool()
    locations = every[best]
    stats = dist.merge_stats(dist.all_gather_object(meter.summary()))
    stats["scan_forwards_shared"] = int(scan.meta["extra"].get("n_queries", 0))
    result = MTVResult(means, locations, logits.detach().view(n_layers, n_heads), rewards_log, False, stats)
    if not dist.is_main():  # rank 0 writes; every rank holds the same result
        dist.barrier()
        return result
    save_artifact(
        path,
        "mtv",
        {"means": means, "locations": locations, "logits": logits.detach().view(n_layers, n_heads),
         "zero_mean": scan["zero_mean"]},
        model=scan.meta["model"],
        fingerprint=scan.fingerprint,
        settings=settings,
        data=scan.meta.get("data"),
        seed=config.seed,
        extra={"stats": stats, "rewards": rewards_log},
    )
    say(f"mtv: {config.iterations} iterations, {len(locations)} heads selected -> {path}", quiet)
    dist.barrier()  # the artifact exists before any rank reads it
    return result


def mtv_intervention(artifact: Artifact, mode: str = "replace"):
    """The MTV vectors to insert: the mean activations at the selected heads."""
    locations = artifact["locations"]
    means = artifact["means"][locations[:, 0], locations[:, 1]]
    zero = artifact["zero_mean"][locations[:, 0], locations[:, 1]]
    return make_intervention(locations, means, zero, mode)  # type: ignore[arg-type]
