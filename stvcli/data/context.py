"""Context budget: how many demonstrations fit a model's context, without truncating.

Works on any ``count_tokens(prompt) -> int`` (the lead wires the model adapter in:
``adapter.encode([prompt])["attention_mask"].sum()``), so it needs no model itself.

Estimate: the longest zero-shot prompt among a few probe queries from the support pool,
plus ``shots`` times the mean cost of one demonstration (measured on prompts with a few
real demonstrations), plus the task's ``max_new_tokens`` for the answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stvcli.data.sampling import seeded_rng
from stvcli.data.types import Item, Task
from stvcli.errors import DataError
from stvcli.prompt import Prompt

TokenCounter = Callable[[Prompt], int]


@dataclass(frozen=True)
class ContextCost:
    zero_shot: int  # tokens of the longest zero-shot probe prompt
    per_shot: float  # mean tokens one demonstration adds
    answer: int  # tokens reserved for the generated answer

    def tokens(self, shots: int) -> int:
        return self.zero_shot + math.ceil(shots * self.per_shot) + self.answer


def measure_cost(
    count_tokens: TokenCounter, task: Task, support: Sequence[Item], seed: int = 0, probes: int = 4, probe_shots: int = 4
) -> ContextCost:
    """Measure zero-shot and per-demonstration token costs on a seeded sample of the support pool."""
    if not support:
        raise DataError("the support pool is empty; give support data with --data")
    rng = seeded_rng(seed, "context")
    queries = rng.sample(list(support), min(probes, len(support)))
    zero = [count_tokens(task.build_prompt(query)) for query in queries]
    per_shot: list[float] = []
    for query in queries:
        others = [item for item in support if item.uid != query.uid]
        k = min(probe_shots, len(others))
        if k == 0:
            continue
        with_shots = count_tokens(task.build_prompt(query, rng.sample(others, k)))
        per_shot.append((with_shots - count_tokens(task.build_prompt(query))) / k)
    mean_shot = max(0.0, sum(per_shot) / len(per_shot)) if per_shot else 0.0
    return ContextCost(max(zero), mean_shot, task.max_new_tokens)


def shots_that_fit(
    count_tokens: TokenCounter, task: Task, support: Sequence[Item], context_length: int, seed: int = 0
) -> int:
    """The most demonstrations whose prompt plus answer fits ``context_length`` (0 if even zero-shot does not)."""
    cost = measure_cost(count_tokens, task, support, seed)
    available = len(support) - 1
    if cost.tokens(0) > context_length:
        return 0
    if cost.per_shot <= 0:
        return available
    return max(0, min(available, math.floor((context_length - cost.tokens(0)) / cost.per_shot)))


def check_icl_fits(
    count_tokens: TokenCounter,
    task: Task,
    support: Sequence[Item],
    shots: int,
    context_length: int,
    seed: int = 0,
    label: str | None = None,
) -> int:
    """Raise a DataError naming the largest shot count that fits, instead of truncating.

    Returns the estimated token count of a ``shots``-shot prompt plus its answer.
    """
    cost = measure_cost(count_tokens, task, support, seed)
    needed = cost.tokens(shots)
    if needed <= context_length:
        return needed
    name = label or f"icl:{shots}"
    if cost.tokens(0) > context_length:
        raise DataError(
            f"{name}: even a zero-shot prompt needs ~{cost.tokens(0)} tokens but the model holds {context_length}; "
            "use a model with a longer context"
        )
    fit = shots_that_fit(count_tokens, task, support, context_length, seed)
    raise DataError(f"{name} needs ~{needed} tokens but the model holds {context_length}; use at most {fit} shots")
