"""Stage 3, the REINFORCE search: one bank vector per location (docs/method.md §4).

Policy: logits theta [K, M] (init 0; empty clusters never drawn), one categorical per
location, trained by the shared loop (``reinforce``): each iteration draws a batch of
zero-shot support queries and S samples (one cluster per location), runs every query
with every sample's vectors inserted, and rewards each sample with minus the
cross-entropy of the first answer token (or the answer's log-likelihood). Final
vectors: the per-location argmax of theta, or the best of N draws on a held-out
support slice. The search checkpoints its state and resumes from it when rerun.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from stvcli import distributed as dist
from stvcli.config import ModelOptions
from stvcli.console import say
from stvcli.data.loading import load_task_data
from stvcli.data.options import DataOptions
from stvcli.errors import StvError
from stvcli.stages.common import Meter, get_adapter
from stvcli.stages.config import SearchConfig
from stvcli.stages.reinforce import CandidateScorer, CategoricalPolicy, Checkpoint, best_draw, reinforce, split_support
from stvcli.vectors import make_intervention
from stvcli.workspace import Provenance, Workspace


@dataclass
class SearchResult:
    vectors: torch.Tensor  # [K, D]
    choices: torch.Tensor  # [K]
    logits: torch.Tensor  # [K, M]
    rewards: list[float]  # mean reward per iteration
    reused: bool
    stats: dict[str, Any]


def gather_vectors(bank: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
    """bank [K, M, D], choices [S, K] -> [S, K, D]."""
    return bank[torch.arange(bank.shape[0])[None, :], choices]


def initial_logits(counts: torch.Tensor) -> torch.Tensor:
    """Uniform over each location's non-empty clusters: [K, M] zeros, -inf where count is 0."""
    logits = torch.zeros(counts.shape)
    logits[counts == 0] = float("-inf")
    return logits


def run_search(config: SearchConfig) -> SearchResult:
    """Run (or reuse, or resume) the search and write ``vectors``; rank 0 writes."""
    dist.init()
    workspace = Workspace(config.workspace, config.force, config.quiet)
    start = workspace.begin("vectors", config.settings(), upstream="bank")
    bank_artifact, settings, done = start.upstream, start.settings, start.done
    if done is not None:
        extra = done.meta["extra"]
        return SearchResult(done["vectors"], done["choices"], done["logits"], extra.get("rewards", []), True,
                            extra.get("stats", {}))

    bank, locations, baseline = bank_artifact["bank"], bank_artifact["locations"], bank_artifact["baseline"]
    adapter = get_adapter(ModelOptions(**bank_artifact.settings["model"]))
    task_data = load_task_data(DataOptions(**bank_artifact.settings["data"]))
    holdout, train = split_support(task_data.support, config.seed,
                                   config.holdout if config.select == "best-of" else 0)
    if len(train) < config.queries_per_iteration:
        raise StvError(f"only {len(train)} support items remain for the search; lower --holdout")

    meter = Meter()
    score = CandidateScorer(
        adapter, task_data.task,
        lambda choices: make_intervention(locations, gather_vectors(bank, choices), baseline, config.insert),
        config.reward, meter, config.batch_size,
    )
    policy = CategoricalPolicy(initial_logits(bank_artifact["counts"]))
    provenance = Provenance.of(bank_artifact)
    rewards = reinforce(
        policy, score, train, iterations=config.iterations, samples=config.samples,
        queries_per_iteration=config.queries_per_iteration, lr=config.lr, seed=config.seed, label="search",
        checkpoint=Checkpoint(workspace, "search-state", settings, provenance, config.checkpoint_every),
        quiet=config.quiet,
    )
    final = policy.greedy()
    if config.select == "best-of" and holdout:
        draws = [final] + [policy.sample(1, torch.Generator().manual_seed(config.seed + i))[0]
                           for i in range(config.best_of - 1)]
        final = draws[best_draw(torch.stack(draws), holdout, score)]
    vectors = gather_vectors(bank, final[None])[0]
    logits = policy.logits.detach()
    stats = dist.merge_stats(dist.all_gather_object(meter.summary()))
    result = SearchResult(vectors, final, logits, rewards, False, stats)
    if dist.is_main():  # every rank holds the same result; rank 0 writes it
        workspace.save("vectors", {"vectors": vectors, "locations": locations, "logits": logits, "choices": final,
                                   "baseline": baseline},
                       settings=settings, provenance=provenance, seed=config.seed,
                       extra={"stats": stats, "rewards": rewards})
        workspace.discard("search-state")
        say(f"search: {config.iterations} iterations x {config.samples} samples -> {workspace.path('vectors')}",
            config.quiet)
    dist.barrier()  # the artifact exists before any rank moves on
    return result
