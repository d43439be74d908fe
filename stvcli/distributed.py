"""Data parallelism under ``torchrun`` / ``accelerate launch`` (one process per device).

Nothing here starts processes: the launcher does, and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``). Without them (a plain ``stv``
call) every function is a no-op for a world of one and no process group is created,
so single-process behaviour is unchanged.

This module holds rank facts and collectives only: each rank's contiguous share of a
work list (``shard_range``) and gathers of small objects (rewards, samples). The shard
files of a stage (partial results written by each rank and merged by rank 0) belong
to the workspace layer (``stvcli.workspace``).

The process group uses NCCL when CUDA is present and gloo otherwise (CPU tests). Its
timeout is long (``STV_DIST_TIMEOUT_S``, default 24 h) because ranks legitimately wait:
a rank whose shard survived a crash skips straight to the barrier while the others
recompute theirs.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 24 * 3600


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else default


def launched() -> bool:
    """Whether a launcher (torchrun, accelerate launch) started this process with a world > 1."""
    return _env_int("WORLD_SIZE", 1) > 1


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0)


def local_world_size() -> int:
    return _env_int("LOCAL_WORLD_SIZE", 1)


def is_main() -> bool:
    """Rank 0 (or a single process): the one that prints, merges and writes artifacts."""
    return rank() == 0


def active() -> bool:
    """Whether collectives are in use: launched with a world > 1 and the group is up."""
    return world_size() > 1 and dist.is_available() and dist.is_initialized()


def init() -> bool:
    """Join the process group once when launched with a world > 1; a no-op otherwise.

    Returns whether this process is part of a multi-rank run. On CUDA the process's
    device is set to ``cuda:LOCAL_RANK`` (NCCL needs it for object collectives).
    """
    if not launched():
        return False
    if dist.is_initialized():
        return True
    if not dist.is_available():  # pragma: no cover - torch builds without distributed
        raise RuntimeError("this torch build has no torch.distributed; run without torchrun")
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(_first_gpu())
    timeout = timedelta(seconds=_env_int("STV_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timeout)
    atexit.register(_shutdown)
    return True


def _shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def _first_gpu() -> int:
    """The first of this rank's GPUs: ``LOCAL_RANK`` with one GPU per rank; with G GPUs
    and n ranks per node, rank r owns GPUs [r*G/n, (r+1)*G/n) (see ``rank_max_memory``)."""
    count = torch.cuda.device_count()
    per_rank = max(1, count // max(1, local_world_size()))
    return (local_rank() * per_rank) % count


def device(requested: str = "auto") -> str:
    """The device this rank computes on: its own GPU for auto/cuda under a launcher."""
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        if launched():
            return f"cuda:{_first_gpu()}"
        return "cuda"
    return "cpu" if requested == "auto" else requested


def rank_max_memory(max_memory: dict[Any, Any] | None) -> dict[Any, Any] | None:
    """``max_memory`` for ``device_map`` sharding, restricted to this rank's GPUs.

    With one process per node the rank shards over every GPU. With n processes on a
    node of G GPUs (G divisible by n), local rank r gets GPUs [r*G/n, (r+1)*G/n): e.g.
    two ranks of a 70B model on 8 GPUs, 4 each. GPU keys become ints (what
    accelerate expects); the user's limits are kept for the GPUs they name.
    """
    limits = None if max_memory is None else {(int(k) if str(k).isdigit() else k): v for k, v in max_memory.items()}
    n_local = local_world_size()
    if not launched() or n_local <= 1 or not torch.cuda.is_available():
        return limits
    n_gpus = torch.cuda.device_count()
    if n_gpus < n_local or n_gpus % n_local:
        from stvcli.errors import StvError

        raise StvError(
            f"--device-map with {n_local} processes per node needs a multiple of {n_local} GPUs per node, "
            f"found {n_gpus}; pick a --nproc_per_node that divides {n_gpus}"
        )
    per_rank = n_gpus // n_local
    mine = range(local_rank() * per_rank, (local_rank() + 1) * per_rank)
    result: dict[Any, Any] = {}
    for gpu in mine:
        if limits and gpu in limits:
            result[gpu] = limits[gpu]
        else:
            free, _ = torch.cuda.mem_get_info(gpu)
            result[gpu] = int(free * 0.9)
    for key, value in (limits or {}).items():
        if not isinstance(key, int):
            result[key] = value  # cpu / disk offload limits
    return result


def shard_range(n: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """Contiguous [start, stop) share of n items for a rank; sizes differ by at most one."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    base, extra = divmod(n, world)
    start = rank_ * base + min(rank_, extra)
    return start, start + base + (1 if rank_ < extra else 0)


def shard(items: Sequence[T], rank_: int | None = None, world: int | None = None) -> list[T]:
    start, stop = shard_range(len(items), rank_, world)
    return list(items[start:stop])


def barrier() -> None:
    if active():
        dist.barrier()


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not active():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in a single process)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's tensor along dim 0, in rank order (shapes may differ in dim 0).

    Small tensors only (rewards, scores): they travel as CPU objects, so this works the
    same with gloo and NCCL and for uneven shares.
    """
    if not active():
        return tensor
    parts = all_gather_object(tensor.detach().cpu())
    return torch.cat(parts).to(tensor.device)


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One stage's Meter summaries from every rank: work summed, wall time and memory the max."""
    if len(parts) == 1:
        return parts[0]
    merged: dict[str, Any] = {
        "forwards": sum(int(p.get("forwards", 0)) for p in parts),
        "seconds": max(float(p.get("seconds", 0.0)) for p in parts),
        "model_seconds": round(sum(float(p.get("model_seconds", 0.0)) for p in parts), 3),
        "peak_memory_mb": max(float(p.get("peak_memory_mb", 0.0)) for p in parts),
        "world_size": len(parts),
    }
    return merged


def crash_for_test(stage: str) -> None:
    """Test hook: ``STV_TEST_CRASH_AFTER_SHARD=<stage>:<rank>`` kills that rank right after
    it wrote its shard (before the merge), as a node failure would; only in the first
    attempt of a torchrun ``--max-restarts`` run, so the restarted group completes."""
    wanted = os.environ.get("STV_TEST_CRASH_AFTER_SHARD", "")
    if wanted and wanted == f"{stage}:{rank()}" and _env_int("TORCHELASTIC_RESTART_COUNT", 0) == 0:
        os._exit(17)


def gather_shares(n: int, compute: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """``compute(start, stop)`` over this rank's share of ``n`` rows; every rank gets all n.

    In a single process this is exactly ``compute(0, n)``. Used by the searches: each
    rank scores its slice of the S candidates and every rank then takes the same step.
    """
    if not active():
        return compute(0, n)
    start, stop = shard_range(n)
    part = compute(start, stop) if stop > start else torch.empty(0)
    return all_gather_cat(part)
