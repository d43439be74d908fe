"""Tasks: prompt templates, answer extraction and metrics, plus the task registry.

Prompt layout (all tasks): optional instruction, then one block per demonstration,
then the query block, joined by a single newline ("\\n"), nothing after the query. A
demonstration block is the template with its answer; the query block is the template
cut just before `` {answer}``, so every prompt ends exactly at ``Answer:`` (or the
template's own last word) and ``target(item)`` is ``" " + answer``.

Episode tasks (MTV's classification format): every prompt holds the query episode's
own support examples (A's, then B's) before the query line; ``shots`` = the number of
complete prior episodes (support lines and answered query line) before that.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stvcli.data.types import Item, Task, TaskKind, load_image
from stvcli.errors import DataError
from stvcli.metrics import VQA_VARIANTS, cut_answer, cut_is_final, exact_match, vqa_accuracy
from stvcli.prompt import IMAGE_PLACEHOLDER, Prompt
from stvcli.registry import Registry

SEPARATOR = "\n"
ANSWER_SLOT = " {answer}"
_TEMPLATE_FIELDS = {"image", "question", "answer"}
METRICS = ("vqa_accuracy", "accuracy")

VIZWIZ_INSTRUCTION = (
    "First carefully understand the given examples. Then use the given image and answer the question "
    "in the same way as the examples. If the question can not be answered, respond unanswerable."
)
EPISODE_QUESTION = (
    "What is the type of {subject} in the image? {options}\n"
    "Answer with the option's letter from the given choice directly. Answer:"
)


@dataclass(frozen=True)
class TemplateTask(Task):
    """A task whose blocks come from one template with ``{image}``, ``{question}``, ``{answer}``.

    ``{image}`` becomes one ``<image>`` per item image (nothing for text items);
    ``{question}`` is the item's question, or ``question`` when the item has none.
    The template must end with ``" {answer}"``.
    """

    name: str
    kind: TaskKind = "vqa"
    metric: str = "vqa_accuracy"
    template: str = "{image}{question} Answer: {answer}"
    instruction: str | None = None
    question: str = ""
    default_shots: int = 4
    max_new_tokens: int = 20
    variant: str = "standard"  # VQA accuracy variant (metrics.vqa_accuracy)
    description: str = ""
    default_data: str | None = None

    def __post_init__(self) -> None:
        if not self.template.endswith(ANSWER_SLOT):
            raise ValueError(f"task {self.name}: template must end with ' {{answer}}', got {self.template!r}")
        names = {f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None}
        if not names <= _TEMPLATE_FIELDS:
            raise ValueError(f"task {self.name}: template fields must be among {sorted(_TEMPLATE_FIELDS)}, got {sorted(names)}")
        if self.metric not in METRICS:
            raise ValueError(f"task {self.name}: metric must be one of {METRICS}")
        if self.variant not in VQA_VARIANTS:
            raise ValueError(f"task {self.name}: variant must be one of {VQA_VARIANTS}")

    def _fill(self, template: str, item: Item, answer: str = "") -> str:
        question = item.question if item.question is not None else self.question
        return template.format(image=IMAGE_PLACEHOLDER * len(item.images), question=question, answer=answer)

    def demonstration_text(self, item: Item) -> str:
        return self._fill(self.template, item, item.answer)

    def query_text(self, item: Item) -> str:
        return self._fill(self.template[: -len(ANSWER_SLOT)], item)

    def build_prompt(self, query: Item, demonstrations: Sequence[Item] = ()) -> Prompt:
        blocks = [self.instruction] if self.instruction else []
        blocks += [self.demonstration_text(item) for item in demonstrations]
        blocks.append(self.query_text(query))
        images = tuple(load_image(ref) for item in (*demonstrations, query) for ref in item.images)
        return Prompt(SEPARATOR.join(blocks), images)

    def complete_target(self, item: Item) -> str:
        """`` answer`` and the separator that ends every demonstration's answer (extraction
        cuts there too)."""
        return self.target(item) + SEPARATOR

    def extract(self, generation: str) -> str:
        return cut_answer(generation)

    def answer_final(self, generation: str) -> bool:
        return cut_is_final(generation)

    def score(self, prediction: str, item: Item) -> float:
        if self.metric == "vqa_accuracy":
            return vqa_accuracy(prediction, item.answers, self.variant)
        return exact_match(prediction, item.answer)


@dataclass(frozen=True)
class VQATask(TemplateTask):
    """Open VQA: ``<image>{q} Answer: {a}``, scored with VQA accuracy."""

    kind: TaskKind = "vqa"
    metric: str = "vqa_accuracy"


@dataclass(frozen=True)
class ClassificationTask(TemplateTask):
    """Many-shot classification with class names as answers, scored by exact match."""

    kind: TaskKind = "classification"
    metric: str = "accuracy"
    question: str = "What is in the image?"


@dataclass(frozen=True)
class TextTask(TemplateTask):
    """Text-only pairs for text LLMs (``x: y`` lines by default), scored by exact match."""

    kind: TaskKind = "text"
    metric: str = "accuracy"
    template: str = "{question}: {answer}"


@dataclass(frozen=True)
class EpisodeTask(Task):
    """MTV's N-way (2) k-shot (1) classification episodes with option letters.

    Line of one image: ``<image>What is the type of {subject} in the image? A.x B.y``
    newline ``Answer with the option's letter from the given choice directly. Answer:``
    (plus `` A`` etc. on support lines and answered demonstrations).
    """

    name: str
    subject: str = "object"
    ways: int = 2
    support_per_class: int = 1
    default_shots: int = 4
    max_new_tokens: int = 20
    description: str = ""
    default_data: str | None = None
    question_template: str = EPISODE_QUESTION
    kind: TaskKind = field(default="episode", init=False)
    metric: str = field(default="accuracy", init=False)

    def __post_init__(self) -> None:
        if not 2 <= self.ways <= 26 or self.support_per_class < 1:
            raise ValueError(f"task {self.name}: ways must be 2..26 and support_per_class >= 1")

    def _line(self, episode: Item) -> str:
        options = " ".join(f"{string.ascii_uppercase[i]}.{name}" for i, name in enumerate(episode.fields["choices"]))
        return IMAGE_PLACEHOLDER + self.question_template.format(subject=self.subject, options=options)

    def _blocks(self, episode: Item, answered: bool) -> tuple[list[str], list[Any]]:
        line = self._line(episode)
        lines = [f"{line} {letter}" for _, letter in episode.fields["support"]]
        lines.append(f"{line} {episode.answer}" if answered else line)
        refs = [ref for ref, _ in episode.fields["support"]] + list(episode.images)
        return lines, refs

    def build_prompt(self, query: Item, demonstrations: Sequence[Item] = ()) -> Prompt:
        lines: list[str] = []
        refs: list[Any] = []
        for episode, answered in [*((d, True) for d in demonstrations), (query, False)]:
            more_lines, more_refs = self._blocks(episode, answered)
            lines += more_lines
            refs += more_refs
        return Prompt(SEPARATOR.join(lines), tuple(load_image(ref) for ref in refs))

    def extract(self, generation: str) -> str:
        return cut_answer(generation)

    def answer_final(self, generation: str) -> bool:
        return cut_is_final(generation)

    def score(self, prediction: str, item: Item) -> float:
        return exact_match(prediction, item.answer)


# ----------------------------------------------------------------------------- registry

TASKS: Registry[Task] = Registry("task", error=DataError, hint="stv tasks lists them")


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add a task under ``task.name`` (``stv tasks`` lists it; ``--task`` selects it)."""
    return TASKS.register(task.name, task, replace=replace)


def get_task(name: str) -> Task:
    return TASKS.get(name)


def list_tasks() -> list[dict[str, Any]]:
    """name, kind, metric, default shots, default data and description of every task."""
    return [
        {
            "name": task.name,
            "kind": task.kind,
            "metric": task.metric,
            "default_shots": task.default_shots,
            "default_data": getattr(task, "default_data", None),
            "description": getattr(task, "description", ""),
        }
        for _, task in sorted(TASKS.items())
    ]


def _register_builtins() -> None:
    builtins: list[Task] = [
        VQATask(
            name="vizwiz",
            instruction=VIZWIZ_INSTRUCTION,
            default_shots=16,
            default_data="lmms-lab/VizWiz-VQA",
            description="VizWiz open VQA (10 answers, 'unanswerable' allowed) with MTV's instruction",
        ),
        VQATask(
            name="okvqa",
            default_shots=4,
            default_data="lmms-lab/OK-VQA",
            description="OK-VQA open VQA needing outside knowledge (COCO-2014 images)",
        ),
        EpisodeTask(
            name="flowers",
            subject="flower",
            default_data="dpdl-benchmark/oxford_flowers102",
            description="Oxford Flowers-102 as MTV's 2-way 1-shot episodes",
        ),
        EpisodeTask(
            name="cub",
            subject="bird",
            default_data="bentrevett/caltech-ucsd-birds-200-2011",
            description="CUB-200-2011 birds as MTV's 2-way 1-shot episodes",
        ),
        EpisodeTask(
            name="dtd",
            subject="texture",
            default_data="tanganke/dtd",
            description="Describable Textures (47 classes) as MTV's 2-way 1-shot episodes",
        ),
        VQATask(name="vqa", description="any VQA data: '<image>{question} Answer: {answer}', VQA accuracy"),
        ClassificationTask(
            name="classification", description="any labelled images, class names as answers (many-shot), exact match"
        ),
        EpisodeTask(name="episode", description="any labelled images as 2-way 1-shot episodes (MTV's format)"),
        TextTask(name="text", description="text-only pairs for text LLMs: '{question}: {answer}' lines, exact match"),
    ]
    for task in builtins:
        register_task(task)


_register_builtins()
