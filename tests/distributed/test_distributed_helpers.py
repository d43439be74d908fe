"""The single-process face of stvcli.distributed: a world of one, no process group."""

from __future__ import annotations

import pytest
import torch

from stvcli import distributed as dist
from stvcli.cli import model_options, parse_max_memory
from stvcli.errors import StvError


@pytest.mark.parametrize("n,world", [(8, 2), (7, 3), (1, 2), (0, 4), (100, 8)])
def test_shards_are_contiguous_and_cover_everything(n, world):
    ranges = [dist.shard_range(n, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1
    items = list(range(n))
    assert sum((dist.shard(items, r, world) for r in range(world)), []) == items


def test_without_a_launcher_everything_is_a_world_of_one(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not dist.init() and not dist.active()
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    assert dist.all_gather_object({"a": 1}) == [{"a": 1}]
    assert dist.broadcast_object(3) == 3
    dist.barrier()
    values = torch.arange(5.0)
    assert torch.equal(dist.gather_shares(5, lambda a, b: values[a:b]), values)
    stats = {"forwards": 3, "seconds": 1.0}
    assert dist.merge_stats([stats]) is stats
    assert dist.device("cpu") == "cpu"
    assert dist.rank_max_memory({"0": "10GiB", "cpu": "20GiB"}) == {0: "10GiB", "cpu": "20GiB"}


def test_stats_of_several_ranks_sum_work_and_take_the_longest_wall_time():
    merged = dist.merge_stats([
        {"forwards": 4, "seconds": 2.0, "model_seconds": 1.5, "peak_memory_mb": 100.0},
        {"forwards": 3, "seconds": 3.0, "model_seconds": 2.5, "peak_memory_mb": 90.0},
    ])
    assert merged == {"forwards": 7, "seconds": 3.0, "model_seconds": 4.0, "peak_memory_mb": 100.0, "world_size": 2}


def test_crash_hook_is_inert_unless_asked(monkeypatch):
    monkeypatch.delenv("STV_TEST_CRASH_AFTER_SHARD", raising=False)
    dist.crash_for_test("scan")  # returns
    monkeypatch.setenv("STV_TEST_CRASH_AFTER_SHARD", "scan:1")
    dist.crash_for_test("scan")  # another rank's


def test_max_memory_option():
    assert parse_max_memory("0=70GiB, 1=70GiB,cpu=200GiB") == {"0": "70GiB", "1": "70GiB", "cpu": "200GiB"}
    assert parse_max_memory(None) is None
    with pytest.raises(StvError, match="device=size"):
        parse_max_memory("70GiB")
    options = model_options("m", "auto", "auto", None, max_memory="0=10GiB")
    assert options.device_map == "auto" and options.max_memory == {"0": "10GiB"}
    assert model_options("m", "auto", "auto", "balanced", max_memory="0=10GiB").device_map == "balanced"
