"""Seeded randomness: named random streams and per-item demonstration samples."""

from __future__ import annotations

import random

from stvcli.data.types import Item, TaskData


def seeded_rng(seed: int, *parts: object) -> random.Random:
    """A Random stream named by ``seed`` and ``parts`` (stable across runs, machines and
    PYTHONHASHSEED: string seeds go through SHA-512)."""
    return random.Random(":".join(["stv", str(seed), *map(str, parts)]))


def demonstrations_for(task_data: TaskData, item: Item, shots: int, seed: int) -> list[Item]:
    """The same N demonstrations for an item in every method that uses N shots."""
    rng = random.Random(f"{seed}:{item.uid}:{shots}")
    return task_data.task.sample_demonstrations(task_data.support, shots, rng, exclude=item)
