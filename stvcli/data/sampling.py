"""Seeded randomness: named random streams and per-query demonstration samples."""

from __future__ import annotations

import random
from collections.abc import Sequence

from stvcli.data.types import Item, Task


def seeded_rng(seed: int, *parts: object) -> random.Random:
    """A Random stream named by ``seed`` and ``parts`` (stable across runs, machines and
    PYTHONHASHSEED: string seeds go through SHA-512)."""
    return random.Random(":".join(["stv", str(seed), *map(str, parts)]))


def demonstrations_for(
    task: Task, pool: Sequence[Item], query: Item, shots: int, seed: int, purpose: str = "demos"
) -> list[Item]:
    """``shots`` demonstrations for ``query`` from ``pool`` (never the query itself).

    The draw depends only on (seed, purpose, query uid), so it does not change with the
    order or batching in which queries are processed.
    """
    return task.sample_demonstrations(pool, shots, seeded_rng(seed, purpose, query.uid), exclude=query)
