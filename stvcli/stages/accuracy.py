"""Generated answers scored by the task's own metric: what eval reports per method, and
what ``search --auto`` judges its candidate searches by on the support hold-out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stvcli.data.types import Item, Task
from stvcli.engine import Intervention
from stvcli.models.base import ModelAdapter
from stvcli.scoring import generate
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

    generations = run_batched(run, list(prompts), batch_size, on_batch)
    predictions = [task.extract(generation) for generation in generations]
    scores = [float(task.score(prediction, item)) for prediction, item in zip(predictions, items, strict=True)]
    return Generated(generations, predictions, scores)
