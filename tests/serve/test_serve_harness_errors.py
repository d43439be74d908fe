"""The new routes (``/v1/completions``, ``/tokenizer_info``, ``/tokenize``, ``/detokenize``)
keep the server's rules: the API key, strict 400s for bad fields, reserved text, body
limits, a full queue, and one failing row that cannot fail the others."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from serve_helpers import API_KEY, Served, serve_config
from test_serve_errors import assert_error
from test_serve_isolation import broken_set

from stvcli.prompt import Prompt
from stvcli.scoring import generate
from stvcli.serve.app import create_app
from stvcli.serve.server import background_server
from stvcli.serve.tokens import image_token_ids

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=60) as client:
        yield client


def completion(served: Served, **fields) -> dict:
    return {"model": served.ids["demo"], "prompt": "hello", "max_tokens": 2, **fields}


def test_new_routes_need_the_key(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as anonymous:
        assert_error(anonymous.post("/v1/completions", json=completion(served)), 401, "invalid_api_key")
        assert_error(anonymous.get("/tokenizer_info"), 401, "invalid_api_key")
        assert_error(anonymous.post("/tokenize", json={"prompt": "test"}), 401)
        assert_error(anonymous.post("/detokenize", json={"tokens": [1]}), 401)
        wrong = {"Authorization": "Bearer nope"}
        assert_error(anonymous.post("/v1/completions", json=completion(served), headers=wrong), 401)
        assert_error(anonymous.get("/tokenizer_info", headers=wrong), 401)


@pytest.mark.parametrize("fields, param", [
    ({"prompt": []}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": [1.5, 2]}, "prompt"),
    ({"prompt": [True]}, "prompt"),
    ({"prompt": [-1]}, "prompt"),
    ({"prompt": [[1, 2], "text"]}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"prompt": ["x"] * 257}, "prompt"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_tokens": "2"}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),  # without echo
    ({"logprobs": 21}, "logprobs"),
    ({"logprobs": -1}, "logprobs"),
    ({"logprobs": True}, "logprobs"),
    ({"echo": "yes"}, "echo"),
    ({"temperature": "0"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"stop": [""]}, "stop"),
    ({"seed": 2**64}, "seed"),
    ({"stream": True}, "stream"),
    ({"n": 2}, "n"),
    ({"best_of": 3}, "best_of"),
    ({"suffix": "tail"}, "suffix"),
    ({"continuation_start": 0}, "continuation_start"),
    ({"continuation_start": 99, "echo": True, "logprobs": 1}, "continuation_start"),
    ({"continuation_start": [1, 1], "echo": True, "logprobs": 1}, "continuation_start"),
])
def test_bad_completion_fields_are_400(http: httpx.Client, served: Served, fields: dict, param: str) -> None:
    error = assert_error(http.post("/v1/completions", json=completion(served, **fields)), 400)
    assert (error["param"] or "").startswith(param), error


def test_bad_prompts_are_400(http: httpx.Client, served: Served) -> None:
    vocab = len(served.adapter.tokenizer)
    image_id = served.adapter.tokenizer.convert_tokens_to_ids("<image>")
    assert_error(http.post("/v1/completions", json=completion(served, prompt=[1, vocab])), 400, param="prompt.1")
    error = assert_error(http.post("/v1/completions", json=completion(served, prompt=[[5], [1, image_id]])), 400,
                         param="prompt.1.1")
    assert "image" in error["message"]
    for text in ("say <s> now", "an <image> here", "<|im_start|>user"):  # reserved, as in chat text
        assert_error(http.post("/v1/completions", json=completion(served, prompt=text)), 400, param="prompt")
    assert_error(http.post("/v1/completions", json=completion(served, prompt=["ok", "</s>"])), 400, param="prompt.1")
    # special tokens other than images are fine as ids (the harness sends BOS/EOS that way)
    bos, eos = served.adapter.tokenizer.bos_token_id, served.adapter.tokenizer.eos_token_id
    assert http.post("/v1/completions", json=completion(served, prompt=[bos, 5, eos])).status_code == 200


def test_context_limits(http: httpx.Client, served: Served) -> None:
    context = served.adapter.context_length
    assert_error(http.post("/v1/completions", json=completion(served, prompt=[5] * (context + 1), max_tokens=0,
                                                               echo=True)), 400, "context_length_exceeded")
    assert_error(http.post("/v1/completions", json=completion(served, prompt=[5] * context, max_tokens=1)), 400,
                 "context_length_exceeded", "max_tokens")
    full = http.post("/v1/completions", json=completion(served, prompt=[5] * context, max_tokens=0, echo=True,
                                                        logprobs=0))
    assert full.status_code == 200 and len(full.json()["choices"][0]["logprobs"]["tokens"]) == context
    no_room = completion(served, prompt=[5] * context)
    del no_room["max_tokens"]
    assert_error(http.post("/v1/completions", json=no_room), 400, "context_length_exceeded")


def test_bad_tokenizer_requests_are_400(http: httpx.Client, served: Served) -> None:
    vocab = len(served.adapter.tokenizer)
    assert_error(http.post("/tokenize", json={"prompt": 5}), 400, param="prompt")
    assert_error(http.post("/tokenize", json={}), 400, param="prompt")
    assert_error(http.post("/tokenize", json={"prompt": "say </s> now"}), 400, param="prompt")
    assert_error(http.post("/tokenize", json={"prompt": "<image>"}), 400, param="prompt")
    assert_error(http.post("/tokenize", json={"prompt": "x", "add_special_tokens": "no"}), 400)
    assert_error(http.post("/tokenize", json={"prompt": "x", "model": "gpt-4"}), 404, "model_not_found")
    assert_error(http.post("/detokenize", json={"tokens": [1, vocab]}), 400, param="tokens.1")
    assert_error(http.post("/detokenize", json={"tokens": ["a"]}), 400)
    assert_error(http.post("/detokenize", content=b"[1, 2]"), 400, "invalid_json")
    assert_error(http.get("/tokenize"), 405)


def test_unknown_model_and_body_limit(http: httpx.Client, served: Served) -> None:
    assert_error(http.post("/v1/completions", json=completion(served, model="gpt-3.5-turbo-instruct")), 404,
                 "model_not_found", "model")
    assert_error(http.post("/v1/completions", json=completion(served, prompt="x" * 300_000)), 413, "request_too_large")
    assert_error(http.post("/tokenize", json={"prompt": "x" * 300_000}), 413, "request_too_large")
    assert_error(http.post("/v1/completions", content=b"{\"prompt\": " + b"[" * 64 + b"]" * 64 + b"}"), 400,
                 "invalid_json")


def test_a_request_larger_than_the_free_queue_is_503(served: Served, vector_files) -> None:
    app = create_app(serve_config(vector_files, max_queue=2), served.adapter)
    with TestClient(app) as client:
        refused = client.post("/v1/completions", headers=AUTH, json=completion(served, prompt=["a", "b", "c"]))
        assert_error(refused, 503, "overloaded")
        assert int(refused.headers["retry-after"]) >= 1
        ok = client.post("/v1/completions", headers=AUTH, json=completion(served, prompt=["a", "b"]))
        assert ok.status_code == 200 and [c["index"] for c in ok.json()["choices"]] == [0, 1]


def test_a_broken_set_fails_only_its_own_completion_rows(served: Served, vector_files) -> None:
    """Echo and generation rows of a NaN set fail (500); completions and chat requests
    batched with them are answered as if alone."""
    app = create_app(serve_config(vector_files, batch_wait_ms=1500), served.adapter)
    broken = broken_set(served)
    app.state.catalog.sets[broken.id] = broken
    ids = served.ids | {"broken": broken.id}
    prompt = "the quick brown fox"
    scored = {"prompt": [[1, 5, 6, 7]], "max_tokens": 1, "echo": True, "logprobs": 1}
    plan = [("bare", "completion", {}), ("broken", "completion", scored), ("demo", "completion", {}),
            ("broken", "completion", {}), ("other", "chat", {}), ("demo", "completion", scored)]

    def ask(client: httpx.Client, item) -> httpx.Response:
        task, route, fields = item
        if route == "chat":
            return client.post("/v1/chat/completions", json={"model": ids[task], "max_tokens": 4, "messages": [
                {"role": "user", "content": prompt}]})
        return client.post("/v1/completions", json={"model": ids[task], "prompt": prompt, "max_tokens": 4} | fields)

    with background_server(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        with ThreadPoolExecutor(len(plan)) as pool:
            responses = list(pool.map(lambda item: ask(client, item), plan))
        alone = {i: ask(client, item).json() for i, item in enumerate(plan) if item[0] != "broken"}
    for i, ((task, route, fields), response) in enumerate(zip(plan, responses)):
        if task == "broken":
            error = assert_error(response, 500, "internal_error")
            assert "NaN" in error["message"]
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        if route == "chat":
            expected = generate(served.adapter, [Prompt(prompt)], 4, intervention=served.vectors[task].intervention())
            assert body["choices"][0]["message"]["content"] == expected[0]
        elif fields:
            got, want = (b["choices"][0]["logprobs"]["token_logprobs"] for b in (body, alone[i]))
            assert got[1:] == pytest.approx(want[1:], abs=1e-4)
        else:
            assert body["choices"][0]["text"] == alone[i]["choices"][0]["text"]


QWEN_VL_CODE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "qwen-vl-remote-code"


@pytest.mark.skipif(not QWEN_VL_CODE.is_dir() or importlib.util.find_spec("tiktoken") is None,
                    reason="the Qwen-VL remote code fixture (../shared) or tiktoken is absent")
def test_qwen_vl_image_ids_are_refused_as_token_ids() -> None:
    """Qwen-VL's forward opens the path or URL spelled by the ids between ``<img>`` and
    ``</img>``: those ids are never accepted in a token prompt; its EOS is."""
    from transformers import AutoTokenizer

    from stvcli.models import remote_code
    from stvcli.models.qwen_vl import QwenVLAdapter

    with remote_code.compat():
        tokenizer = AutoTokenizer.from_pretrained(QWEN_VL_CODE, trust_remote_code=True)
    config = SimpleNamespace(visual={"image_start_id": 151857})
    model = SimpleNamespace(config=config, generation_config=SimpleNamespace(eos_token_id=151643))
    adapter = SimpleNamespace(tokenizer=tokenizer, processor=tokenizer, reserved_markup=QwenVLAdapter.reserved_markup,
                              model=model, text_config=config)
    ids = image_token_ids(adapter)
    assert {151857, 151858, 151859} <= ids  # <img>, </img>, <imgpad>
    assert tokenizer.convert_tokens_to_ids("<img>") == 151857 and 151643 not in ids
