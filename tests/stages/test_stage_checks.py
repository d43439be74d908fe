"""Every stage checks item text and the context budget before its first forward (tiny LLaVA, 512 positions)."""

from __future__ import annotations

import json
import random

import pytest

from stvcli.config import ModelOptions
from stvcli.data.loading import load_task_data
from stvcli.data.options import DataOptions
from stvcli.data.synthetic import write_vqa_jsonl
from stvcli.errors import DataError
from stvcli.stages import bank as bank_module
from stvcli.stages import evaluate as evaluate_module
from stvcli.stages import mtv as mtv_module
from stvcli.stages import scan as scan_module
from stvcli.stages import search as search_module
from stvcli.stages.bank import run_bank
from stvcli.stages.common import check_inputs, get_adapter
from stvcli.stages.config import BankConfig, EvalConfig, MTVConfig, ScanConfig, SearchConfig
from stvcli.stages.scan import many_shot_prompts, run_scan
from stvcli.stages.search import run_search
from stvcli.workspace import Workspace


def scan_config(model, data, workspace, **kw) -> ScanConfig:
    settings = dict(shots=3, queries=8, top_k=5, seed=1, keep_contexts=8, batch_size=3, quiet=True)
    return ScanConfig(model=model, data=data, workspace=workspace, **{**settings, **kw})


class Reached(Exception):
    """Raised by the spy: the stage called its check (and no forward has run)."""


@pytest.fixture
def no_forward(bed, monkeypatch):
    """The bed model, whose forward fails the test if any stage reaches it."""
    adapter = get_adapter(bed["model"])

    def forward(*args, **kwargs):
        raise AssertionError("a forward ran before the check")

    monkeypatch.setattr(adapter.model, "forward", forward)
    return adapter


def _with_record(tmp_path, record: dict) -> DataOptions:
    """A support file of 30 VQA items plus ``record`` (image of item 0), a separate eval file."""
    support = write_vqa_jsonl(tmp_path / "support", n=30, seed=5, name="support.jsonl")
    with open(support, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"question_id": "long", "image": "images/vqa_5_0000.png", **record}) + "\n")
    evaluation = write_vqa_jsonl(tmp_path / "eval", n=6, seed=6, name="eval.jsonl")
    return DataOptions(task="vqa", data=str(support), eval_data=str(evaluation))


def test_scan_refuses_an_over_long_question_before_any_forward(bed, tmp_path, no_forward):
    data = _with_record(tmp_path, {"question": "why " * 5000, "answers": ["x"]})
    with pytest.raises(DataError, match=r"^scan: item support\.jsonl/long's (zero-shot prompt|prompt with its answer) is \d+ tokens "
                                        r"\(a 19999-character question\); the model takes 512; shorten or remove it"):
        run_scan(scan_config(bed["model"], data, tmp_path / "ws"))


def test_scan_refuses_an_image_placeholder_in_a_question(bed, tmp_path, no_forward):
    data = _with_record(tmp_path, {"question": "what does <image> show?", "answers": ["x"]})
    with pytest.raises(DataError, match=r"item support\.jsonl/long's question contains '<image>'"):
        run_scan(scan_config(bed["model"], data, tmp_path / "ws"))


def test_scan_with_too_many_shots_names_the_shots_that_fit(bed, tmp_path, no_forward, monkeypatch):
    with pytest.raises(DataError, match=r"^scan: 20 shots can need \d+ tokens .* the model takes 512; use --shots (\d+) or fewer$") as error:
        run_scan(scan_config(bed["model"], bed["data"], tmp_path / "ws", shots=20))
    fits = int(error.value.args[0].rsplit("--shots ", 1)[1].split()[0])
    assert 3 <= fits < 20
    # the suggestion passes the check, and every prompt that scan then builds fits
    reached = []

    def scan_pass(*args, **kwargs):
        reached.append(args)
        raise Reached

    monkeypatch.setattr(scan_module, "scan_pass", scan_pass)
    with pytest.raises(Reached):
        run_scan(scan_config(bed["model"], bed["data"], tmp_path / "ws", shots=fits))
    assert reached
    _, zero_prompts, many_prompts = reached[0][:3]
    assert max(no_forward.token_counts(list(many_prompts) + list(zero_prompts))) <= 512


def test_relative_paths_work_from_another_directory(bed, tmp_path, monkeypatch):
    """Settings recorded by the scan rebuild the options for the bank's extra contexts."""
    monkeypatch.chdir(bed["root"])
    model = ModelOptions(model="model", dtype="float32", device="cpu")
    data = DataOptions(task="vqa", data=str(bed["data"].data).replace(f"{bed['root']}/", ""), seed=0, eval_limit=12)
    assert model.model == str(bed["root"] / "model") and data.data == bed["data"].data
    workspace = tmp_path / "ws"
    run_scan(scan_config(model, data, workspace))
    monkeypatch.chdir(tmp_path)
    result = run_bank(BankConfig(workspace=workspace, clusters=4, contexts=10, quiet=True, batch_size=2))
    assert result.counts.sum(1).tolist() == [10] * 5


def spy_on(monkeypatch, module) -> list[dict]:
    calls: list[dict] = []

    def spy(adapter, task, queries, pool=(), shots=0, **kwargs):
        calls.append({"queries": list(queries), "pool": list(pool), "shots": shots, **kwargs,
                      "tokens": check_inputs(adapter, task, queries, pool, shots, **kwargs)})
        raise Reached

    monkeypatch.setattr(module, "check_inputs", spy)
    return calls


def test_bank_search_mtv_and_eval_check_before_their_forwards(bed, tmp_path, monkeypatch):
    workspace = tmp_path / "ws"
    run_scan(scan_config(bed["model"], bed["data"], workspace))
    adapter = get_adapter(bed["model"])

    calls = spy_on(monkeypatch, bank_module)
    with pytest.raises(Reached):
        run_bank(BankConfig(workspace=workspace, clusters=4, contexts=11, quiet=True))  # 3 new contexts
    (bank,) = calls
    assert bank["stage"] == "bank" and bank["shots"] == 3 and len(bank["queries"]) == 3 and "--shots {n}" in bank["fix"]
    assert 0 < bank["tokens"] <= 512

    monkeypatch.undo()
    run_bank(BankConfig(workspace=workspace, clusters=4, contexts=8, quiet=True))
    calls = spy_on(monkeypatch, search_module)
    with pytest.raises(Reached):
        run_search(SearchConfig(workspace=workspace, iterations=2, samples=4, quiet=True))
    (search,) = calls
    assert search["stage"] == "search" and search["answers"] and search["shots"] == 0
    scanned = set(Workspace(workspace).load("scan").meta["extra"]["query_uids"])
    assert len(search["queries"]) == len(load_task_data(bed["data"]).support) - len(scanned)

    calls = spy_on(monkeypatch, mtv_module)
    with pytest.raises(Reached):
        mtv_module.run_mtv(workspace, adapter, load_task_data(bed["data"]),
                           MTVConfig(iterations=2, samples=4, holdout=4, best_of=2), quiet=True)
    assert calls[0]["stage"] == "mtv" and calls[0]["answers"]

    calls = spy_on(monkeypatch, evaluate_module)
    with pytest.raises(Reached):
        evaluate_module.run_eval(EvalConfig(workspace=workspace, methods=["zero-shot"], limit=3, quiet=True,
                                            output_path=tmp_path / "out"))
    (evaluation,) = calls
    assert evaluation["stage"] == "eval" and len(evaluation["queries"]) == 3 and evaluation["reserve"] == 20


@pytest.mark.parametrize("seed, shots", [(0, 6), (1, 3), (2, 12), (3, 1)])
def test_the_worst_case_bounds_the_prompts_scan_draws(bed, seed, shots):
    adapter = get_adapter(bed["model"])
    data = load_task_data(bed["data"])
    rng = random.Random(seed)
    queries = rng.sample(data.support, 8)
    bound = check_inputs(adapter, data.task, queries, data.support, shots, stage="scan")
    prompts = many_shot_prompts(data.task, queries, data.support, shots, rng)
    assert max(adapter.token_counts(prompts)) <= bound


def test_the_worst_case_bounds_text_prompts_of_mixed_lengths(tiny):
    from stvcli.data.tasks import get_task
    from stvcli.data.types import Item

    adapter, task = tiny("llama"), get_task("text")
    words = "the quick brown fox jumps over the lazy dog red green blue one two three".split()
    rng = random.Random(7)
    pool = [Item(f"t/{i}", " ".join(rng.choices(words, k=rng.randint(1, 15))), (rng.choice(words),)) for i in range(60)]
    for seed in range(4):
        draw = random.Random(seed)
        queries = draw.sample(pool, 10)
        bound = check_inputs(adapter, task, queries, pool, 8, stage="scan")
        assert max(adapter.token_counts(many_shot_prompts(task, queries, pool, 8, draw))) <= bound
