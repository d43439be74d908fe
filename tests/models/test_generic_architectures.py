"""Unregistered architectures (GPT-2, GPT-NeoX, Falcon, OPT, Bloom, GPT-J, MPT): projections
found by structure, capture and insertion against an independent pre-hook, the CLI chain.

The reference module paths are written out per family below (not taken from the adapter).
Each family's tree has a trap: an MLP projection with a projection name (GPT-2's
``mlp.c_proj``) or a similar one (``mlp.dense_4h_to_h``, ``fc2``, ``fc_out``, ``ffn.down_proj``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D
from typer.testing import CliRunner

from stvcli.cli import app
from stvcli.data.synthetic import ANTONYMS, write_text_jsonl
from stvcli.engine import capturing, inserting
from stvcli.errors import ModelError
from stvcli.models import registry
from stvcli.models.base import config_geometry, discover_projections, projection_input_width
from stvcli.models.text import GenericAdapter
from stvcli.prompt import Prompt
from stvcli.testing.tiny import GENERIC_FAMILIES, build_tiny, recording_inputs, save_tiny_model, tiny_adapter

#: family -> (attention output projection of layer {i}, the MLP projection that must not be chosen)
PATHS = {
    "gpt2": ("transformer.h.{i}.attn.c_proj", "transformer.h.{i}.mlp.c_proj"),
    "gpt-neox": ("gpt_neox.layers.{i}.attention.dense", "gpt_neox.layers.{i}.mlp.dense_4h_to_h"),
    "falcon": ("transformer.h.{i}.self_attention.dense", "transformer.h.{i}.mlp.dense_4h_to_h"),
    "opt": ("model.decoder.layers.{i}.self_attn.out_proj", "model.decoder.layers.{i}.fc2"),
    "bloom": ("transformer.h.{i}.self_attention.dense", "transformer.h.{i}.mlp.dense_4h_to_h"),
    "gptj": ("transformer.h.{i}.attn.out_proj", "transformer.h.{i}.mlp.fc_out"),
    "mpt": ("transformer.blocks.{i}.attn.out_proj", "transformer.blocks.{i}.ffn.down_proj"),
}
N_LAYERS, N_HEADS, HEAD_DIM = 2, 4, 8
ATOL = 1e-5
PROMPTS = [
    Prompt("Question: what colour is the fox? Answer:"),
    Prompt("Input: hot Output:"),
    Prompt("the cat and the dog are one two three four five six seven. Answer:"),
]

family_param = pytest.mark.parametrize("family", GENERIC_FAMILIES)


@pytest.fixture(scope="module")
def adapters() -> dict:
    return {}


@pytest.fixture
def adapter(family, adapters):
    """Module-cached adapter per family; tests here never change its weights."""
    if family not in adapters:
        adapters[family] = tiny_adapter(family)
    return adapters[family]


def reference(adapter, family: str, layer: int) -> nn.Module:
    return adapter.model.get_submodule(PATHS[family][0].format(i=layer))


@contextmanager
def recording(adapter, family: str) -> Iterator[list[list[torch.Tensor]]]:
    """Per layer, the input the attention output projection receives in each call: [B, T, H * D]."""
    with recording_inputs([reference(adapter, family, layer) for layer in range(N_LAYERS)]) as calls:
        yield calls


def forward(adapter, inputs) -> torch.Tensor:
    with torch.no_grad():
        return adapter.model(**inputs).logits


# ------------------------------------------------------------------ discovery
@family_param
def test_discovers_the_attention_projection_not_the_mlp(family, adapter):
    assert type(adapter) is GenericAdapter and not adapter.prefix_sharing
    assert (adapter.n_layers, adapter.n_heads, adapter.head_dim) == (N_LAYERS, N_HEADS, HEAD_DIM)
    assert all(adapter.projections[i] is reference(adapter, family, i) for i in range(N_LAYERS))
    mlp = adapter.model.get_submodule(PATHS[family][1].format(i=0))
    assert projection_input_width(mlp) != N_HEADS * HEAD_DIM  # the trap has another width
    assert all(projection_input_width(p) == N_HEADS * HEAD_DIM for p in adapter.projections)
    assert adapter.fingerprint()["architecture"] == type(adapter.model).__name__


def test_gpt2_projection_is_a_conv1d_read_by_its_input_width():
    adapter = tiny_adapter("gpt2")
    projection = adapter.projections[0]
    assert isinstance(projection, Conv1D) and not isinstance(projection, nn.Linear)
    assert tuple(projection.weight.shape) == (32, 32)
    mlp = adapter.model.transformer.h[0].mlp.c_proj
    assert tuple(mlp.weight.shape) == (128, 32) and projection_input_width(mlp) == 128  # [in, out]


def test_projection_input_width():
    assert projection_input_width(nn.Linear(12, 5)) == 12
    assert projection_input_width(Conv1D(5, 12)) == 12  # Conv1D(nf=out, nx=in), weight [in, out]

    class Packed(nn.Module):  # some other projection with a 2-D weight in the nn.Linear layout
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(5, 12))

    assert projection_input_width(Packed()) == 12
    assert projection_input_width(nn.Identity()) is None
    assert projection_input_width(nn.LayerNorm(12)) is None  # 1-D weight


def test_config_geometry_under_every_name():
    from types import SimpleNamespace as C

    assert config_geometry(C(num_attention_heads=4, hidden_size=32)) == (4, 8)
    assert config_geometry(C(n_head=4, n_embd=32)) == (4, 8)
    assert config_geometry(C(n_heads=4, d_model=32)) == (4, 8)
    assert config_geometry(C(num_heads=4, hidden_size=64, head_dim=32)) == (4, 32)
    # GQA / MQA: the query heads count, never the key/value heads
    assert config_geometry(C(num_attention_heads=8, num_key_value_heads=2, hidden_size=64)) == (8, 8)
    assert config_geometry(C(num_attention_heads=4, head_dim=None, hidden_size=32)) == (4, 8)
    assert config_geometry(C(hidden_size=32)) == (None, None)
    assert config_geometry(None) == (None, None)


# ------------------------------------------------------------------ capture and insertion
@family_param
def test_capture_equals_an_independent_pre_hook(family, adapter):
    inputs = adapter.encode(PROMPTS)  # left padded: last prompt token at -1 in every row
    assert bool((inputs["attention_mask"][:, 0] == 0).any())
    with recording(adapter, family) as calls, capturing(adapter) as capture:
        forward(adapter, inputs)
    expected = torch.stack([calls[layer][0][:, -1] for layer in range(N_LAYERS)], dim=1)
    result = capture.result()
    assert result.shape == (len(PROMPTS), N_LAYERS, N_HEADS, HEAD_DIM)
    assert torch.allclose(result, expected.view(len(PROMPTS), N_LAYERS, N_HEADS, HEAD_DIM), atol=ATOL)
    locations = torch.tensor([[1, 3], [0, 2]])
    with capturing(adapter, locations) as some:
        forward(adapter, inputs)
    assert torch.allclose(some.result(), result[:, [1, 0], [3, 2]], atol=ATOL)


@family_param
def test_insertion_changes_exactly_that_heads_input(family, adapter):
    inputs = adapter.encode(PROMPTS)
    with recording(adapter, family) as plain:
        plain_logits = forward(adapter, inputs)
    layer, head = 1, 2
    vector = torch.randn(1, HEAD_DIM, generator=torch.Generator().manual_seed(0)) * 3
    with inserting(adapter, torch.tensor([[layer, head]]), vector), recording(adapter, family) as edited:
        edited_logits = forward(adapter, inputs)  # our hooks run after the engine's: the real input
    assert torch.equal(edited[0][0], plain[0][0])  # the layer before is untouched
    before, after = plain[layer][0], edited[layer][0]
    cols = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
    assert torch.allclose(after[:, -1, cols], vector.expand(len(PROMPTS), -1), atol=ATOL)
    mask = torch.ones_like(before, dtype=torch.bool)
    mask[:, -1, cols] = False
    assert torch.equal(after[mask], before[mask])  # every other head, every other position
    assert not torch.allclose(edited_logits[:, -1], plain_logits[:, -1])
    assert torch.equal(edited_logits[:, :-1], plain_logits[:, :-1])  # causal: earlier positions unchanged
    assert all(not p._forward_pre_hooks for p in adapter.projections)


# ------------------------------------------------------------------ ambiguity and overrides
def _gpt2_with(extra: type[nn.Module] | None = None, **shape: int):
    model, tokenizer = build_tiny("gpt2")
    if extra is not None:
        for block in model.transformer.h:
            block.attn.o_proj = extra(**shape)
    return model, tokenizer


def _assert_one_line_projection_error(error: pytest.ExceptionInfo) -> None:
    message = str(error.value)
    assert "--projection-pattern" in message and "\n" not in message


def test_two_candidates_of_the_right_width_are_ambiguous():
    model, tokenizer = _gpt2_with(nn.Linear, in_features=32, out_features=32)
    with pytest.raises(ModelError) as error:
        registry.adapter_for(model, tokenizer, "two")
    _assert_one_line_projection_error(error)
    assert "c_proj" in str(error.value) and "o_proj" in str(error.value)
    adapter = registry.adapter_for(model, tokenizer, "two", projection_pattern=r"h\.\d+\.attn\.c_proj$")
    assert adapter.projections == [model.transformer.h[i].attn.c_proj for i in range(N_LAYERS)]


def test_a_candidate_of_another_width_loses_to_the_right_width():
    model, tokenizer = _gpt2_with(nn.Linear, in_features=64, out_features=32)
    adapter = registry.adapter_for(model, tokenizer, "wide")
    assert adapter.projections == [model.transformer.h[i].attn.c_proj for i in range(N_LAYERS)]


def test_no_candidate_fails_with_one_line():
    model, tokenizer = build_tiny("gpt2")
    for block in model.transformer.h:
        block.attn.c_proj = nn.Identity()
    with pytest.raises(ModelError) as error:
        registry.adapter_for(model, tokenizer, "none")
    _assert_one_line_projection_error(error)


def test_only_a_gap_in_the_layers_fails_with_one_line():
    model, tokenizer = build_tiny("opt")
    model.model.decoder.layers[1].self_attn.out_proj = nn.Identity()  # layer 1 has none
    with pytest.raises(ModelError) as error:
        discover_projections(model, "gap")
    _assert_one_line_projection_error(error)


def test_projection_pattern_accepts_conv1d():
    model, tokenizer = build_tiny("gpt2")
    adapter = registry.adapter_for(model, tokenizer, "p", projection_pattern=r"attn\.c_proj$")
    assert adapter.projections == [model.transformer.h[i].attn.c_proj for i in range(N_LAYERS)]
    assert (adapter.n_heads, adapter.head_dim) == (N_HEADS, HEAD_DIM)
    with pytest.raises(ModelError, match="ambiguous"):  # mlp.c_proj matches too
        registry.adapter_for(model, tokenizer, "p", projection_pattern=r"c_proj$")


# ------------------------------------------------------------------ CLI chain on a saved model
@family_param
def test_cli_chain_on_a_saved_model(family, tmp_path):
    model_dir = save_tiny_model(family, tmp_path / "model")
    data = write_text_jsonl(tmp_path, [(f"Input: {a} Output:", f" {b}") for a, b in ANTONYMS])
    workspace = str(tmp_path / "w")
    runner = CliRunner()
    steps = [
        ["scan", "--model", str(model_dir), "-w", workspace, "--task", "text", "--data", str(data),
         "--queries", "4", "--shots", "2", "--top-k", "3", "--device", "cpu", "--quiet"],
        ["bank", "-w", workspace, "--clusters", "2", "--contexts", "4", "--quiet"],
        ["search", "-w", workspace, "--iterations", "2", "--samples", "2", "--queries-per-iteration", "1",
         "--holdout", "0", "--quiet"],
        ["eval", "-w", workspace, "--methods", "zero-shot,stv", "--limit", "2", "--quiet", "--json"],
    ]  # fmt: skip
    for step in steps:
        result = runner.invoke(app, step)
        assert result.exit_code == 0, f"{step[0]}: {result.output}"
    assert '"zero-shot"' in result.output and '"stv"' in result.output
