"""Peak memory of a block of work, for the benchmarks (Linux: VmHWM after a reset;
CUDA: the allocator's peak)."""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` field in kB (None where it cannot be read)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current resident set; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def trim() -> None:
    """Collect garbage and give freed heap memory back to the OS (glibc), so the next peak
    is measured from the memory really in use rather than hidden by pages the allocator kept."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_delta_mb(fn: Callable[[], Any]) -> float | None:
    """Peak resident memory above the level before ``fn`` (None where it cannot be measured)."""
    with PeakMemory("cpu") as peak:
        fn()
    return peak.mb


class PeakMemory:
    """Peak memory of a block: CUDA allocated bytes on a GPU, else the resident set above
    its level at the start (Linux VmHWM after a reset; None where that cannot be read)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.mb: float | None = None
        self.base: int | None = None

    def __enter__(self) -> "PeakMemory":
        trim()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = 0
        else:
            self.base = status_kb("VmRSS") if reset_peak() else None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = status_kb("VmHWM")
            self.mb = None if self.base is None or peak is None else (peak - self.base) / 1024
