"""The shapes tasks (``shapes-color``, ``shapes-fruit``, ``shapes-vqa``, ...) and the
``shapes:`` data source, registered with the generic task and source registries.

``register`` adds everything; it runs as the ``stvcli.plugins`` entry point before the
first task or source lookup, so no core module imports this one. Prompts are plain
text, one block per line, no chat template and no instruction for the naming tasks:

    <image> Answer: red
    <image> Answer: blue
    <image> Answer:

``--data shapes:NAME`` accepts a variant (``color``, ``fruit``, ``vqa``, ``episode``,
...) or a task name (``shapes-color``); support and evaluation items are generated in
memory from disjoint random streams, ``--seed`` picks the world.
"""

from __future__ import annotations

from collections.abc import Sequence

from stvcli.data.options import DataOptions
from stvcli.data.sources import register_source, source_prefixes
from stvcli.data.tasks import VIZWIZ_INSTRUCTION, ClassificationTask, EpisodeTask, VQATask, get_task, register_task
from stvcli.data.types import Item, Task, TaskKind
from stvcli.errors import DataError
from stvcli.shapes.variants import EPISODE_SUBJECT, VARIANTS, episode_items, naming_items, vqa_items

PREFIX = "shapes"
SUPPORT_ITEMS = 1024  # generated per call unless --support-limit asks for more
EVAL_ITEMS = 200
NAMING_TEMPLATE = "{image} Answer: {answer}"

_DESCRIPTIONS = {
    "color": "shapes world: name the colour (demonstrations alone say which attribute)",
    "shape": "shapes world: name the shape",
    "size": "shapes world: small or big",
    "position": "shapes world: top, bottom, left or right",
    "count": "shapes world: one, two or three shapes",
    "color-swap": "shapes world: colours renamed by a fixed permutation (red -> green), learnt from demonstrations",
    "fruit": "shapes world: colours named by arbitrary fruit words (red -> lemon), learnt from demonstrations",
    "fruit-noisy": "shapes world: like shapes-fruit with a quarter of the support labels wrong",
    "animal": "shapes world: shapes named by arbitrary animal words (circle -> dog)",
    "shape-noisy": "shapes world: name the shape; 40% of the support demonstrations name the colour instead",
    "position-noisy": "shapes world: name the position; 40% of the support demonstrations name the colour instead",
}


def shapes_tasks() -> list[Task]:
    """Every shapes task (not registered)."""
    tasks: list[Task] = [
        ClassificationTask(
            name=f"shapes-{name}",
            template=NAMING_TEMPLATE,
            question="",
            default_shots=16,
            # Every label is ONE token (checked by the build), so the answer is the first
            # generated token. Longer generations let a vector inserted at every decode
            # step repeat the label ("square square square"), which MTV does: measured
            # 0% with 4 new tokens where its first token was right (docs/shapes.md).
            max_new_tokens=1,
            default_data=f"{PREFIX}:{name}",
            description=_DESCRIPTIONS[name],
        )
        for name in VARIANTS
    ]
    tasks.append(
        VQATask(
            name="shapes-vqa",
            instruction=VIZWIZ_INSTRUCTION,
            default_shots=16,
            max_new_tokens=8,
            default_data=f"{PREFIX}:vqa",
            description="shapes world: VizWiz-like VQA, 10 answers each, 'unanswerable' for empty images",
        )
    )
    tasks.append(
        EpisodeTask(
            name="shapes-episode",
            subject=EPISODE_SUBJECT,
            max_new_tokens=3,
            default_data=f"{PREFIX}:episode",
            description="shapes world: MTV-style 2-way 1-shot episodes over colour+shape classes",
        )
    )
    return tasks


def source_kind(name: str) -> TaskKind:
    """The kind of items ``shapes:NAME`` gives."""
    name = _variant_name(name)
    if name == "vqa":
        return "vqa"
    if name == "episode":
        return "episode"
    return "classification"


def shapes_items(name: str, split: str, n: int, seed: int = 0) -> list[Item]:
    """``n`` items of ``split`` ("support" or "test") of the shapes source ``name``."""
    name = _variant_name(name)
    if name == "vqa":
        return vqa_items(split, n, seed)
    if name == "episode":
        return episode_items(split, n, seed)
    return naming_items(VARIANTS[name], split, n, seed)


def load_shapes(options: DataOptions) -> tuple[Sequence[Item], Sequence[Item]]:
    """The ``shapes:`` source loader: (support items, evaluation items)."""
    task = get_task(options.task)
    spec = options.data or getattr(task, "default_data", None) or ""
    name = spec.partition(":")[2]
    if source_kind(name) != task.kind:
        raise DataError(
            f"--data {spec} gives {source_kind(name)} items but task {task.name} is {task.kind}; "
            f"use --task shapes-{_variant_name(name)}"
        )
    n_support = max(SUPPORT_ITEMS, options.support_limit or 0)
    n_eval = max(EVAL_ITEMS, options.eval_limit or 0)
    return shapes_items(name, "support", n_support, options.seed), shapes_items(name, "test", n_eval, options.seed)


def _variant_name(name: str) -> str:
    """``color`` / ``shapes-color`` / ``colour`` -> ``color``; DataError when unknown."""
    name = name.strip().lower().removeprefix("shapes-").replace("colour", "color")
    if name in VARIANTS or name in ("vqa", "episode"):
        return name
    known = ", ".join([*VARIANTS, "vqa", "episode"])
    raise DataError(f"unknown shapes data '{name}'; use shapes:NAME with NAME one of {known}")


def register() -> None:
    """Register the shapes tasks and the ``shapes:`` source (idempotent)."""
    for task in shapes_tasks():
        register_task(task, replace=True)
    if PREFIX not in source_prefixes():
        register_source(PREFIX, load_shapes)
