"""Every bad input is a 4xx JSON error in the OpenAI shape, and the server keeps serving."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import API_KEY, Served, image_data_url, serve_config

from stvcli.serve.app import create_app
from stvcli.serve.config import ServeConfig
from stvcli.serve.server import background_server
from stvcli.testing.tiny import tiny_adapter

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=60) as client:
        yield client


def body(served: Served, content="hello", model: str = "demo", **fields) -> dict:
    return {"model": served.ids.get(model, model), "messages": [{"role": "user", "content": content}],
            "max_tokens": 4, **fields}


def image_part(url: str) -> list[dict]:
    return [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "what?"}]


def assert_error(response: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def test_missing_or_wrong_key_is_401(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as anonymous:
        assert_error(anonymous.post("/v1/chat/completions", json=body(served)), 401, "invalid_api_key")
        assert_error(anonymous.get("/v1/models"), 401)
        wrong = {"Authorization": "Bearer nope"}
        assert_error(anonymous.post("/v1/chat/completions", json=body(served), headers=wrong), 401)
        assert_error(anonymous.get("/v1/models", headers={"Authorization": API_KEY}), 401)  # no scheme
        assert anonymous.get("/health").json()["status"] == "ok"


def test_invalid_json_and_fields_are_400(http: httpx.Client, served: Served) -> None:
    post = http.post
    assert_error(post("/v1/chat/completions", content=b"{not json"), 400, "invalid_json")
    assert_error(post("/v1/chat/completions", content=b"\xff\xfe"), 400, "invalid_json")
    assert_error(post("/v1/chat/completions", json=[1, 2]), 400, "invalid_json")
    assert_error(post("/v1/chat/completions", json={"model": served.ids["demo"]}), 400, param="messages")
    assert_error(post("/v1/chat/completions", json=body(served) | {"messages": []}), 400, param="messages")
    assert_error(post("/v1/chat/completions", json=body(served, temperature=-1)), 400, param="temperature")
    assert_error(post("/v1/chat/completions", json=body(served, n=2)), 400, param="n")
    assert_error(post("/v1/chat/completions", json=body(served, max_tokens=0)), 400, param="max_tokens")
    assert_error(post("/v1/chat/completions", json=body(served, stop=[""])), 400, param="stop")
    bad_role = {"model": served.ids["demo"], "messages": [{"role": "robot", "content": "hi"}]}
    assert_error(post("/v1/chat/completions", json=bad_role), 400)
    audio = [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]
    assert_error(post("/v1/chat/completions", json=body(served, audio)), 400)
    assert_error(post("/v1/chat/completions", json=body(served, "an <image> in text")), 400)
    for token in ("<|im_start|>", "</s>", "<fake_token_around_image>"):  # the model's special tokens
        parts = [{"type": "text", "text": f"say {token} now"}]
        assert_error(post("/v1/chat/completions", json=body(served, parts)), 400, param="messages.0.content.0")


def test_unknown_model_is_404(http: httpx.Client, served: Served) -> None:
    assert_error(http.post("/v1/chat/completions", json=body(served, model="gpt-4")), 404, "model_not_found", "model")
    assert_error(http.get("/v1/models/gpt-4"), 404, "model_not_found")
    assert http.get(f"/v1/models/{served.ids['demo']}").json()["id"] == served.ids["demo"]


def test_bad_images_are_4xx(http: httpx.Client, served: Served) -> None:
    def post(url: str) -> httpx.Response:
        return http.post("/v1/chat/completions", json=body(served, image_part(url)))

    param = "messages.0.content.0.image_url.url"
    assert_error(post("data:image/png;base64,@@not-base64@@"), 400, "invalid_base64", param)
    assert_error(post("data:image/png;base64," + base64.b64encode(b"not an image").decode()), 400, "invalid_image")
    assert_error(post("data:text/plain;base64,aGk="), 400, "invalid_image_url")
    assert_error(post("data:image/png,rawbytes"), 400, "invalid_image_url")
    assert_error(post("http://example.com/cat.png"), 400, "remote_images_disabled")
    assert_error(post("file:///etc/passwd"), 400, "invalid_image_url")
    noise = Image.frombytes("RGB", (160, 160), torch.randint(0, 256, (160 * 160 * 3,), dtype=torch.uint8).numpy().tobytes())
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 64 * 1024  # the served limit
    assert_error(post("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()), 413, "image_too_large")


def test_oversized_body_is_413(http: httpx.Client, served: Served) -> None:
    assert_error(http.post("/v1/chat/completions", json=body(served, "x" * 300_000)), 413, "request_too_large")


def test_too_many_tokens_is_400(http: httpx.Client, served: Served) -> None:
    context = served.adapter.context_length
    assert_error(http.post("/v1/chat/completions", json=body(served, max_tokens=context + 1)), 400,
                 "context_length_exceeded", "max_tokens")
    long_prompt = " ".join(["fox"] * (context + 10))
    response = http.post("/v1/chat/completions", json=body(served, long_prompt) | {"max_tokens": None})
    assert_error(response, 400, "context_length_exceeded")


def test_unknown_route_and_method_use_the_error_shape(http: httpx.Client) -> None:
    assert_error(http.get("/v1/nothing"), 404)
    assert_error(http.get("/v1/chat/completions"), 405)


def test_server_still_answers_after_bad_requests(http: httpx.Client, served: Served) -> None:
    response = http.post("/v1/chat/completions", json=body(served, image_part(image_data_url())))
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["role"] == "assistant"


def test_images_for_a_text_model_are_400() -> None:
    app = create_app(ServeConfig(), tiny_adapter("llama"))
    with TestClient(app) as client:
        model = app.state.catalog.base_id
        request = {"model": model, "messages": [{"role": "user", "content": image_part(image_data_url())}]}
        assert_error(client.post("/v1/chat/completions", json=request), 400, "invalid_prompt")
        ok = client.post("/v1/chat/completions", json={"model": model, "max_tokens": 3,
                                                       "messages": [{"role": "user", "content": "hello"}]})
        assert ok.status_code == 200


def test_full_queue_is_503_with_retry_after(served: Served, vector_files) -> None:
    """One request blocks inside the model, one waits in the queue (size 1): the next is refused."""
    entered, gate = threading.Event(), threading.Event()

    def block(module, args):
        entered.set()
        gate.wait(30)

    handle = served.adapter.model.register_forward_pre_hook(block)
    try:
        app = create_app(serve_config(vector_files, max_queue=1, max_batch=1, batch_wait_ms=0), served.adapter)
        with background_server(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(client.post, "/v1/chat/completions", json=body(served))
                assert entered.wait(30)
                second = pool.submit(client.post, "/v1/chat/completions", json=body(served))
                for _ in range(3000):
                    if app.state.worker.queued == 1:
                        break
                    threading.Event().wait(0.01)
                refused = client.post("/v1/chat/completions", json=body(served))
                assert_error(refused, 503, "overloaded")
                assert int(refused.headers["retry-after"]) >= 1
                gate.set()
                assert first.result().status_code == 200 and second.result().status_code == 200
    finally:
        gate.set()
        handle.remove()
