"""What every stage computes with: the loaded model, batching and the work meter."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from stvcli.data.context import check_prompts_fit
from stvcli.data.reserved import check_item_text
from stvcli.scoring import default_batch_size

T = TypeVar("T")
R = TypeVar("R")


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


#: The largest batch ``--batch-size auto`` grows to (rows of one forward).
MAX_AUTO_BATCH = 512
#: Share of the device's memory a grown batch may be projected to reach.
GROW_TARGET = 0.8


class MemoryProbe(Protocol):
    """Device memory as ``run_batched`` sees it (``CudaMemory`` on a GPU)."""

    total: int

    def reset(self) -> int:
        """Start measuring a batch; the bytes in use now."""
        ...

    def peak(self) -> int:
        """The most bytes in use since ``reset``."""
        ...


class CudaMemory:
    """The current CUDA device's allocator statistics."""

    def __init__(self) -> None:
        self.total = int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)

    def reset(self) -> int:
        torch.cuda.reset_peak_memory_stats()
        return int(torch.cuda.memory_allocated())

    def peak(self) -> int:
        return int(torch.cuda.max_memory_allocated())


def default_probe() -> MemoryProbe | None:
    """``CudaMemory`` when a GPU is in use, else None (on the CPU ``auto`` keeps its size)."""
    return CudaMemory() if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def grown_size(size: int, base: int, peak: int, total: int, ceiling: int, target: float | None = None) -> int:
    """The next ``auto`` batch size after ``size`` rows ran with ``base`` bytes in use
    before the batch and ``peak`` at most during it, on a device of ``total`` bytes:
    ``2 * size`` when that batch is projected (memory linear in rows above ``base``) to
    stay within ``target * total`` and below ``ceiling`` (a size that ran out of
    memory, or the cap), else ``size``. ``target`` defaults to ``GROW_TARGET``."""
    target = GROW_TARGET if target is None else target
    doubled = 2 * size
    if doubled >= ceiling or base + 2 * max(0, peak - base) > target * total:
        return size
    return doubled


@dataclass
class AutoBatch:
    """What ``--batch-size auto`` has learned about one kind of row (its size now, and the
    smallest size that ran out of memory), kept across ``run_batched`` calls: a stage
    that batches in chunks (the scan) neither re-runs out of memory in every chunk nor
    starts over from the default."""

    size: int = field(default_factory=lambda: default_batch_size())
    ceiling: int = MAX_AUTO_BATCH + 1


def run_batched(
    fn: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    batch_size: int | None,
    on_batch: Callable[[int], None] | None = None,
    probe: MemoryProbe | None = None,
    learned: AutoBatch | None = None,
) -> list[R]:
    """``fn`` over ``items`` in batches.

    With ``batch_size=None`` (auto) the batch starts at ``default_batch_size()`` (or
    where ``learned`` left off); on a GPU (``probe``, default ``default_probe()``) it
    doubles after every full batch whose measured peak says twice the rows fit
    (``grown_size``), up to ``MAX_AUTO_BATCH``; a batch that runs out of GPU memory is
    retried at half the size (down to 1), and the batch never grows back to a size that
    ran out. ``learned`` is updated for the next call.
    """
    auto = batch_size is None
    state = learned if learned is not None and auto else AutoBatch()
    size = batch_size or state.size
    if auto and probe is None:
        probe = default_probe()
    results: list[R] = []
    start = 0
    while start < len(items):
        chunk = items[start : start + size]
        base = probe.reset() if auto and probe is not None else 0
        try:
            results.extend(fn(chunk))
        except torch.cuda.OutOfMemoryError:
            if not auto or size == 1:
                raise
            torch.cuda.empty_cache()
            state.ceiling = min(state.ceiling, size)
            size = max(1, size // 2)
            continue
        start += len(chunk)
        if on_batch is not None:
            on_batch(len(chunk))
        if auto and probe is not None and len(chunk) == size:
            size = grown_size(size, base, probe.peak(), probe.total, state.ceiling)
    if auto:
        state.size = size
    return results


def register_adapter(options: Any, adapter: Any) -> None:
    """Serve ``adapter`` wherever a stage asks for the model of ``options`` (an in-memory
    model: benchmarks build random-weight models without writing them to disk)."""
    _ADAPTERS[options.model_dump_json()] = adapter


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


def check_inputs(
    adapter: Any,
    task: Any,
    queries: Sequence[Any],
    pool: Sequence[Any] = (),
    shots: int = 0,
    *,
    stage: str,
    answers: bool = False,
    reserve: int = 0,
    fix: str = "use --shots {n} or fewer",
) -> int:
    """What every stage checks before building prompts and running its first forward:

    1. no item text (``queries`` and ``pool``) holds the model's reserved strings (the
       ``<image>`` placeholder, image and special tokens: ``adapter.reserved_text``);
    2. the longest prompt it builds fits ``adapter.context_length``: every query's
       zero-shot prompt (with its target when ``answers``) and, with ``shots`` > 0, the
       longest query with the pool's ``shots`` longest demonstrations
       (``stvcli.data.context.check_prompts_fit``).

    Raises a one-line DataError naming the item, or the ``--shots`` that fits (``fix``).
    Returns the tokens of the longest prompt.
    """
    check_item_text([*queries, *pool], adapter.reserved_text)
    return check_prompts_fit(adapter.token_counts, task, queries, pool, shots, adapter.context_length, stage=stage,
                             answers=answers, reserve=reserve, fix=fix)
