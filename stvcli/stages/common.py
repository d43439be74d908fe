"""What every stage computes with: the loaded model, batching and the work meter."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
