"""REINFORCE pieces shared by STV's search and MTV's location search."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from stvcli.data.types import Item, Task
from stvcli.engine import Intervention
from stvcli.models.base import ModelAdapter
from stvcli.scoring import answer_scores
from stvcli.stages.common import Meter, run_batched

Reward = Literal["first-token", "answer"]


def advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(r - mean(r)) / (std(r) + 1e-3) over the samples. rewards: [S] -> [S]."""
    return (rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-3)


def candidate_rewards(
    adapter: ModelAdapter,
    task: Task,
    queries: Sequence[Item],
    candidates: Intervention,
    n_candidates: int,
    reward: Reward,
    meter: Meter,
    batch_size: int | None,
) -> torch.Tensor:
    """Reward of each candidate, averaged over the zero-shot ``queries``: [S].

    ``candidates`` holds per-candidate rows (vectors [S, K, D] and/or row_mask [S, K]);
    every query is run with every candidate, queries x candidates rows in batches.
    Reward: minus the cross-entropy of the first answer token, or the answer's total
    log-likelihood.
    """
    prompts = [task.build_prompt(q) for q in queries]
    targets = [task.target(q) for q in queries]
    rows = [(qi, si) for qi in range(len(queries)) for si in range(n_candidates)]

    def run(chunk):
        candidate_index = torch.tensor([si for _, si in chunk])
        vectors = candidates.vectors[candidate_index] if candidates.vectors.ndim == 3 else candidates.vectors
        mask = None if candidates.row_mask is None else candidates.row_mask[candidate_index]
        intervention = Intervention(candidates.locations, vectors, candidates.mode, mask)
        with meter.forward(len(chunk)):
            scores = answer_scores(
                adapter, [prompts[qi] for qi, _ in chunk], [targets[qi] for qi, _ in chunk], intervention
            )
        values = scores.first_token if reward == "first-token" else scores.total
        return values.tolist()

    values = torch.tensor(run_batched(run, rows, batch_size))
    return values.view(len(queries), n_candidates).mean(0)
