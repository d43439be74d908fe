"""``--batch-size auto`` grows on a GPU until memory says stop (issue 17), with a fake probe."""

from __future__ import annotations

import pytest
import torch

from stvcli.stages import common
from stvcli.stages.common import MAX_AUTO_BATCH, grown_size, run_batched

GB = 2**30


class FakeMemory:
    """A device of ``total`` bytes where a batch of r rows peaks at ``base + r * per_row``;
    more than ``total`` raises out-of-memory."""

    def __init__(self, total: int, base: int, per_row: int) -> None:
        self.total, self.base, self.per_row = total, base, per_row
        self.rows = 0

    def reset(self) -> int:
        return self.base

    def peak(self) -> int:
        return self.base + self.rows * self.per_row

    def run(self, chunk):
        if self.base + len(chunk) * self.per_row > self.total:
            raise torch.cuda.OutOfMemoryError("fake")
        self.rows = len(chunk)
        return list(chunk)


def test_grown_size_doubles_only_when_the_doubled_batch_is_projected_to_fit():
    # 8 rows used 1 GB above a 10 GB base on an 80 GB device: 16 rows -> 12 GB, fits
    assert grown_size(8, 10 * GB, 11 * GB, 80 * GB, ceiling=513) == 16
    # 8 rows used 30 GB: 16 rows -> 70 GB > 0.8 x 80 GB
    assert grown_size(8, 10 * GB, 40 * GB, 80 * GB, ceiling=513) == 8
    # the projection is exactly at the target: still allowed; just above: not
    assert grown_size(8, 0, 32 * GB, 80 * GB, ceiling=513) == 16
    assert grown_size(8, 0, 32 * GB + 1, 80 * GB, ceiling=513) == 8
    # never to a size that ran out of memory (the ceiling) or beyond
    assert grown_size(8, 0, 1, 80 * GB, ceiling=16) == 8
    assert grown_size(8, 0, 1, 80 * GB, ceiling=17) == 16


def test_auto_batches_grow_until_memory_stops_them():
    memory = FakeMemory(total=100 * GB, base=10 * GB, per_row=GB // 2)  # 16 rows = 8 GB, 128 rows = 64 GB
    sizes: list[int] = []
    out = run_batched(memory.run, list(range(500)), None, sizes.append, probe=memory)
    assert out == list(range(500))
    # 8 -> 16 -> 32 -> 64 -> 128 (10 + 64 GB); 256 rows would be 10 + 128 GB > 80 GB: stays 128
    assert sizes[:5] == [8, 16, 32, 64, 128] and set(sizes[5:-1]) == {128}


def test_out_of_memory_halves_and_never_grows_back_to_the_failing_size(monkeypatch):
    memory = FakeMemory(total=100 * GB, base=0, per_row=GB)  # 100 rows fit, 128 do not
    # a target of 2.0 lets the projection ask for more than the device has: the OOM decides
    sizes: list[int] = []
    monkeypatch.setattr(common, "GROW_TARGET", 2.0)
    run_batched(memory.run, list(range(400)), None, sizes.append, probe=memory)
    assert sizes[:4] == [8, 16, 32, 64]
    assert max(sizes) == 64 and sum(sizes) == 400  # 128 ran out of memory once; 64 from then on


def test_fixed_batch_size_and_cpu_never_grow():
    memory = FakeMemory(total=100 * GB, base=0, per_row=1)
    sizes: list[int] = []
    run_batched(memory.run, list(range(40)), 4, sizes.append, probe=memory)
    assert set(sizes) == {4}
    sizes.clear()
    run_batched(lambda chunk: list(chunk), list(range(40)), None, sizes.append)  # no GPU: no probe
    assert set(sizes) == {common.default_batch_size()}


def test_growth_is_capped():
    memory = FakeMemory(total=10**18, base=0, per_row=1)
    sizes: list[int] = []
    run_batched(memory.run, list(range(4 * MAX_AUTO_BATCH)), None, sizes.append, probe=memory)
    assert max(sizes) == MAX_AUTO_BATCH


@pytest.mark.parametrize("rows", [0, 1])
def test_empty_and_single_inputs(rows):
    memory = FakeMemory(total=100 * GB, base=0, per_row=1)
    assert run_batched(memory.run, list(range(rows)), None, probe=memory) == list(range(rows))


def test_what_auto_learned_carries_over_calls():
    from stvcli.stages.common import AutoBatch

    memory = FakeMemory(total=100 * GB, base=0, per_row=GB)  # 100 rows fit
    learned = AutoBatch(size=64)
    calls: list[int] = []

    def run(chunk):
        calls.append(len(chunk))
        return memory.run(chunk)

    common.GROW_TARGET, original = 2.0, common.GROW_TARGET
    try:
        run_batched(run, list(range(300)), None, probe=memory, learned=learned)  # 64, 128 runs out, 64, 64, ...
        assert calls[:3] == [64, 128, 64] and learned.size == 64 and learned.ceiling == 128
        calls.clear()
        run_batched(run, list(range(200)), None, probe=memory, learned=learned)
    finally:
        common.GROW_TARGET = original
    assert calls == [64, 64, 64, 8]  # the next chunk starts where the last stopped: no second out-of-memory


def test_scan_pass_carries_the_learned_size_over_its_chunks(monkeypatch):
    from stvcli.stages import scan as scan_module

    seen = []
    real = scan_module.run_batched

    def spy(fn, items, batch_size, on_batch=None, probe=None, learned=None):
        seen.append(learned)
        return real(fn, items, batch_size, on_batch, probe, learned)

    monkeypatch.setattr(scan_module, "run_batched", spy)
    from stvcli.data.tasks import get_task
    from stvcli.stages.common import Meter
    from stvcli.testing.tiny import tiny_adapter
    from stvcli.data.types import Item

    adapter = tiny_adapter("llama")
    task = get_task("text")
    items = [Item(uid=str(i), question=f"q {i}", answers=("a",)) for i in range(20)]
    prompts = [task.build_prompt(q) for q in items]
    many = [task.build_prompt(q, items[:2]) for q in items]
    monkeypatch.setattr(scan_module, "default_batch_size", lambda: 4)
    scan_module.scan_pass(adapter, prompts, many, Meter(), None, keep=2)
    zero_states, many_states = seen[0::2], seen[1::2]
    assert len(seen) == 10 and len({id(s) for s in zero_states}) == 1 and len({id(s) for s in many_states}) == 1
    assert zero_states[0] is not many_states[0]
