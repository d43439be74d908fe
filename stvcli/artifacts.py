"""Workspace artifacts: safetensors files with validated string metadata.

Every artifact records ``stv.schema``, ``stv.kind``, the model id and fingerprint, the
stage settings, the data source, the seed and the package versions. Writes are
atomic (temp file in the same directory, then rename), so an interrupted stage never
leaves a half-written artifact. Reads validate kind, schema, tensor shapes and the
model fingerprint, and refuse a mismatch with one clear line.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stvcli import __version__
from stvcli.errors import ArtifactError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Kind:
    """One artifact kind: its tensors (name -> rank), its file in a workspace, and the
    stage (or command) that writes it, for "run X first" messages."""

    tensors: dict[str, int]
    file: str | None = None
    stage: str | None = None  # the stage name in messages ("search" writes vectors)
    producer: str | None = None


KINDS: dict[str, Kind] = {
    "scan": Kind({"scores": 2, "locations": 2}, "scan.safetensors", "scan", "stv scan"),
    "activations": Kind({"activations": 3, "locations": 2}, "activations.safetensors", "scan", "stv scan"),
    "bank": Kind({"bank": 3, "counts": 2, "locations": 2}, "bank.safetensors", "bank", "stv bank"),
    "vectors": Kind({"vectors": 2, "locations": 2, "logits": 2}, "vectors.safetensors", "search", "stv search"),
    "search-state": Kind({"logits": 2}, "search-state.safetensors", "search"),
    # search --auto runs one search per reward, each with its own checkpoint
    **{f"search-state-{reward}": Kind({"logits": 2}, f"search-state-{reward}.safetensors", "search")
       for reward in ("first-token", "answer", "complete")},
    "mtv": Kind({"means": 3, "locations": 2, "logits": 2}, "mtv.safetensors", "mtv", "stv eval --methods mtv"),
    "mtv-state": Kind({"logits": 2}, "mtv-state.safetensors", "mtv"),
    "mtv-add": Kind({"means": 3, "locations": 2, "logits": 2}, "mtv-add.safetensors", "mtv-add",
                    "stv eval --methods mtv-add"),
    "mtv-add-state": Kind({"logits": 2}, "mtv-add-state.safetensors", "mtv-add"),
    "shard": Kind({}),  # one rank's partial result of a data-parallel stage (W/shards/)
}


def versions() -> dict[str, str]:
    import transformers

    return {
        "stvcli": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


@dataclass
class Artifact:
    kind: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]  # decoded metadata: model, fingerprint, settings, data, seed, versions, ...
    path: Path | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    @property
    def settings(self) -> dict[str, Any]:
        return self.meta.get("settings", {})

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.meta.get("fingerprint", {})


def save_artifact(
    path: str | Path,
    kind: str,
    tensors: dict[str, torch.Tensor],
    *,
    model: str,
    fingerprint: dict[str, Any],
    settings: dict[str, Any],
    data: dict[str, Any] | None = None,
    seed: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Validate and atomically write an artifact; returns its path."""
    path = Path(path)
    _check_tensors(kind, tensors, str(path))
    meta: dict[str, str] = {
        "stv.schema": str(SCHEMA_VERSION),
        "stv.kind": kind,
        "stv.model": model,
        "stv.fingerprint": json.dumps(fingerprint, sort_keys=True),
        "stv.settings": json.dumps(settings, sort_keys=True, default=str),
        "stv.data": json.dumps(data or {}, sort_keys=True, default=str),
        "stv.seed": json.dumps(seed),
        "stv.versions": json.dumps(versions(), sort_keys=True),
        "stv.created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stv.extra": json.dumps(extra or {}, sort_keys=True, default=str),
    }
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    with atomic_output(Path(path)) as temp:
        save_file(contiguous, str(temp), metadata=meta)
    return path


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temp path beside ``path`` to write; renamed onto ``path`` when the block ends
    cleanly, removed otherwise, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temp)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; a shared folder needs the umask's mode
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file atomically (``atomic_output``)."""
    with atomic_output(Path(path)) as temp:
        temp.write_text(text, encoding="utf-8")


def load_artifact(
    path: str | Path,
    kind: str,
    *,
    fingerprint: dict[str, Any] | None = None,
) -> Artifact:
    """Read and validate an artifact of ``kind``; with ``fingerprint``, refuse another model's."""
    path = Path(path)
    producer = KINDS[kind].producer if kind in KINDS else None
    remake = f"; remake it with `{producer} --force`" if producer else ""
    if not path.exists():
        hint = f"; run `{producer}` first" if producer else ""
        raise ArtifactError(f"{path} does not exist{hint}")
    if path.is_dir():
        file = KINDS[kind].file if kind in KINDS else None
        raise ArtifactError(f"{path} is a folder; give the artifact file" + (f" (e.g. {path / file})" if file else ""))
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ArtifactError(f"{path} is not a readable safetensors file ({error}){remake}") from None
    if raw.get("stv.kind") is None or raw.get("stv.schema") is None:
        raise ArtifactError(f"{path} is not an stv artifact (no stv metadata)")
    if raw["stv.kind"] != kind:
        raise ArtifactError(f"{path} is a {raw['stv.kind']!r} artifact, expected {kind!r}")
    if raw["stv.schema"] != str(SCHEMA_VERSION):
        raise ArtifactError(
            f"{path} has schema version {raw['stv.schema']}, this stv reads {SCHEMA_VERSION}{remake}"
        )
    try:
        meta = {key.removeprefix("stv."): json.loads(value) for key, value in raw.items()
                if key not in ("stv.kind", "stv.model", "stv.created", "stv.schema")}
    except json.JSONDecodeError:
        raise ArtifactError(f"{path} has corrupt metadata{remake}") from None
    meta.update(model=raw.get("stv.model"), created=raw.get("stv.created"), schema=int(raw["stv.schema"]))
    _check_tensors(kind, tensors, str(path), remake)
    artifact = Artifact(kind, tensors, meta, path)
    if not isinstance(meta.get("settings"), dict) or not isinstance(meta.get("fingerprint"), dict):
        raise ArtifactError(f"{path} has corrupt metadata{remake}")
    check_geometry(artifact, artifact.fingerprint, remake)
    if fingerprint is not None:
        check_fingerprint(artifact, fingerprint)
    return artifact


def check_fingerprint(artifact: Artifact, fingerprint: dict[str, Any]) -> None:
    """Refuse an artifact made for another model (architecture, geometry or weights),
    or whose locations and vector widths do not fit this model."""
    producer = KINDS[artifact.kind].producer
    fix = f"remake it with `{producer} --force`" if producer else "remake it"
    compare_fingerprints(artifact.fingerprint, fingerprint, str(artifact.path), str(artifact.meta.get("model")), fix)
    check_geometry(artifact, fingerprint, f"; {fix}")


def compare_fingerprints(stored: dict[str, Any], current: dict[str, Any], where: str, model: str,
                         fix: str = "") -> None:
    for key in ("architecture", "n_layers", "n_heads", "head_dim", "weights"):
        if key in stored and key in current and stored[key] != current[key]:
            raise ArtifactError(
                f"{where} was made for another model ({key}: {stored[key]} vs {current[key]}): use the model it "
                f"was made for ({model})" + (f", or {fix}" if fix else "")
            )


#: Tensors of activation values: finite, and as wide as one head (the last dimension).
VALUE_TENSORS = ("activations", "bank", "vectors", "baseline", "means")


def check_geometry(artifact: Artifact, fingerprint: dict[str, Any], fix: str = "") -> None:
    """Locations inside the model's [layers, heads], value tensors one head wide and finite."""
    where = str(artifact.path)
    locations = artifact.tensors.get("locations")
    if locations is not None and locations.numel():
        if locations.is_floating_point() or int(locations.min()) < 0:
            raise ArtifactError(f"{where}: locations must be non-negative integers{fix}")
        for column, key in ((0, "n_layers"), (1, "n_heads")):
            limit = fingerprint.get(key)
            if isinstance(limit, int) and int(locations[:, column].max()) >= limit:
                raise ArtifactError(f"{where}: a location's {key[2:-1]} {int(locations[:, column].max())} is out of "
                                    f"range for a model with {limit} {key[2:]}{fix}")
    head_dim = fingerprint.get("head_dim")
    for name in VALUE_TENSORS:
        tensor = artifact.tensors.get(name)
        if tensor is None:
            continue
        if isinstance(head_dim, int) and tensor.ndim and tensor.shape[-1] != head_dim:
            raise ArtifactError(f"{where}: {name} is {tensor.shape[-1]} wide, the model's heads {head_dim}{fix}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ArtifactError(f"{where}: {name} holds NaN or infinite values{fix}")


def _check_tensors(kind: str, tensors: dict[str, torch.Tensor], where: str, fix: str = "") -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}")
    for name, rank in KINDS[kind].tensors.items():
        if name not in tensors:
            raise ArtifactError(f"{where}: {kind} artifact lacks tensor {name!r}{fix}")
        if tensors[name].ndim != rank:
            raise ArtifactError(f"{where}: tensor {name!r} has rank {tensors[name].ndim}, expected {rank}{fix}")
    if "locations" in tensors:
        locations = tensors["locations"]
        if locations.shape[-1] != 2:
            raise ArtifactError(f"{where}: locations must be [K, 2], got {tuple(locations.shape)}")
        for name in ("bank", "counts", "vectors", "logits", "baseline", "choices"):
            if name in tensors and kind not in ("mtv", "mtv-add") and tensors[name].shape[0] != locations.shape[0]:
                raise ArtifactError(f"{where}: {name} has {tensors[name].shape[0]} rows for {locations.shape[0]} locations")
