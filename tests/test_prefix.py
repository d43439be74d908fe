"""Shared-prefix forwards (stvcli.prefix) against the straightforward full forwards, on every tiny family."""

from __future__ import annotations

import pytest
import torch

from stvcli.engine import Intervention, all_locations, capturing
from stvcli.models.qwen_vl import QwenVLAdapter
from stvcli.models.text import GenericAdapter
from stvcli.prefix import (
    can_share_prefix,
    capture_shared,
    run_prefix,
    shared_text_prefix,
    step,
    straightforward,
)
from stvcli.prompt import Prompt
from stvcli.scoring import shared_answer_scores
from stvcli.testing.tiny import TINY_FAMILIES, VISION_FAMILIES, group_prompts, per_row_scores, tiny_image

ATOL = 1e-4
ANSWERS = [" red", " cold banana", " yes"]


def candidates(adapter, n: int, mode: str = "replace", seed: int = 0, write_at: str = "every") -> Intervention:
    generator = torch.Generator().manual_seed(seed)
    locations = all_locations(adapter.n_layers, adapter.n_heads)
    vectors = torch.randn(n, len(locations), adapter.head_dim, generator=generator)
    row_mask = torch.rand(n, len(locations), generator=generator) > 0.5
    return Intervention(locations, vectors, mode, row_mask, write_at)


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("mode, write_at", [("replace", "every"), ("add", "every"), ("replace", "prompt")])
def test_shared_scores_equal_full_forwards(family, mode, write_at, tiny, tiny_prompts):
    adapter = tiny(family)
    assert can_share_prefix(adapter), f"{family} should share prefixes (prefix_sharing)"
    prompts = tiny_prompts(family)
    cands = candidates(adapter, 3, mode, write_at=write_at)
    first_ref, total_ref = per_row_scores(adapter, prompts, ANSWERS, cands, 3)
    first_only = shared_answer_scores(adapter, prompts, ANSWERS, cands, 3)
    full = shared_answer_scores(adapter, prompts, ANSWERS, cands, 3, full_answer=True, batch_size=4)
    assert torch.allclose(first_only.first_token, first_ref, atol=ATOL)
    assert torch.allclose(full.first_token, first_ref, atol=ATOL)
    assert torch.allclose(full.total, total_ref, atol=ATOL)
    single = first_only.n_tokens == 1
    assert torch.allclose(first_only.total[single], total_ref[single], atol=ATOL)
    assert torch.isnan(first_only.total[~single]).all()
    # the candidates really differ (the vectors were inserted in the step)
    assert first_ref.view(3, 3).std(1).min() > 1e-4


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_capture_shared_equals_full_capture(family, tiny):
    adapter = tiny(family)
    prompts = group_prompts(family)
    prefix = shared_text_prefix(prompts)
    assert prefix is not None and prefix.text.endswith("\n")
    assert len(prefix.images) == (3 if family in VISION_FAMILIES else 0)
    locations = all_locations(adapter.n_layers, adapter.n_heads)[::3]
    for where in (None, locations):
        got = capture_shared(adapter, prompts, prefix, where)
        assert got is not None
        expected = []
        for prompt in prompts:
            with capturing(adapter, where) as capture, torch.inference_mode():
                adapter.model(**adapter.encode([prompt]), use_cache=False)
            expected.append(capture.result())
        assert torch.allclose(got, torch.cat(expected), atol=ATOL)


def test_prefix_cache_is_not_mutated_by_steps(tiny, tiny_prompts):
    adapter = tiny("llama")
    inputs = adapter.encode(tiny_prompts("llama"))
    state = run_prefix(adapter, inputs, 1)
    before = [layer.keys.clone() for layer in state.cache.layers]
    length = state.cache.get_seq_length()
    first = step(adapter, state, torch.tensor([0, 0, 1, 2]), keep=1)
    second = step(adapter, state, torch.tensor([2, 1, 0]), keep=1)
    assert state.cache.get_seq_length() == length
    assert all(torch.equal(b, layer.keys) for b, layer in zip(before, state.cache.layers, strict=True))
    assert torch.allclose(first[[0, 2, 3]], second[[2, 1, 0]], atol=1e-5)


def test_boundary_that_splits_a_token_is_refused(tiny):
    adapter = tiny("llama")
    prompts = [Prompt("Question: what colour is the fox? Answer:"), Prompt("Question: what colour is the dog? Answer:")]
    assert capture_shared(adapter, prompts, Prompt("Question: what col")) is None  # "colour" is one token
    assert capture_shared(adapter, prompts, Prompt("Question: what colour is the ")) is None  # " fox" too
    assert capture_shared(adapter, prompts, Prompt("Question: what colour is the")) is not None


def test_prompt_ending_in_image_tokens_is_refused(tiny):
    adapter = tiny("llava")
    inputs = adapter.encode([Prompt("Look: <image>", (tiny_image(0),))])
    assert run_prefix(adapter, inputs, 1) is None


def test_fallback_flag_and_straightforward_switch(tiny, monkeypatch):
    import stvcli.stages.reinforce as reinforce
    from stvcli.data.tasks import get_task
    from stvcli.data.types import Item
    from stvcli.stages.common import Meter
    from stvcli.testing.tiny import tiny_adapter

    adapter = tiny_adapter("llama")
    task = get_task("text")
    queries = [Item(uid="a", question="hot", answers=("cold",)), Item(uid="b", question="big", answers=("small",))]
    cands = candidates(adapter, 4)
    shared = reinforce.candidate_rewards(adapter, task, queries, cands, 4, "first-token", Meter(), None)
    with straightforward():
        assert not can_share_prefix(adapter)
        full = reinforce.candidate_rewards(adapter, task, queries, cands, 4, "first-token", Meter(), None)
    assert torch.allclose(shared, full, atol=ATOL)

    def refuse(*args, **kwargs):
        raise AssertionError("the shared path must not run for this adapter")

    monkeypatch.setattr(reinforce, "shared_answer_scores", refuse)
    adapter.prefix_sharing = False  # an adapter (family) that cannot share its prefix exactly
    assert not can_share_prefix(adapter)
    fallback = reinforce.candidate_rewards(adapter, task, queries, cands, 4, "first-token", Meter(), None)
    assert torch.allclose(fallback, full, atol=ATOL)
    assert not GenericAdapter.prefix_sharing and not QwenVLAdapter.prefix_sharing
