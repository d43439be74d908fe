"""Generated answers scored by the task's own metric: what eval reports per method, and
what ``search --auto`` judges its candidate searches by on the support hold-out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stvcli.data.types import Item, Task
from stvcli.engine import Intervention
from stvcli.models.base import ModelAdapter
from stvcli.scoring import generate, generate_each
from stvcli.stages.common import Meter, run_batched


@dataclass(frozen=True)
class Generated:
    """Per item: the raw generation, the answer the task extracts from it, its score."""

    generations: list[str]
    predictions: list[str]
    scores: list[float]


def generate_and_score(adapter: ModelAdapter, task: Task, items: Sequence[Item], prompts: Sequence[str],
                       intervention: Intervention | None, meter: Meter, batch_size: int | None,
                       on_batch: Callable[[int], None] | None = None) -> Generated:
    """Greedy generations for ``prompts`` (one per item, vectors written by
    ``intervention``), each scored against its item by the task's metric."""

    def run(chunk):
        with meter.forward(len(chunk)):
            return generate(adapter, chunk, task.max_new_tokens, intervention, task.answer_final)

    return scored(task, items, run_batched(run, list(prompts), batch_size, on_batch))


def generate_and_score_each(adapter: ModelAdapter, task: Task, items: Sequence[Item], prompts: Sequence[str],
                            interventions: Sequence[Intervention | None], meters: Sequence[Meter],
                            batch_size: int | None, on_batch: Callable[[int], None] | None = None) -> list[Generated]:
    """``generate_and_score`` of every intervention on the same ``prompts``: each batch is
    encoded once and its prompt prefix computed once (``scoring.generate_each``); the
    generations equal one ``generate`` per intervention. ``meters[i]`` counts
    intervention i's generations and model time."""

    def run(chunk):
        texts = generate_each(adapter, chunk, task.max_new_tokens, interventions, task.answer_final,
                              timer=lambda i: meters[i].forward(len(chunk)))
        return list(zip(*texts, strict=True))  # per row, one generation per intervention

    rows = run_batched(run, list(prompts), batch_size, on_batch)
    return [scored(task, items, [row[index] for row in rows]) for index in range(len(interventions))]


def scored(task: Task, items: Sequence[Item], generations: list[str]) -> Generated:
    """Each generation's extracted answer, scored against its own item by the task's metric."""
    predictions = [task.extract(generation) for generation in generations]
    scores = [float(task.score(prediction, item)) for prediction, item in zip(predictions, items, strict=True)]
    return Generated(generations, predictions, scores)
