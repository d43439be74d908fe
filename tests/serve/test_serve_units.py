"""Config, prompt flattening, images and streaming helpers, without a server."""

from __future__ import annotations

import asyncio
import base64

import pytest
import torch
from fastapi.testclient import TestClient
from serve_helpers import FAMILY, image_data_url, write_vectors

from stvcli.config import ModelOptions
from stvcli.errors import StvError
from stvcli.models.loading import load_model
from stvcli.prompt import Prompt
from stvcli.scoring import generate
from stvcli.serve import ServeConfig, serve
from stvcli.serve.app import create_app
from stvcli.serve.catalog import vector_set
from stvcli.serve.errors import ApiError
from stvcli.serve.generation import _first_stop, _held_back, _nucleus
from stvcli.serve.images import decode_data_url
from stvcli.serve.prompts import build_prompt
from stvcli.serve.schema import ChatRequest
from stvcli.serve.server import model_name, non_loopback_warning
from stvcli.testing.tiny import save_tiny_model, tiny_adapter
from stvcli.vectors import TaskVectors


def test_config_carries_every_model_loading_option() -> None:
    config = ServeConfig(vectors=["v.safetensors"], dtype="bfloat16", revision="abc")
    options = config.model_options("smollm2")
    assert isinstance(options, ModelOptions)
    assert options.model == "smollm2" and options.dtype == "bfloat16" and options.revision == "abc"
    assert set(ModelOptions.model_fields) <= set(ServeConfig.model_fields)


def test_api_key_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STV_API_KEY", raising=False)
    assert ServeConfig().resolved_api_key() is None
    monkeypatch.setenv("STV_API_KEY", "from-env")
    assert ServeConfig().resolved_api_key() == "from-env"
    assert ServeConfig(api_key="explicit").resolved_api_key() == "explicit"


def test_non_loopback_hosts_are_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STV_API_KEY", raising=False)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert non_loopback_warning(ServeConfig(host=host)) is None
    warning = non_loopback_warning(ServeConfig(host="0.0.0.0", port=9000))
    assert warning and "0.0.0.0" in warning and "--api-key" in warning
    assert "--api-key" not in non_loopback_warning(ServeConfig(host="10.0.0.5", api_key="k"))


def test_model_defaults_to_the_vectors_model(vector_files, adapter) -> None:
    assert model_name(ServeConfig(vectors=[vector_files["demo"]])) == adapter.name
    assert model_name(ServeConfig(vectors=[vector_files["demo"]], model="other")) == "other"
    with pytest.raises(StvError, match="--vectors"):
        serve(ServeConfig())


def test_vectors_for_another_model_are_refused(vector_files) -> None:
    other_weights = tiny_adapter(FAMILY, seed=1)
    with pytest.raises(StvError, match="another model"):
        create_app(ServeConfig(vectors=[vector_files["demo"]]), other_weights)


def test_the_same_vectors_twice_are_refused(vector_files, adapter) -> None:
    with pytest.raises(StvError, match="twice"):
        create_app(ServeConfig(vectors=[vector_files["demo"], vector_files["demo"]]), adapter)


def test_add_insertion_override_needs_a_baseline(adapter) -> None:
    vectors = TaskVectors(torch.tensor([[0, 0]]), torch.ones(1, adapter.head_dim), None, "replace", "m", {}, "t", "d")
    with pytest.raises(StvError, match="--insert replace"):
        vector_set("m", vectors, "add")


def test_messages_flatten_to_one_prompt() -> None:
    request = ChatRequest.model_validate({"model": "m", "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [
            {"type": "text", "text": "a "}, {"type": "image_url", "image_url": {"url": image_data_url((1, 2, 3))}},
            {"type": "text", "text": " b"}, {"type": "image_url", "image_url": image_data_url((4, 5, 6))}]},
        {"role": "assistant", "content": None},
    ]})
    prompt = asyncio.run(build_prompt(request.messages, max_image_bytes=10**6, allow_remote_images=False))
    assert prompt.text == "sys\na <image> b<image>"
    assert [image.getpixel((1, 1)) for image in prompt.images] == [(1, 2, 3), (4, 5, 6)]


def test_data_urls_are_checked() -> None:
    raw = b"\x89PNG" + bytes(100)
    encoded = base64.b64encode(raw).decode()
    assert decode_data_url(f"data:image/png;base64,{encoded[:20]}\n{encoded[20:]}", max_bytes=1000, param="p") == raw
    with pytest.raises(ApiError) as error:
        decode_data_url(f"data:image/png;base64,{encoded}", max_bytes=50, param="p")
    assert error.value.status == 413
    with pytest.raises(ApiError, match="base64"):
        decode_data_url("data:image/png;base64,abc", max_bytes=1000, param="p")


def test_stop_helpers() -> None:
    assert _first_stop("hello world", ["o w", "ld"]) == 4
    assert _first_stop("hello", ["xyz"]) is None
    assert _held_back("answer: ST", ["STOP"]) == 2
    assert _held_back("answer", ["STOP"]) == 0
    assert _held_back("caf\ufffd", []) == 1


def test_nucleus_keeps_the_top_mass() -> None:
    probs = torch.tensor([0.05, 0.5, 0.3, 0.15])
    kept = _nucleus(probs.clone(), 0.7)
    assert torch.equal(kept > 0, torch.tensor([False, True, True, False]))
    assert torch.equal(_nucleus(probs.clone(), 1.0) > 0, probs > 0)


def test_create_app_loads_the_model_recorded_in_the_vectors(tmp_path) -> None:
    """No adapter given: the model directory named in the vectors file is loaded and checked."""
    directory = save_tiny_model("llama", tmp_path / "tiny-llama")
    loaded = load_model(ModelOptions(model=str(directory)))
    vectors = write_vectors(loaded, tmp_path / "v.safetensors", "demo", seed=1)
    app = create_app(ServeConfig(vectors=[vectors], device="cpu"))
    recorded = TaskVectors.load(vectors).model
    assert recorded == str(directory)
    with TestClient(app) as client:
        ids = [card["id"] for card in client.get("/v1/models").json()["data"]]
        assert ids[0] == "tiny-llama" and ids[1].startswith("tiny-llama+demo@")  # names, not paths
        request = {"model": ids[1], "max_tokens": 4, "messages": [{"role": "user", "content": "hello"}]}
        answer = client.post("/v1/chat/completions", json=request).json()
        # the ids of older versions (the model's path) still work, and answer with the name
        old_id = recorded + ids[1][len("tiny-llama"):]
        old = client.post("/v1/chat/completions", json=request | {"model": old_id}).json()
        assert client.get(f"/v1/models/{old_id}").json()["id"] == ids[1]
    expected = generate(loaded, [Prompt("hello")], 4, intervention=TaskVectors.load(vectors).intervention())[0]
    assert answer["choices"][0]["message"]["content"] == expected == old["choices"][0]["message"]["content"]
    assert answer["model"] == old["model"] == ids[1]
    assert str(tmp_path) not in str(answer) + str(ids)
