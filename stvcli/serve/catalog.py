"""What the server offers: the bare base model and one served model per vector set.

A vector set is served as ``<base-model>+<task>@<digest>`` (the digest is the vectors
file's content hash, ``TaskVectors.digest``); ``<base-model>+<task>`` also names it
when only one loaded set has that task. Requests for different sets share a forward:
``batch_intervention`` stacks each row's vectors over the union of their locations,
with a row mask so that bare rows (and locations another set does not use) keep
the model's own activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from stvcli.engine import InsertMode, Intervention
from stvcli.errors import StvError
from stvcli.models.base import ModelAdapter
from stvcli.serve.errors import ApiError
from stvcli.vectors import TaskVectors


@dataclass(frozen=True)
class VectorSet:
    id: str
    task: str
    digest: str
    intervention: Intervention  # vectors [K, D] with their mode

    @property
    def mode(self) -> InsertMode:
        return self.intervention.mode


class Catalog:
    def __init__(self, base_id: str, sets: Sequence[VectorSet]) -> None:
        self.base_id = base_id
        self.sets: dict[str, VectorSet] = {}
        for vector_set in sets:
            if vector_set.id in self.sets:
                raise StvError(f"vectors {vector_set.id} are loaded twice; pass each --vectors file once")
            self.sets[vector_set.id] = vector_set
        by_task: dict[str, list[VectorSet]] = {}
        for vector_set in sets:
            by_task.setdefault(f"{base_id}+{vector_set.task}", []).append(vector_set)
        self.aliases = {alias: found[0] for alias, found in by_task.items() if len(found) == 1}

    def ids(self) -> list[str]:
        return [self.base_id, *self.sets]

    def resolve(self, name: str) -> VectorSet | None:
        """The vector set a request's ``model`` names; None for the bare model."""
        if name == self.base_id:
            return None
        found = self.sets.get(name) or self.aliases.get(name)
        if found is None:
            raise ApiError(404, f"the model {name!r} is not served here; GET /v1/models lists: "
                           f"{', '.join(self.ids())}", param="model", code="model_not_found")
        return found


def vector_set(base_id: str, vectors: TaskVectors, insert: InsertMode | None = None) -> VectorSet:
    try:
        intervention = vectors.intervention(insert)
    except ValueError as error:
        raise StvError(f"vectors for task {vectors.task!r}: {error}; serve them with --insert replace") from None
    return VectorSet(f"{base_id}+{vectors.task}@{vectors.digest}", vectors.task, vectors.digest, intervention)


def load_catalog(adapter: ModelAdapter, base_id: str, paths: Sequence[Path], insert: InsertMode | None) -> Catalog:
    """Read every vectors file, refusing those made for another model."""
    loaded = [TaskVectors.load(path, fingerprint=adapter.fingerprint()) for path in paths]
    return Catalog(base_id, [vector_set(base_id, vectors, insert) for vectors in loaded])


def batch_intervention(rows: Sequence[VectorSet | None]) -> Intervention | None:
    """One intervention for a batch whose row b uses ``rows[b]`` (None: the bare model).

    All sets must share one insertion mode (the worker batches by mode).
    """
    used = {id(s): s for s in rows if s is not None}
    if not used:
        return None
    sets = list(used.values())
    if len({s.mode for s in sets}) > 1:
        raise ValueError("one batch cannot mix insertion modes")
    if len(sets) == 1 and all(s is not None for s in rows):
        return sets[0].intervention
    index: dict[tuple[int, int], int] = {}
    for s in sets:
        for layer, head in s.intervention.locations.tolist():
            index.setdefault((layer, head), len(index))
    locations = torch.tensor(list(index), dtype=torch.long).reshape(-1, 2)
    head_dim = sets[0].intervention.vectors.shape[-1]
    vectors = torch.zeros(len(rows), len(index), head_dim, dtype=sets[0].intervention.vectors.dtype)
    row_mask = torch.zeros(len(rows), len(index), dtype=torch.bool)
    for b, s in enumerate(rows):
        if s is None:
            continue
        columns = torch.tensor([index[(l, h)] for l, h in s.intervention.locations.tolist()], dtype=torch.long)
        vectors[b, columns] = s.intervention.vectors.to(vectors.dtype)
        row_mask[b, columns] = True
    return Intervention(locations, vectors, sets[0].mode, row_mask)
