"""Registry: architecture lookup, family discovery, prefix sharing, short names, generic discovery, geometry."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import textwrap

import pytest
import torch
from torch import nn

import stvcli.models
from stvcli.errors import ModelError
from stvcli.models import registry
from stvcli.models.base import ModelAdapter
from stvcli.models.idefics2 import Idefics2Adapter
from stvcli.models.idefics3 import Idefics3Adapter
from stvcli.models.llava import LlavaAdapter
from stvcli.models.qwen2_vl import Qwen2VLAdapter, Qwen25VLAdapter
from stvcli.models.qwen_vl import QwenVLAdapter
from stvcli.models.text import GenericAdapter, TextAdapter, discover_projections
from stvcli.prefix import can_share_prefix, straightforward
from stvcli.testing.tiny import build_tiny, tiny_adapter

#: Families whose shared-prefix forward is checked equal to the full forward (tests/test_prefix.py).
SHARING_FAMILIES = {"text", "llava", "idefics2", "idefics3", "qwen2-vl", "qwen2.5-vl"}


@pytest.mark.parametrize(
    ("architecture", "cls"),
    [
        ("Idefics2ForConditionalGeneration", Idefics2Adapter),
        ("Idefics3ForConditionalGeneration", Idefics3Adapter),
        ("SmolVLMForConditionalGeneration", Idefics3Adapter),
        ("Qwen2VLForConditionalGeneration", Qwen2VLAdapter),
        ("Qwen2_5_VLForConditionalGeneration", Qwen25VLAdapter),
        ("LlavaForConditionalGeneration", LlavaAdapter),
        ("QWenLMHeadModel", QwenVLAdapter),
        ("LlamaForCausalLM", TextAdapter),
        ("Gemma3ForCausalLM", TextAdapter),
        ("SomethingNewForCausalLM", GenericAdapter),
    ],
)
def test_architecture_lookup(architecture, cls):
    assert registry.adapter_class([architecture]) is cls


def test_unknown_or_missing_architectures_get_the_generic_adapter():
    for architectures in (None, [], ["Nope"], ["Nope", "AlsoNope"]):
        assert registry.adapter_class(architectures) is GenericAdapter


def test_discovery_imports_every_family_module():
    listed = {m.name for m in pkgutil.iter_modules(stvcli.models.__path__)}
    expected = {f"stvcli.models.{name}" for name in listed - registry.INFRASTRUCTURE_MODULES}
    assert set(registry.family_modules()) == expected
    assert {"stvcli.models.text", "stvcli.models.llava", "stvcli.models.qwen2_vl"} <= expected
    assert not {"stvcli.models.base", "stvcli.models.loading", "stvcli.models.vision"} & expected
    registry.discover_families()
    for name in expected:
        for cls in vars(sys.modules[name]).values():
            if isinstance(cls, type) and issubclass(cls, ModelAdapter) and cls.__module__ == name:
                for architecture in cls.architectures:
                    assert registry.adapter_class([architecture]) is cls


def test_a_new_family_file_is_discovered(tmp_path, monkeypatch):
    (tmp_path / "brand_new.py").write_text(
        textwrap.dedent(
            """
            from stvcli.models.registry import register
            from stvcli.models.text import TextAdapter


            @register
            class BrandNewAdapter(TextAdapter):
                family = "brand-new"
                architectures = ("BrandNewForCausalLM",)
            """
        )
    )
    importlib.invalidate_caches()
    monkeypatch.setattr(stvcli.models, "__path__", [*stvcli.models.__path__, str(tmp_path)])
    monkeypatch.setattr(registry.ADAPTERS, "_entries", dict(registry.ADAPTERS._entries))
    monkeypatch.setattr(registry, "_discovered", False)
    try:
        cls = registry.adapter_class(["BrandNewForCausalLM"])
        assert (cls.__module__, cls.__name__) == ("stvcli.models.brand_new", "BrandNewAdapter")
        assert registry.adapter_class(["LlamaForCausalLM"]) is TextAdapter
    finally:
        sys.modules.pop("stvcli.models.brand_new", None)
        vars(stvcli.models).pop("brand_new", None)


def test_discovery_runs_once(monkeypatch):
    registry.discover_families()
    monkeypatch.setattr(registry, "family_modules", lambda: pytest.fail("discovery ran twice"))
    assert "LlamaForCausalLM" in registry.ADAPTERS and "Nope" not in registry.ADAPTERS
    assert registry.adapter_class(["Nope"]) is GenericAdapter


def test_second_class_for_an_architecture_is_refused():
    class Impostor(TextAdapter):
        architectures = ("LlamaForCausalLM",)

    with pytest.raises(ValueError, match="LlamaForCausalLM"):
        registry.register(Impostor)
    assert registry.adapter_class(["LlamaForCausalLM"]) is TextAdapter
    assert registry.register(TextAdapter) is TextAdapter  # the same class again is fine


def test_prefix_sharing_is_declared_by_exactly_the_checked_families():
    classes = {cls for _, cls in registry.ADAPTERS.items()} | {GenericAdapter}
    assert {cls.family for cls in classes} >= SHARING_FAMILIES | {"generic", "qwen-vl"}
    assert {cls.family for cls in classes if cls.prefix_sharing} == SHARING_FAMILIES
    assert not ModelAdapter.prefix_sharing


def test_can_share_prefix_follows_the_flag_and_straightforward():
    adapter = tiny_adapter("llama")
    assert can_share_prefix(adapter)
    with straightforward():
        assert not can_share_prefix(adapter)
    assert can_share_prefix(adapter)
    adapter.prefix_sharing = False
    assert not can_share_prefix(adapter)
    assert TextAdapter.prefix_sharing
    model, tokenizer = build_tiny("llama")
    model.config.architectures = ["Unregistered"]
    assert not can_share_prefix(registry.adapter_for(model, tokenizer, "generic"))


def test_short_names_resolve():
    assert registry.resolve_name("qwen2-vl") == "Qwen/Qwen2-VL-7B-Instruct"
    assert registry.resolve_name("SmolVLM") == "HuggingFaceTB/SmolVLM-Instruct"
    assert registry.resolve_name("org/some-model") == "org/some-model"
    assert registry.resolve_name("./a/dir") == "./a/dir"


def test_list_models():
    rows = {row["name"]: row for row in registry.list_models()}
    for name in ("idefics2", "idefics3", "smolvlm", "qwen2-vl", "qwen2.5-vl", "llava", "qwen-vl", "llama", "qwen2"):
        assert name in rows
    assert rows["idefics2"]["hub_id"] == "HuggingFaceM4/idefics2-8b"
    assert rows["llava"]["architectures"] == ["LlavaForConditionalGeneration"]
    assert rows["qwen-vl"]["trust_remote_code"] is True
    assert set(rows["smolvlm"]) == {"name", "hub_id", "family", "architectures", "trust_remote_code"}


def test_adapter_for_uses_config_architectures():
    model, tokenizer = build_tiny("llama")
    # The first REGISTERED architecture wins; unknown names are skipped.
    model.config.architectures = ["Unknown", "LlamaForCausalLM"]
    assert type(registry.adapter_for(model, tokenizer, "x")) is TextAdapter


def test_generic_adapter_on_unregistered_architecture():
    model, tokenizer = build_tiny("llama")
    model.config.architectures = ["MyNewLlamaForCausalLM"]
    adapter = registry.adapter_for(model, tokenizer, "custom")
    assert type(adapter) is GenericAdapter
    expected = [model.get_submodule(f"model.layers.{i}.self_attn.o_proj") for i in range(2)]
    assert adapter.projections == expected
    assert (adapter.n_layers, adapter.n_heads, adapter.head_dim) == (2, 4, 16)


def test_idefics2_excludes_perceiver_projections():
    adapter = tiny_adapter("idefics2")
    config = adapter.model.config
    names = {id(m): n for n, m in adapter.model.named_modules()}
    all_o_proj = [n for n in names.values() if n.endswith("o_proj")]
    assert any("perceiver" in n for n in all_o_proj)  # the trap exists
    assert adapter.n_layers == config.text_config.num_hidden_layers == len(adapter.projections)
    assert not any("perceiver" in names[id(p)] for p in adapter.projections)
    # Generic discovery on the same model resolves the decoder too.
    adapter.model.config.architectures = ["NotRegistered"]
    generic = registry.adapter_for(adapter.model, adapter.processor, "g")
    assert generic.projections == adapter.projections


def test_gemma3_head_dim_is_the_models_own():
    adapter = tiny_adapter("gemma3")
    config = adapter.text_config
    assert config.head_dim == 32 and config.hidden_size // config.num_attention_heads == 16
    assert (adapter.n_heads, adapter.head_dim) == (4, 32)
    assert adapter.projections[0].in_features == 128


class _Attention(nn.Module):
    def __init__(self, name: str = "o_proj") -> None:
        super().__init__()
        self.add_module(name, nn.Linear(8, 8))


class _Layer(nn.Module):
    def __init__(self, attention: str = "self_attn", projection: str = "o_proj") -> None:
        super().__init__()
        self.add_module(attention, _Attention(projection))
        self.mlp = nn.Sequential(nn.Linear(8, 8))


def _stack(n: int, **kwargs) -> nn.ModuleList:
    return nn.ModuleList(_Layer(**kwargs) for _ in range(n))


def test_discover_finds_one_stack():
    tree = nn.Module()
    tree.decoder = nn.Module()
    tree.decoder.layers = _stack(3)
    found = discover_projections(tree)
    assert found == [tree.decoder.layers[i].self_attn.o_proj for i in range(3)]


def test_discover_gpt2_style_c_proj():
    tree = nn.Module()
    tree.transformer = nn.Module()
    tree.transformer.h = _stack(2, attention="attn", projection="c_proj")
    assert discover_projections(tree) == [tree.transformer.h[i].attn.c_proj for i in range(2)]


def test_discover_ambiguous_names_projection_pattern():
    tree = nn.Module()
    tree.vision = nn.Module()
    tree.vision.layers = _stack(2)
    tree.text = nn.Module()
    tree.text.layers = _stack(2)
    with pytest.raises(ModelError, match="--projection-pattern") as error:
        discover_projections(tree, "m")
    assert "text.layers" in str(error.value) and "vision.layers" in str(error.value)


def test_discover_absent_names_projection_pattern():
    tree = nn.Module()
    tree.layers = _stack(2, projection="proj_out")
    with pytest.raises(ModelError, match="--projection-pattern"):
        discover_projections(tree)


def test_projection_pattern_override_and_errors():
    model, tokenizer = build_tiny("llama")
    adapter = registry.adapter_for(model, tokenizer, "p", projection_pattern=r"layers\.\d+\.self_attn\.o_proj$")
    assert adapter.projections == [model.model.layers[i].self_attn.o_proj for i in range(2)]
    with pytest.raises(ModelError, match="ambiguous"):
        registry.adapter_for(model, tokenizer, "p", projection_pattern=r"layers\.\d+\.self_attn\.[oq]_proj$")
    with pytest.raises(ModelError, match="matches no linear"):
        registry.adapter_for(model, tokenizer, "p", projection_pattern=r"nothing_here")


def test_registered_adapter_without_projection_fails_clearly():
    model, tokenizer = build_tiny("llama")
    for layer in model.model.layers:
        layer.self_attn.o_proj = nn.Identity()
    with pytest.raises(ModelError, match="--projection-pattern"):
        registry.adapter_for(model, tokenizer, "broken")
    model.config.architectures = ["Unregistered"]
    with pytest.raises(ModelError, match="--projection-pattern"):
        registry.adapter_for(model, tokenizer, "broken")


def test_fingerprint_names_architecture_and_geometry():
    adapter = tiny_adapter("qwen2-vl")
    fingerprint = adapter.fingerprint()
    assert fingerprint["architecture"] == "Qwen2VLForConditionalGeneration"
    assert (fingerprint["n_layers"], fingerprint["n_heads"], fingerprint["head_dim"]) == (2, 4, 16)
    assert fingerprint["weights"] == tiny_adapter("qwen2-vl").fingerprint()["weights"]
    assert fingerprint["weights"] != tiny_adapter("qwen2-vl", seed=1).fingerprint()["weights"]
    assert torch.equal(
        tiny_adapter("llama").projections[0].weight, tiny_adapter("llama").projections[0].weight
    )  # seeded builds are reproducible
