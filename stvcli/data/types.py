"""The data contract every stage uses: items, tasks, and a task's support/eval split.

A task turns items into neutral prompts (``stvcli.prompt.Prompt``) and scores
generations; the pipeline never looks inside an item.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

from stvcli.prompt import Prompt

TaskKind = Literal["vqa", "classification", "episode", "text"]
ImageRef = Any  # a PIL image, or a zero-argument callable returning one (lazy loading)


@dataclass(frozen=True)
class Item:
    """One example. ``answers`` are the gold answers (10 for VQA, 1 for classification).

    ``images`` holds the item's own images (PIL or lazy loaders); ``fields`` holds
    anything task-specific (episode support images and labels, option letters, ...).
    """

    uid: str
    question: str | None = None
    answers: tuple[str, ...] = ()
    images: tuple[ImageRef, ...] = ()
    fields: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def answer(self) -> str:
        """The answer used as a demonstration's answer and as the scoring target."""
        if "target" in self.fields:
            return str(self.fields["target"])
        return self.answers[0]


def load_image(ref: ImageRef) -> Image.Image:
    image = ref() if callable(ref) else ref
    return image.convert("RGB") if image.mode != "RGB" else image


class Task(ABC):
    """A task = kind + prompt template + answer extraction + metric."""

    name: str
    kind: TaskKind
    metric: str  # "vqa_accuracy" or "accuracy"
    default_shots: int = 4
    max_new_tokens: int = 20

    @abstractmethod
    def build_prompt(self, query: Item, demonstrations: Sequence[Item] = ()) -> Prompt:
        """Instruction + demonstrations (with answers) + the query, ending where the answer starts."""

    def target(self, item: Item) -> str:
        """The continuation whose log-likelihood the search rewards, e.g. ``" red"``."""
        return " " + item.answer

    def complete_target(self, item: Item) -> str:
        """``target`` followed by what ends an answer in this task's prompts (nothing
        unless the task says), so a likelihood of it also rewards stopping there."""
        return self.target(item)

    @abstractmethod
    def extract(self, generation: str) -> str:
        """The answer part of a raw greedy generation (cut at '.', newline, ...)."""

    def answer_final(self, generation: str) -> bool:
        """Whether no continuation of ``generation`` can change ``extract``'s answer
        (generation may stop there). False unless a task knows better."""
        return False

    @abstractmethod
    def score(self, prediction: str, item: Item) -> float:
        """Score in [0, 1] of an extracted prediction."""

    def sample_demonstrations(
        self, pool: Sequence[Item], k: int, rng: random.Random, exclude: Item | None = None
    ) -> list[Item]:
        """k demonstrations drawn without replacement from ``pool`` (never ``exclude``)."""
        candidates = [item for item in pool if exclude is None or item.uid != exclude.uid]
        if k > len(candidates):
            from stvcli.errors import DataError

            raise DataError(f"the support pool has {len(candidates)} items; {k} demonstrations need more (fewer shots: --shots, or N in icl:N)")
        return rng.sample(candidates, k)


@dataclass
class TaskData:
    """A task with its support pool (demonstrations, scan, bank, search) and eval items.

    The two are disjoint by construction (enforced by the loader).
    """

    task: Task
    support: list[Item]
    evaluation: list[Item]
    source: dict[str, Any] = field(default_factory=dict)  # recorded in artifact metadata
