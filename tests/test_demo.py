"""`stv demo`'s wiring on a tiny random LLaVA (the real shapes model is the slow tier)."""

from __future__ import annotations

import json

import pytest

from stvcli.artifacts import load_artifact
from stvcli.demo import DemoConfig, demo_sizes, run_demo
from stvcli.testing.tiny import save_tiny_model


@pytest.fixture
def tiny_shapes_model(tmp_path, monkeypatch):
    directory = save_tiny_model("llava", tmp_path / "tiny-llava")
    calls = []

    def fake_ensure(backbone, cache=None, **kwargs):
        calls.append(backbone)
        calls.append(kwargs.get("settings"))
        return directory

    monkeypatch.setattr("stvcli.shapes.build.ensure_shapes_model", fake_ensure)
    return calls


def test_quick_sizes_are_smaller_than_the_default() -> None:
    quick, full = demo_sizes(True), demo_sizes(False)
    assert quick.keys() == full.keys()
    assert all(quick[k] <= full[k] for k in full)
    assert full["mtv_iterations"] == 100 and full["eval_items"] == 60


def test_demo_runs_every_stage_and_method(tmp_path, tiny_shapes_model) -> None:
    workspace = tmp_path / "demo"
    report = run_demo(DemoConfig(workspace=workspace, quick=True, quiet=True, backbone="smollm2",
                                 task="shapes-size", mtv_iterations=3))
    assert tiny_shapes_model == ["smollm2", None]  # the default build
    results = report["results"]["shapes-size"]
    methods = list(results)
    assert methods[:4] == ["zero-shot", "icl:1", "icl:2", "icl:4"]
    assert int(methods[4].split(":")[1]) >= 5  # icl:max
    assert methods[5:] == ["mtv", "stv", "mean-at-stv"]
    assert all(r["n"] == demo_sizes(True)["eval_items"] for r in results.values())
    for name in ("scan", "bank", "vectors", "mtv"):
        assert (workspace / f"{name}.safetensors").exists()
    assert load_artifact(workspace / "mtv.safetensors", "mtv").settings["iterations"] == 3
    # the demo's default: --auto on scan and search, its choices recorded with the reasons
    scan = load_artifact(workspace / "scan.safetensors", "scan")
    assert scan.settings["auto"] and scan.meta["extra"]["auto"]["why"]
    vectors = load_artifact(workspace / "vectors.safetensors", "vectors")
    assert vectors.settings["auto"] and vectors.meta["extra"]["insert"] == vectors.meta["extra"]["auto"]["insert"]
    written = json.loads((workspace / "results.json").read_text())
    assert written["results"] == json.loads(json.dumps(report["results"]))
    assert (workspace / "sensitivity.png").exists() and (workspace / "accuracy.png").exists()


def test_build_seed_builds_the_shapes_model_with_that_seed(tmp_path, monkeypatch) -> None:
    from stvcli.shapes.build import TrainSettings, shapes_model_dir

    seen = []

    class Stop(Exception):
        pass

    def fake_ensure(backbone, cache=None, **kwargs):
        seen.append(kwargs.get("settings"))
        raise Stop

    monkeypatch.setattr("stvcli.shapes.build.ensure_shapes_model", fake_ensure)
    with pytest.raises(Stop):
        run_demo(DemoConfig(workspace=tmp_path / "demo", quick=True, quiet=True, build_seed=3))
    assert seen == [TrainSettings(seed=3)]
    assert shapes_model_dir("gemma3", tmp_path, TrainSettings(seed=3)) != shapes_model_dir("gemma3", tmp_path)
