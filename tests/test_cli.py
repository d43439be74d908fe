"""The CLI: listings, --json, and one-line errors (exit 2, no traceback) for user mistakes."""

from __future__ import annotations

import json

import pytest

from stvcli import __version__
from stvcli.testing.cli import assert_one_line_error, invoke



def test_version():
    assert invoke("--version").output.strip() == f"stv {__version__}"


def test_models_lists_families_as_json():
    rows = json.loads(invoke("models", "--json").output)["models"]
    names = {row["name"] for row in rows}
    assert {"idefics2", "qwen2-vl", "qwen2.5-vl", "idefics3", "smolvlm", "llava", "qwen-vl"} <= names
    assert all(row["family"] and row["architectures"] for row in rows)


def test_tasks_lists_metrics_and_shots():
    rows = {row["name"]: row for row in json.loads(invoke("tasks", "--json").output)["tasks"]}
    assert rows["vizwiz"]["metric"] == "vqa_accuracy" and rows["vizwiz"]["default_shots"] == 16
    assert rows["flowers"]["kind"] == "episode"


def test_stage_without_upstream_is_one_line(tmp_path):
    assert_one_line_error(invoke("bank", "-w", str(tmp_path)), "run `stv scan` first")
    assert_one_line_error(invoke("search", "-w", str(tmp_path)), "run `stv bank` first")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["eval", "-w", "W", "--methods", "foo"], "unknown method"),
        (["eval", "-w", "W", "--methods", "icl:0"], "icl:N"),
        (["eval"], "--workspace or --vectors"),
        (["bank", "-w", "W", "--clusters", "8", "--contexts", "4"], "T >= M"),
        (["search", "-w", "W", "--samples", "1"], "at least 2"),
        (["scan", "--model", "m", "-w", "W", "--top-k", "3", "--top-frac", "0.1", "--data", "x.jsonl"], "not both"),
        (["scan", "--model", "m", "-w", "W", "--batch-size", "zero"], "--batch-size"),
        (["scan", "--model", "m", "-w", "W", "--task", "text", "--data", "/nope/data.jsonl"], "no such file"),
        (["scan", "--model", "m", "-w", "W", "--task", "nonexistent-task"], "nonexistent-task"),
        (["demo", "-w", "W", "--insert", "foo"], "'replace' or 'add'"),
        (["demo", "-w", "W", "--sensitivity", "foo"], "'l2', 'relative' or 'layer'"),
    ],
)
def test_user_mistakes_are_one_line(tmp_path, args, fragment):
    args = [str(tmp_path / "W") if a == "W" else a for a in args]
    assert_one_line_error(invoke(*args), fragment)
    assert not (tmp_path / "W").exists()  # refused before any stage wrote anything


def test_offline_hub_model_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from stvcli.data.synthetic import write_text_jsonl

    data = write_text_jsonl(tmp_path, [(f"w{i}", f"v{i}") for i in range(20)])
    result = invoke("scan", "--model", "some-org/not-here", "-w", str(tmp_path / "W"), "--task", "text",
                    "--data", str(data))
    assert_one_line_error(result, "some-org/not-here")


@pytest.mark.parametrize(
    "loc, flag",
    [(("mtv", "threshold"), "--mtv-threshold"), (("top_frac",), "--top-frac"), (("data", "eval_limit"), "--eval-limit"),
     (("model", "model"), "--model"), (("model", "max_memory"), "--max-memory"), (("methods", 0), "--methods"), ((), "")],
)
def test_flag_name_is_the_option_the_user_typed(loc, flag):
    from stvcli.cli import flag_name

    assert flag_name(loc) == flag


def test_validation_message_names_the_flag_and_the_value():
    from pydantic import ValidationError

    from stvcli.cli import validation_message
    from stvcli.stages.config import EvalConfig, SearchConfig

    with pytest.raises(ValidationError) as caught:
        SearchConfig(workspace="w", lr=-1)
    assert validation_message(caught.value) == "--lr must be greater than 0, not -1"
    with pytest.raises(ValidationError) as caught:
        EvalConfig(workspace="w", mtv={"threshold": 1.5})
    assert validation_message(caught.value).startswith("--mtv-threshold must be less than 1")
