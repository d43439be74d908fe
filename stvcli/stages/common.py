"""Plumbing shared by the stages: workspace paths, meters, progress, batching."""

from __future__ import annotations

import hashlib
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from stvcli.distributed import broadcast_object, is_main, rank, world_size
from stvcli.scoring import default_batch_size

T = TypeVar("T")
R = TypeVar("R")

console = Console(stderr=True)

ARTIFACT_FILES = {
    "scan": "scan.safetensors",
    "activations": "activations.safetensors",
    "bank": "bank.safetensors",
    "vectors": "vectors.safetensors",
    "search-state": "search-state.safetensors",
    "mtv": "mtv.safetensors",
}


def artifact_path(workspace: Path, kind: str) -> Path:
    return Path(workspace) / ARTIFACT_FILES[kind]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@dataclass
class Meter:
    """Forward passes (sequences run through the model) and wall time of one stage."""

    forwards: int = 0
    started: float = field(default_factory=time.perf_counter)
    model_seconds: float = 0.0

    @contextmanager
    def forward(self, rows: int) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.model_seconds += time.perf_counter() - start
            self.forwards += rows

    def summary(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self.started
        return {
            "forwards": self.forwards,
            "seconds": round(seconds, 3),
            "model_seconds": round(self.model_seconds, 3),
            "peak_memory_mb": round(peak_memory_mb(), 1),
        }


def peak_memory_mb() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / 1024 if sys.platform != "darwin" else usage / 2**20


def progress(quiet: bool) -> Progress:
    """A rich progress display; silent when quiet or when stderr is not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or not console.is_terminal or not is_main(),  # rank 0 only under torchrun
        transient=False,
    )


def say(message: str, quiet: bool = False) -> None:
    """A status line (from rank 0 only when launched with torchrun)."""
    if not quiet and is_main():
        console.print(message, highlight=False)


def say_rank(message: str, quiet: bool = False) -> None:
    """A status line from every rank, prefixed with the rank when there are several."""
    if not quiet:
        prefix = f"[rank {rank()}/{world_size()}] " if world_size() > 1 else ""
        console.print(prefix + message, highlight=False, markup=False)


def run_batched(
    fn: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    batch_size: int | None,
    on_batch: Callable[[int], None] | None = None,
) -> list[R]:
    """``fn`` over ``items`` in batches; with ``batch_size=None`` (auto) a batch that runs
    out of GPU memory is retried at half the size (down to 1)."""
    size = batch_size or default_batch_size()
    auto = batch_size is None
    results: list[R] = []
    start = 0
    while start < len(items):
        chunk = items[start : start + size]
        try:
            results.extend(fn(chunk))
        except torch.cuda.OutOfMemoryError:
            if not auto or size == 1:
                raise
            torch.cuda.empty_cache()
            size = max(1, size // 2)
            continue
        start += len(chunk)
        if on_batch is not None:
            on_batch(len(chunk))
    return results


_ADAPTERS: dict[str, Any] = {}


def get_adapter(options: Any) -> Any:
    """Load a model once per process (the demo and eval run several stages on one model)."""
    from transformers.utils import logging as hf_logging

    from stvcli.models.loading import load_model

    hf_logging.disable_progress_bar()
    key = options.model_dump_json()
    if key not in _ADAPTERS:
        _ADAPTERS[key] = load_model(options)
    return _ADAPTERS[key]


def reusable(path: Path, kind: str, settings: dict[str, Any], force: bool) -> bool:
    """Whether an existing artifact was made with exactly these settings (and inputs)."""
    from stvcli.artifacts import load_artifact
    from stvcli.errors import ArtifactError

    if force or not path.exists():
        return False
    try:
        existing = load_artifact(path, kind)
    except ArtifactError:
        return False
    return _normalise(existing.settings) == _normalise(settings)


def reuse_artifact(path: Path, kind: str, settings: dict[str, Any], force: bool, *, quiet: bool, why: str = "",
                   **load_options: Any) -> Any | None:
    """The artifact at ``path`` when it was made with exactly ``settings``, else None.

    Rank 0 decides and every rank loads (under torchrun all ranks agree); says so on
    reuse, with ``why`` (e.g. "same settings and scan; --force rebuilds").
    """
    from stvcli.artifacts import load_artifact

    if not broadcast_object(reusable(path, kind, settings, force)):
        return None
    stage = {"vectors": "search"}.get(kind, kind)
    say(f"{stage}: reusing {path}" + (f" ({why})" if why else ""), quiet)
    return load_artifact(path, kind, **load_options)


def _normalise(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, sort_keys=True, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file via a temp file and rename, so readers never see half of it."""
    import os
    import tempfile

    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
