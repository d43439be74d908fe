"""Issue 5's acceptance test (slow tier, `make test-slow`): the demo on the real shapes VLM.

On held-out items, with 95% intervals: ICL at 4 shots beats zero-shot, and STV in a
zero-shot prompt beats zero-shot by a clear margin (the intervals do not overlap).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_demo_shows_icl_and_stv_beating_zero_shot(tmp_path):
    from stvcli.demo import DemoConfig, run_demo

    report = run_demo(DemoConfig(workspace=tmp_path / "demo", quiet=True))
    results = next(iter(report["results"].values()))
    zero, icl4, stv = results["zero-shot"], results["icl:4"], results["stv"]
    assert icl4["ci_low"] > zero["ci_high"], results
    assert stv["ci_low"] > zero["ci_high"], results
    assert stv["accuracy"] - zero["accuracy"] >= 0.2, results
    assert (tmp_path / "demo" / "results.json").exists() and (tmp_path / "demo" / "sensitivity.png").exists()
