"""Context budget: how many demonstrations fit a model's context, without truncating.

Works on any ``count_tokens(prompt) -> int`` (the lead wires the model adapter in:
``adapter.encode([prompt])["attention_mask"].sum()``), so it needs no model itself.

Estimate: the longest zero-shot prompt among a few probe queries from the support pool,
plus ``shots`` times the mean cost of one demonstration (measured on prompts with a few
real demonstrations), plus the task's ``max_new_tokens`` for the answer.

``check_prompts_fit`` is the stages' check before their first forward (scan, bank,
search, MTV, eval via ``stvcli.stages.common.check_inputs``): exact token counts of every
query prompt and of one worst-case many-shot prompt, with a batched counter
(``ModelAdapter.token_counts``).
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


# ----------------------------------------------------------------------------- stage prompts

BatchCounter = Callable[[Sequence[Prompt]], list[int]]


def _with_target(task: Task, item: Item, prompt: Prompt) -> Prompt:
    return Prompt(prompt.text + task.target(item), prompt.images)


def _count_each(count: BatchCounter, items: Sequence[Item], make: Callable[[Item], Prompt], chunk: int = 16) -> list[int]:
    """``count`` of each item's prompt, built a chunk at a time (decoded images are not all held at once)."""
    counts: list[int] = []
    for start in range(0, len(items), chunk):
        counts += count([make(item) for item in items[start : start + chunk]])
    return counts


def _demonstration_size(item: Item) -> tuple[int, int]:
    """A cheap proxy for a demonstration's token cost: (images, characters of text)."""
    images = len(item.images) + len(item.fields.get("support", ()))
    answer = str(item.fields.get("target", item.answers[0] if item.answers else ""))
    text = len(item.question or "") + len(answer) + sum(len(str(c)) for c in item.fields.get("choices", ()))
    return images, text


def _too_long(stage: str, item: Item, tokens: int, context_length: int, what: str, others: int) -> DataError:
    detail = f"a {len(item.question)}-character question" if item.question else f"{len(item.images)} image(s)"
    more = f" (and {others} more items are too long)" if others else ""
    return DataError(
        f"{stage}: item {item.uid}'s {what} is {tokens} tokens ({detail}); the model takes {context_length}{more}; "
        "shorten or remove it in the data, or pass a --model with a longer context"
    )


def check_prompts_fit(
    count: BatchCounter,
    task: Task,
    queries: Sequence[Item],
    pool: Sequence[Item],
    shots: int,
    context_length: int,
    *,
    stage: str,
    answers: bool = False,
    reserve: int = 0,
    fix: str = "use --shots {n} or fewer",
) -> int:
    """Raise a DataError, before a stage's first forward, when a prompt it builds cannot fit.

    ``queries`` are the stage's queries; a many-shot stage (``shots`` > 0) draws their
    demonstrations from ``pool``. With ``answers`` each prompt is counted with its target
    appended (stages that score the answer); ``reserve`` more tokens must stay free (the
    generated answer). ``count`` is the model's batched token counter (processor only).

    - Zero-shot: every query's prompt is counted exactly (one processor pass, cheaper
      than the stage's own encoding of the same prompts); the longest over-long one is
      named ("item X's zero-shot prompt is N tokens ...; the model takes M").
    - Many-shot: one worst-case prompt, the longest query with the ``shots`` longest
      demonstrations of the pool, counted exactly, bounds every draw. The candidates are
      the pool's ``2 * shots + 16`` largest items by (images, characters), each counted
      exactly as a demonstration costs (its prompt with its answer; an over-long one is
      named too), so the bound holds unless an item's tokens are far from what its text
      length and image count suggest (e.g. one far larger image under Qwen2-VL's dynamic
      resolution) or tokens merge across block boundaries (a token or two). Failing,
      the error names the largest shot count whose worst case fits (``fix``, formatted
      with ``n``), found by bisection (log2 counts).

    Returns the tokens of the longest prompt checked, ``reserve`` included.
    """
    unique = list({id(q): q for q in queries}.values())
    if not unique:
        return 0
    what = "prompt with its answer" if answers else "zero-shot prompt"
    if reserve:
        what += f" plus {reserve} for generation"

    def prompt(query: Item, demonstrations: Sequence[Item] = ()) -> Prompt:
        built = task.build_prompt(query, demonstrations)
        return _with_target(task, query, built) if answers else built

    def needs(prompts: list[Prompt]) -> list[int]:
        return [n + reserve for n in count(prompts)]

    zero = _count_each(needs, unique, prompt)
    longest = max(range(len(unique)), key=zero.__getitem__)
    if zero[longest] > context_length:
        others = sum(n > context_length for n in zero) - 1
        raise _too_long(stage, unique[longest], zero[longest], context_length, what, others)
    if shots <= 0:
        return zero[longest]

    query = unique[longest]
    ranked = sorted((item for item in pool if item.uid != query.uid), key=_demonstration_size, reverse=True)
    ranked = ranked[: 2 * shots + 16]
    sizes = _count_each(count, ranked, lambda item: _with_target(task, item, task.build_prompt(item)))  # as a demonstration
    over = [i for i, n in enumerate(sizes) if n > context_length]
    if over:
        worst = max(over, key=sizes.__getitem__)
        raise _too_long(stage, ranked[worst], sizes[worst], context_length, "prompt with its answer", len(over) - 1)
    order = sorted(range(len(ranked)), key=sizes.__getitem__, reverse=True)  # stable: ties keep the proxy's order
    demonstrations = [ranked[i] for i in order[:shots]]

    def with_shots(n: int) -> int:
        return needs([prompt(query, demonstrations[:n])])[0]

    need = with_shots(len(demonstrations))
    if need <= context_length:
        return need
    fits, fails = 0, len(demonstrations)  # with_shots(0) is the query's own, already checked
    while fails - fits > 1:
        middle = (fits + fails) // 2
        if with_shots(middle) <= context_length:
            fits = middle
        else:
            fails = middle
    if fits == 0:
        raise DataError(
            f"{stage}: not even one demonstration fits: the longest query (item {query.uid}) with the longest "
            f"demonstration (item {demonstrations[0].uid}) needs {with_shots(1)} tokens but the model takes "
            f"{context_length}; shorten or remove long items in the data, or pass a --model with a longer context"
        )
    raise DataError(
        f"{stage}: {shots} shots can need {need} tokens (the longest query, item {query.uid}, with the "
        f"{len(demonstrations)} longest demonstrations) but the model takes {context_length}; {fix.format(n=fits)}"
    )
