"""What every stage computes with: batching and the work meter."""

from __future__ import annotations

from stvcli.stages.common import Meter, run_batched


def test_run_batched_keeps_order_and_reports_each_batch():
    seen, sizes = [], []

    def double(chunk):
        seen.append(list(chunk))
        return [2 * x for x in chunk]

    assert run_batched(double, list(range(7)), 3, sizes.append) == [2 * x for x in range(7)]
    assert seen == [[0, 1, 2], [3, 4, 5], [6]] and sizes == [3, 3, 1]


def test_meter_counts_rows_and_model_time():
    meter = Meter()
    with meter.forward(4):
        pass
    with meter.forward(2):
        pass
    summary = meter.summary()
    assert summary["forwards"] == 6 and summary["model_seconds"] >= 0 and summary["seconds"] >= summary["model_seconds"]
