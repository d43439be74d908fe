"""The optimised paths give the straightforward paths' results on the same seeds (tiny LLaVA).

Optimised: shared-prefix scoring in both searches, grouped many-shot prefixes and a
streamed scan. Straightforward: ``stvcli.prefix.straightforward()`` (a full forward per
row, everything held), the way MTV's code works.
"""

from __future__ import annotations

import pytest
import torch

import stvcli.prefix as prefix_module
from stvcli.artifacts import load_artifact
from stvcli.data.loading import load_task_data
from stvcli.prefix import straightforward
from stvcli.stages.bank import run_bank
from stvcli.stages.common import Meter, get_adapter
from stvcli.workspace import Workspace
from stvcli.stages.config import BankConfig, MTVConfig, ScanConfig, SearchConfig
from stvcli.stages.mtv import run_mtv
from stvcli.stages.scan import capture_prompts, many_shot_prompts, scan_pass, sensitivity_scores
from stvcli.stages.search import run_search

ATOL = 1e-4


def scan_config(bed, workspace, **kw) -> ScanConfig:
    return ScanConfig(model=bed["model"], data=bed["data"], workspace=workspace, shots=3, queries=8, top_k=5,
                      seed=1, keep_contexts=8, batch_size=3, quiet=True, **kw)


def scanned_and_banked(bed, workspace, **scan_kw):
    scan = run_scan_once(bed, workspace, **scan_kw)
    bank = run_bank(BankConfig(workspace=workspace, clusters=4, contexts=8, quiet=True))
    return scan, bank


def run_scan_once(bed, workspace, **kw):
    from stvcli.stages.scan import run_scan

    return run_scan(scan_config(bed, workspace, **kw))


def test_grouped_scan_and_bank_equal_straightforward(bed, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = prefix_module.capture_shared

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(prefix_module, "capture_shared", counting)
    fast_scan, fast_bank = scanned_and_banked(bed, tmp_path / "fast", group_size=4)
    assert calls["n"] == 2  # 8 queries in 2 groups of 4, each group's prefix encoded once
    with straightforward():
        slow_scan, slow_bank = scanned_and_banked(bed, tmp_path / "slow", group_size=4)
    assert calls["n"] == 2
    assert torch.allclose(fast_scan.scores, slow_scan.scores, atol=ATOL)
    assert torch.equal(fast_scan.locations, slow_scan.locations)
    assert fast_scan.stats["forwards"] == slow_scan.stats["forwards"] == 16
    fast_kept = load_artifact(Workspace(tmp_path / "fast").path("activations"), "activations")["activations"]
    slow_kept = load_artifact(Workspace(tmp_path / "slow").path("activations"), "activations")["activations"]
    assert torch.allclose(fast_kept, slow_kept, atol=ATOL)
    assert torch.allclose(fast_bank.bank, slow_bank.bank, atol=ATOL)
    assert torch.equal(fast_bank.counts, slow_bank.counts)


def test_group_size_one_draws_the_papers_prompts(bed):
    import random

    data = load_task_data(bed["data"])
    queries = data.support[:6]
    independent = many_shot_prompts(data.task, queries, data.support, 3, random.Random(5))
    assert many_shot_prompts(data.task, queries, data.support, 3, random.Random(5), group_size=1) == independent
    grouped = many_shot_prompts(data.task, queries, data.support, 3, random.Random(5), group_size=3)
    heads = [p.text.rsplit("\n", 1)[0] for p in grouped]
    assert heads[0] == heads[1] == heads[2] != heads[3] == heads[4] == heads[5]
    rng = random.Random(5)  # each group draws once, from the pool without the group's own queries
    for start in (0, 3):
        group = queries[start : start + 3]
        uids = {q.uid for q in group}
        demonstrations = rng.sample([item for item in data.support if item.uid not in uids], 3)
        assert grouped[start : start + 3] == [data.task.build_prompt(q, demonstrations) for q in group]


def test_streamed_scan_pass_equals_holding_everything(bed):
    import random

    adapter = get_adapter(bed["model"])
    data = load_task_data(bed["data"])
    queries = data.support[:7]
    zero_prompts = [data.task.build_prompt(q) for q in queries]
    many_prompts = many_shot_prompts(data.task, queries, data.support, 3, random.Random(2))
    swept = scan_pass(adapter, zero_prompts, many_prompts, Meter(), 3, keep=4)
    zero = capture_prompts(adapter, zero_prompts, Meter(), 3)
    many = capture_prompts(adapter, many_prompts, Meter(), 3)
    for mode in ("l2", "relative", "layer"):
        assert torch.equal(swept.query_scores[mode], sensitivity_scores(zero, many, mode)), mode
    assert torch.allclose(swept.zero_sum, zero.sum(0), atol=1e-5)
    assert torch.allclose(swept.many_sum, many.sum(0), atol=1e-5)
    assert torch.equal(swept.kept, many[:4])


@pytest.mark.parametrize("reward", ["first-token", "answer"])
def test_search_makes_the_same_choices(bed, tmp_path, reward):
    workspace = tmp_path / "ws"
    scanned_and_banked(bed, workspace)
    config = SearchConfig(workspace=workspace, iterations=4, samples=6, quiet=True, reward=reward,
                          queries_per_iteration=2, select="best-of", holdout=6, best_of=3)
    fast = run_search(config)
    with straightforward():
        slow = run_search(config.model_copy(update={"force": True}))
    assert torch.equal(fast.choices, slow.choices)
    assert torch.allclose(fast.logits, slow.logits, atol=ATOL)
    assert torch.allclose(torch.tensor(fast.rewards), torch.tensor(slow.rewards), atol=ATOL)
    assert fast.stats["forwards"] == slow.stats["forwards"]


def test_mtv_search_selects_the_same_heads(bed, tmp_path):
    workspace = tmp_path / "ws"
    run_scan_once(bed, workspace)
    adapter = get_adapter(bed["model"])
    data = load_task_data(bed["data"])
    config = MTVConfig(iterations=3, samples=6, holdout=4, best_of=3)
    fast = run_mtv(workspace, adapter, data, config, quiet=True)
    with straightforward():
        slow = run_mtv(workspace, adapter, data, config, quiet=True, force=True)
    assert torch.equal(fast.locations, slow.locations)
    assert torch.allclose(fast.logits, slow.logits, atol=ATOL)
