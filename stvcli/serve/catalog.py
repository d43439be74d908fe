"""What the server offers: the bare base model and one served model per vector set.

The base model is served under its name (``served_name``: a short name or hub id as
given, a local directory or GGUF file by its last path component, never the path); the
path it was loaded from is still accepted in requests. A vector set is served as
``<base-model>+<task>@<digest>`` (the digest is the vectors file's content hash,
``TaskVectors.digest``); ``<base-model>+<task>`` also names it when only one loaded set
has that task. Every set is checked against the model when loaded (``check_vector_set``:
finite values within the model's dtype, distinct locations inside its layers x heads,
its head width). Requests for different sets share a forward: ``batch_intervention``
stacks each row's vectors over the union of their locations, with a row mask so that
bare rows (and locations another set does not use) keep the model's own activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from stvcli.engine import InsertMode, Intervention, WriteAt
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

    @property
    def batch_key(self) -> tuple[str, str]:
        """Sets with equal keys can share a forward: the insertion mode and where it writes."""
        return self.intervention.mode, self.intervention.write_at


class Catalog:
    def __init__(self, base_id: str, sets: Sequence[VectorSet], loaded_as: str | None = None) -> None:
        """``loaded_as``: the name the model was loaded by, when it differs from ``base_id``
        (a path); requests may still use it in place of ``base_id``."""
        self.base_id = base_id
        self.loaded_as = loaded_as if loaded_as != base_id else None
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

    def canonical(self, name: str) -> str:
        """``name`` with the model's load path (the ids of older versions) replaced by its served name."""
        old = self.loaded_as
        if old and (name == old or name.startswith(f"{old}+")):
            return self.base_id + name[len(old):]
        return name

    def resolve(self, name: str) -> VectorSet | None:
        """The vector set a request's ``model`` names; None for the bare model."""
        name = self.canonical(name)
        if name == self.base_id:
            return None
        found = self.sets.get(name) or self.aliases.get(name)
        if found is None:
            raise ApiError(404, f"the model {name!r} is not served here; GET /v1/models lists: "
                           f"{', '.join(self.ids())}", param="model", code="model_not_found")
        return found


def vector_set(base_id: str, vectors: TaskVectors, insert: InsertMode | None = None,
               source: str | None = None, write_at: WriteAt | None = None) -> VectorSet:
    where = source or f"vectors for task {vectors.task!r}"
    try:
        intervention = vectors.intervention(insert, write_at)
    except ValueError as error:
        raise StvError(f"{where}: {error}; serve them with --insert replace") from None
    except RuntimeError as error:  # a baseline whose shape does not match the vectors
        raise StvError(f"{where}: the baseline does not fit the vectors ({error}); rebuild them with "
                       "`stv search`") from None
    return VectorSet(f"{base_id}+{vectors.task}@{vectors.digest}", vectors.task, vectors.digest, intervention)


def served_name(model: str) -> str:
    """The id ``model`` (as given to the loader) is served under: a short name or hub id as
    it is, a local directory or ``.gguf`` file by its last path component."""
    path = Path(model).expanduser()
    if not (path.is_absolute() or model.startswith((".", "~")) or path.exists()):
        return model
    name = path.resolve().name if path.name in ("", ".", "..") else path.name
    if name.lower().endswith(".gguf"):
        name = name[: -len(".gguf")]
    return name or "model"


def check_vector_set(adapter: ModelAdapter, vector_set: VectorSet, source: str) -> VectorSet:
    """``vector_set`` if the model can insert it; StvError naming ``source`` otherwise."""
    locations, vectors = vector_set.intervention.locations, vector_set.intervention.vectors
    fix = "rebuild it with `stv search` for this model"
    if vectors.ndim != 2 or locations.ndim != 2 or vectors.shape[0] != locations.shape[0]:
        raise StvError(f"{source}: {tuple(vectors.shape)} vectors for {tuple(locations.shape)} locations; {fix}")
    if vectors.shape[1] != adapter.head_dim:
        raise StvError(f"{source}: vectors of width {vectors.shape[1]}, but the model's heads are "
                       f"{adapter.head_dim} wide; {fix}")
    if locations.numel():
        layers, heads = locations[:, 0], locations[:, 1]
        outside = (layers < 0) | (layers >= adapter.n_layers) | (heads < 0) | (heads >= adapter.n_heads)
        if bool(outside.any()):
            layer, head = locations[outside.nonzero()[0, 0]].tolist()
            raise StvError(f"{source}: location (layer {layer}, head {head}) is outside the model's "
                           f"{adapter.n_layers} layers x {adapter.n_heads} heads; {fix}")
        if len({tuple(pair) for pair in locations.tolist()}) != len(locations):
            raise StvError(f"{source}: a (layer, head) location appears twice; {fix}")
    if not bool(torch.isfinite(vectors).all()):
        raise StvError(f"{source}: the vectors hold NaN or infinite values; {fix}")
    dtype = getattr(adapter.model, "dtype", torch.float32)
    if dtype.is_floating_point and vectors.numel() and float(vectors.abs().max()) > torch.finfo(dtype).max:
        raise StvError(f"{source}: the vectors hold values too large for the model's {dtype}; {fix}")
    return vector_set


def load_catalog(adapter: ModelAdapter, base_id: str, paths: Sequence[Path], insert: InsertMode | None,
                 loaded_as: str | None = None, write_at: WriteAt | None = None) -> Catalog:
    """Read every vectors file, refusing those made for another model or unusable with it."""
    sets = []
    for path in paths:
        vectors = TaskVectors.load(path, fingerprint=adapter.fingerprint())
        sets.append(check_vector_set(adapter, vector_set(base_id, vectors, insert, source=str(path), write_at=write_at),
                                     str(path)))
    return Catalog(base_id, sets, loaded_as)


def batch_intervention(rows: Sequence[VectorSet | None]) -> Intervention | None:
    """One intervention for a batch whose row b uses ``rows[b]`` (None: the bare model).

    All sets must share one insertion mode and write position (the worker batches by
    ``VectorSet.batch_key``).
    """
    used = {id(s): s for s in rows if s is not None}
    if not used:
        return None
    sets = list(used.values())
    if len({s.batch_key for s in sets}) > 1:
        raise ValueError("one batch cannot mix insertion modes or write positions")
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
    return Intervention(locations, vectors, sets[0].mode, row_mask, sets[0].intervention.write_at)
