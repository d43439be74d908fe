"""REINFORCE pieces shared by STV's search and MTV's location search."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from stvcli.data.types import Item, Task
from stvcli.engine import Intervention
from stvcli.models.base import ModelAdapter
from stvcli.prefix import can_share_prefix
from stvcli.scoring import answer_scores, shared_answer_scores
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
    every query is run with every candidate, queries x candidates rows in batches: over
    each query's shared prefix where the family allows it (``stvcli.prefix``), else as
    full forwards (the straightforward path, also under ``prefix.straightforward()``).
    Reward: minus the cross-entropy of the first answer token, or the answer's total
    log-likelihood.
    """
    prompts = [task.build_prompt(q) for q in queries]
    targets = [task.target(q) for q in queries]
    if can_share_prefix(adapter):
        # Each query's prompt runs once up to its last token (KV cache); all candidates x
        # queries then run as one batched step over it (stvcli.prefix). Exact.
        shared = shared_answer_scores(adapter, prompts, targets, candidates, n_candidates,
                                      full_answer=reward == "answer", batch_size=batch_size, timer=meter.forward)
        if shared is not None:
            values = shared.first_token if reward == "first-token" else shared.total
            return values.view(len(queries), n_candidates).mean(0)
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
