"""scoring.generate_each: several interventions on the same prompts, prompt prefix computed
once (issue 17), equal to one generate per intervention on every tiny family."""

from __future__ import annotations

import pytest
import torch

from stvcli.engine import Intervention
from stvcli.prefix import straightforward, truncate_cache
from stvcli.scoring import generate, generate_each
from stvcli.testing.tiny import TINY_FAMILIES, group_prompts, tiny_adapter

#: Families whose positions the model derives from the whole sequence (3-D M-RoPE): full generates.
MROPE = {"qwen2-vl", "qwen2.5-vl"}


def _interventions(adapter, seed=0):
    generator = torch.Generator().manual_seed(seed)
    locations = torch.tensor([[0, 1], [1, 2], [1, 0]])
    return [None,
            Intervention(locations, 3 * torch.randn(3, adapter.head_dim, generator=generator)),
            Intervention(locations, 3 * torch.randn(3, adapter.head_dim, generator=generator), "add"),
            Intervention(locations, 3 * torch.randn(3, adapter.head_dim, generator=generator), write_at="prompt")]


def _prompt_widths(adapter, fn):
    """Width of the input_ids of every model forward ``fn`` runs."""
    widths = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]
        widths.append(ids.shape[1])

    handle = adapter.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        out = fn()
    finally:
        handle.remove()
    return out, widths


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_generate_each_equals_one_generate_per_intervention(family):
    adapter = tiny_adapter(family)
    prompts = group_prompts(family)
    interventions = _interventions(adapter)
    expected = [generate(adapter, prompts, 6, intervention) for intervention in interventions]
    assert expected[1] != expected[0]  # the vectors change the generations: the comparison means something
    got, widths = _prompt_widths(adapter, lambda: generate_each(adapter, prompts, 6, interventions))
    assert got == expected
    prefills = [w for w in widths if w > 1]
    # one prefill of the whole prompt; the other interventions start at its last token
    assert len(prefills) == (len(interventions) if family in MROPE else 1)


def test_straightforward_runs_one_full_generate_each():
    adapter = tiny_adapter("llava")
    prompts = group_prompts("llava")
    with straightforward():
        got, widths = _prompt_widths(adapter, lambda: generate_each(adapter, prompts, 4, _interventions(adapter)))
    assert len([w for w in widths if w > 1]) == len(_interventions(adapter))
    assert got == [generate(adapter, prompts, 4, i) for i in _interventions(adapter)]


def test_generate_each_stops_as_generate_does():
    adapter = tiny_adapter("llama")
    prompts = group_prompts("llama")
    final = lambda text: len(text) >= 3  # noqa: E731
    expected = [generate(adapter, prompts, 12, i, final) for i in _interventions(adapter)]
    assert generate_each(adapter, prompts, 12, _interventions(adapter), final) == expected


def test_truncate_cache_copies_the_first_columns_and_leaves_the_cache_alone():
    from transformers import DynamicCache

    cache = DynamicCache()
    keys = torch.randn(2, 1, 5, 4)
    values = torch.randn(2, 1, 5, 4)
    cache.update(keys.clone(), values.clone(), 0)
    cut = truncate_cache(cache, 3)
    assert torch.equal(cut.layers[0].keys, keys[..., :3, :]) and torch.equal(cut.layers[0].values, values[..., :3, :])
    cut.update(torch.zeros(2, 1, 1, 4), torch.zeros(2, 1, 1, 4), 0)
    assert torch.equal(cache.layers[0].keys, keys) and cache.get_seq_length() == 5 and cut.get_seq_length() == 4
    assert truncate_cache(cache, 6) is None  # fewer columns than asked


def test_truncate_cache_refuses_a_sliding_layer_that_dropped_columns():
    from transformers.cache_utils import DynamicSlidingWindowLayer

    class Holder:
        layers: list

    layer = DynamicSlidingWindowLayer(sliding_window=4)
    layer.update(torch.randn(1, 1, 6, 2), torch.randn(1, 1, 6, 2))  # 6 columns seen, 3 kept
    holder = Holder()
    holder.layers = [layer]
    assert truncate_cache(holder, 2) is None
    short = DynamicSlidingWindowLayer(sliding_window=8)
    short.update(torch.randn(1, 1, 5, 2), torch.randn(1, 1, 5, 2))
    holder.layers = [short]
    cut = truncate_cache(holder, 3)
    assert cut.layers[0].keys.shape[-2] == 3 and cut.layers[0].cumulative_length == 3
