"""Capture and insertion on every tiny family, checked against o_proj inputs read independently.

The reference is a forward pre-hook of our own on the decoder's ``...layers.N.self_attn.
o_proj`` (path written out per family below, not taken from the adapter), registered
after the engine's hooks so it sees what the projection really receives.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from stvcli.engine import Intervention, all_locations, applied, capturing, inserting
from stvcli.testing.tiny import TINY_FAMILIES, recording_inputs

DECODER_LAYERS = {
    "llama": "model.layers",
    "qwen2": "model.layers",
    "gemma3": "model.layers",
    "idefics2": "model.text_model.layers",
    "idefics3": "model.text_model.layers",
    "qwen2-vl": "model.language_model.layers",
    "qwen2.5-vl": "model.language_model.layers",
    "llava": "model.language_model.layers",
}
ATOL = 1e-5

pytestmark = pytest.mark.parametrize("family", TINY_FAMILIES)


def o_proj(adapter, family: str, layer: int) -> torch.nn.Module:
    return adapter.model.get_submodule(f"{DECODER_LAYERS[family]}.{layer}.self_attn.o_proj")


@contextmanager
def recording(adapter, family: str) -> Iterator[list[list[torch.Tensor]]]:
    """Per layer, the o_proj input of every forward call: [B, T, H * D] each."""
    with recording_inputs([o_proj(adapter, family, layer) for layer in range(adapter.n_layers)]) as calls:
        yield calls


def forward(adapter, inputs) -> torch.Tensor:
    with torch.no_grad():
        return adapter.model(**inputs).logits


def plain_inputs(adapter, family: str, inputs) -> list[torch.Tensor]:
    """o_proj inputs per layer of one plain forward: [B, T, H * D]."""
    with recording(adapter, family) as calls:
        forward(adapter, inputs)
    return [layer_calls[0] for layer_calls in calls]


def head(x: torch.Tensor, h: int, d: int) -> torch.Tensor:
    return x[..., h * d : (h + 1) * d]


def no_hooks_left(adapter) -> bool:
    return all(not p._forward_pre_hooks for p in adapter.projections)


def test_projections_are_the_decoder_o_projs(family, tiny):
    adapter = tiny(family)
    assert adapter.n_layers == 2
    assert all(adapter.projections[l] is o_proj(adapter, family, l) for l in range(adapter.n_layers))
    assert adapter.projections[0].in_features == adapter.n_heads * adapter.head_dim


def test_capture_all_heads_equals_o_proj_input(family, tiny, tiny_prompts):
    adapter = tiny(family)
    inputs = adapter.encode(tiny_prompts(family))
    with recording(adapter, family) as calls, capturing(adapter) as capture:
        forward(adapter, inputs)
    acts = capture.result()  # [B, L, H, D]
    batch = inputs["input_ids"].shape[0]
    assert acts.shape == (batch, adapter.n_layers, adapter.n_heads, adapter.head_dim)
    assert acts.dtype == torch.float32
    for layer in range(adapter.n_layers):
        expected = calls[layer][0][:, -1].reshape(batch, adapter.n_heads, adapter.head_dim)
        assert torch.equal(acts[:, layer], expected)
    assert no_hooks_left(adapter)


def test_capture_selected_locations_in_order(family, tiny, tiny_prompts):
    adapter = tiny(family)
    inputs = adapter.encode(tiny_prompts(family))
    locations = torch.tensor([[1, 3], [0, 0], [1, 0], [0, 2]])
    with capturing(adapter) as full:
        forward(adapter, inputs)
    with capturing(adapter, locations) as some:
        forward(adapter, inputs)
    got = some.result()
    assert got.shape == (inputs["input_ids"].shape[0], 4, adapter.head_dim)
    expected = full.result()[:, locations[:, 0], locations[:, 1]]
    assert torch.equal(got, expected)


def test_no_intervention_is_bit_identical_and_hooks_go(family, tiny, tiny_prompts):
    adapter = tiny(family)
    inputs = adapter.encode(tiny_prompts(family))
    plain = forward(adapter, inputs)
    with applied(adapter, None):
        assert torch.equal(forward(adapter, inputs), plain)
    with capturing(adapter):
        assert torch.equal(forward(adapter, inputs), plain)
    # Writing each head's own value back changes nothing either.
    locations = all_locations(adapter.n_layers, adapter.n_heads)
    with capturing(adapter, locations) as capture:
        forward(adapter, inputs)
    with inserting(adapter, locations, capture.result()):
        assert torch.equal(forward(adapter, inputs), plain)
    assert no_hooks_left(adapter)
    with pytest.raises(RuntimeError, match="boom"):
        with inserting(adapter, locations[:3], torch.zeros(3, adapter.head_dim)), capturing(adapter):
            raise RuntimeError("boom")
    assert no_hooks_left(adapter)
    assert torch.equal(forward(adapter, inputs), plain)


def test_replace_one_head_changes_only_that_slice(family, tiny, tiny_prompts):
    adapter = tiny(family)
    d = adapter.head_dim
    inputs = adapter.encode(tiny_prompts(family))
    before = plain_inputs(adapter, family, inputs)
    vector = torch.randn(1, d, generator=torch.Generator().manual_seed(0))
    layer, h = 1, 2
    with inserting(adapter, torch.tensor([[layer, h]]), vector), recording(adapter, family) as calls:
        forward(adapter, inputs)
    after = [c[0] for c in calls]
    assert torch.equal(after[0], before[0])  # earlier layers untouched
    changed = after[layer]
    assert torch.equal(head(changed[:, -1], h, d), vector.expand(changed.shape[0], d))
    expected = before[layer].clone()
    expected[:, -1, h * d : (h + 1) * d] = vector
    assert torch.equal(changed, expected)  # nothing else at that layer moved


def test_batched_equals_per_row(family, tiny, tiny_prompts):
    adapter = tiny(family)
    prompts = tiny_prompts(family)
    inputs = adapter.encode(prompts)
    assert (inputs["attention_mask"][:, 0] == 0).any(), "the batch should need left padding"
    locations = torch.tensor([[0, 1], [1, 3]])
    vectors = torch.randn(len(prompts), 2, adapter.head_dim, generator=torch.Generator().manual_seed(1))
    with capturing(adapter) as batched:
        forward(adapter, inputs)
    with inserting(adapter, locations, vectors):
        batched_logits = forward(adapter, inputs)[:, -1]
    for row, prompt in enumerate(prompts):
        alone = adapter.encode([prompt])
        with capturing(adapter) as single:
            forward(adapter, alone)
        torch.testing.assert_close(batched.result()[row], single.result()[0], atol=ATOL, rtol=0)
        with inserting(adapter, locations, vectors[row]):
            row_logits = forward(adapter, alone)[0, -1]
        torch.testing.assert_close(batched_logits[row], row_logits, atol=ATOL, rtol=0)


def test_per_row_vectors_apply_to_their_row(family, tiny, tiny_prompts):
    adapter = tiny(family)
    d = adapter.head_dim
    inputs = adapter.encode(tiny_prompts(family))
    batch = inputs["input_ids"].shape[0]
    locations = torch.tensor([[0, 3], [1, 1]])
    vectors = torch.randn(batch, 2, d, generator=torch.Generator().manual_seed(2))
    with inserting(adapter, locations, vectors), recording(adapter, family) as calls:
        forward(adapter, inputs)
    for k, (layer, h) in enumerate(locations.tolist()):
        assert torch.equal(head(calls[layer][0][:, -1], h, d), vectors[:, k])
    with pytest.raises(ValueError, match="per-row vectors"):
        with inserting(adapter, locations, vectors[:1].expand(batch + 1, 2, d)):
            forward(adapter, inputs)


def test_insertion_holds_across_decode_steps(family, tiny, tiny_prompts):
    adapter = tiny(family)
    d = adapter.head_dim
    inputs = adapter.encode(tiny_prompts(family)[:2])
    layer, h = 1, 0
    vector = torch.randn(1, d, generator=torch.Generator().manual_seed(3))
    new_tokens = 3
    with inserting(adapter, torch.tensor([[layer, h]]), vector), recording(adapter, family) as calls:
        with torch.no_grad():
            out = adapter.model.generate(
                **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
            )
    steps = calls[layer]
    assert out.shape[1] == inputs["input_ids"].shape[1] + new_tokens
    assert len(steps) == new_tokens  # prefill + one call per further token
    assert steps[0].shape[1] == inputs["input_ids"].shape[1]
    assert all(step.shape[1] == 1 for step in steps[1:])  # KV cache: decode steps see one position
    for step in steps:
        assert torch.equal(head(step[:, -1], h, d), vector.expand(step.shape[0], d))
    assert no_hooks_left(adapter)


def test_add_mode_adds(family, tiny, tiny_prompts):
    adapter = tiny(family)
    d = adapter.head_dim
    inputs = adapter.encode(tiny_prompts(family))
    before = plain_inputs(adapter, family, inputs)
    layer, h = 0, 1
    vector = torch.randn(1, d, generator=torch.Generator().manual_seed(4))
    with inserting(adapter, torch.tensor([[layer, h]]), vector, mode="add"), recording(adapter, family) as calls:
        forward(adapter, inputs)
    expected = before[layer].clone()
    expected[:, -1, h * d : (h + 1) * d] += vector
    assert torch.equal(calls[layer][0], expected)


@pytest.mark.parametrize("write_at", ["every", "prompt"])
def test_trailing_writes_last_n_positions_per_row(family, write_at, tiny, tiny_prompts):
    """every: the last trailing[b] positions of row b; prompt: only the first of them."""
    adapter = tiny(family)
    d = adapter.head_dim
    inputs = adapter.encode(tiny_prompts(family))
    batch, seq = inputs["input_ids"].shape
    before = plain_inputs(adapter, family, inputs)
    trailing = torch.tensor([1, 3, 2])[:batch]
    layer, h = 0, 2  # layer 0: its o_proj inputs do not depend on its own edit
    vectors = torch.randn(batch, 1, d, generator=torch.Generator().manual_seed(5))
    with inserting(adapter, torch.tensor([[layer, h]]), vectors, trailing=trailing, write_at=write_at):
        with recording(adapter, family) as calls:
            forward(adapter, inputs)
    got = calls[layer][0]
    for row in range(batch):
        n = int(trailing[row])
        expected = before[layer][row].clone()
        if write_at == "every":
            written = head(got[row, seq - n :], h, d)
            assert torch.equal(written, vectors[row].expand(n, d))
            expected[seq - n :, h * d : (h + 1) * d] = vectors[row]
        else:
            expected[seq - n, h * d : (h + 1) * d] = vectors[row, 0]
        assert torch.equal(got[row], expected)


def test_write_at_prompt_leaves_decode_steps_alone(family, tiny, tiny_prompts):
    adapter = tiny(family)
    d = adapter.head_dim
    inputs = adapter.encode(tiny_prompts(family)[:2])
    layer, h = 0, 0
    vector = torch.randn(1, d, generator=torch.Generator().manual_seed(3)) * 100
    new_tokens = 3
    with applied(adapter, Intervention(torch.tensor([[layer, h]]), vector, write_at="prompt")), \
            recording(adapter, family) as calls:
        with torch.no_grad():
            out = adapter.model.generate(
                **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
            )
    steps = calls[layer]
    assert len(steps) == new_tokens and all(step.shape[1] == 1 for step in steps[1:])
    assert torch.equal(head(steps[0][:, -1], h, d), vector.expand(2, d))
    assert not any(torch.equal(head(step[:, -1], h, d), vector.expand(2, d)) for step in steps[1:])
    assert no_hooks_left(adapter)
    if family.startswith("qwen2"):  # M-RoPE decode positions need generate's own bookkeeping
        return
    # the same as a prefill with the vector, then decode steps without it
    with torch.no_grad():
        with inserting(adapter, torch.tensor([[layer, h]]), vector):
            prefill = adapter.model(**inputs, use_cache=True)
        token = prefill.logits[:, -1].argmax(-1, keepdim=True)
        cache, mask, tokens = prefill.past_key_values, inputs["attention_mask"], [token]
        for _ in range(new_tokens - 1):
            mask = torch.cat([mask, torch.ones_like(token)], 1)
            step = adapter.model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True)
            cache, token = step.past_key_values, step.logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(token)
    assert torch.equal(out[:, inputs["input_ids"].shape[1]:], torch.cat(tokens, 1))
    assert no_hooks_left(adapter)


def test_row_mask_keeps_own_activation(family, tiny, tiny_prompts):
    adapter = tiny(family)
    d = adapter.head_dim
    inputs = adapter.encode(tiny_prompts(family))
    batch = inputs["input_ids"].shape[0]
    before = plain_inputs(adapter, family, inputs)
    locations = torch.tensor([[1, 0], [1, 3]])
    vectors = torch.randn(2, d, generator=torch.Generator().manual_seed(6))
    mask = torch.zeros(batch, 2, dtype=torch.bool)
    mask[0, 0] = mask[batch - 1, 1] = True
    intervention = Intervention(locations, vectors, row_mask=mask)
    with applied(adapter, intervention), recording(adapter, family) as calls:
        forward(adapter, inputs)
    got = calls[1][0][:, -1]
    for row in range(batch):
        for k, (_, h) in enumerate(locations.tolist()):
            want = vectors[k] if mask[row, k] else head(before[1][row, -1], h, d)
            assert torch.equal(head(got[row], h, d), want)
    assert intervention.rows(slice(0, 1)).row_mask.shape == (1, 2)


def test_keep_everywhere_reproduces_the_bare_model_exactly(family, tiny, tiny_prompts):
    """The search's "keep" choice is a row mask of False: at every location, in both
    modes, with per-row vectors, the logits are bit-identical to the plain model's."""
    adapter = tiny(family)
    inputs = adapter.encode(tiny_prompts(family))
    batch = inputs["input_ids"].shape[0]
    plain = forward(adapter, inputs)
    locations = all_locations(adapter.n_layers, adapter.n_heads)
    vectors = torch.randn(batch, len(locations), adapter.head_dim, generator=torch.Generator().manual_seed(3))
    keep = torch.zeros(batch, len(locations), dtype=torch.bool)
    for mode in ("replace", "add"):
        with applied(adapter, Intervention(locations, vectors, mode, keep)):
            assert torch.equal(forward(adapter, inputs), plain), mode
    assert no_hooks_left(adapter)
