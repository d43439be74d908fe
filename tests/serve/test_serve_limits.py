"""Bodies and nesting are bounded before parsing, every field is validated (400, never
500), and a huge request does not hold up the others (a real uvicorn in a thread)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from serve_helpers import API_KEY, Served, serve_config
from starlette.requests import Request
from starlette.responses import Response

from stvcli.serve.app import create_app
from stvcli.serve.limits import MAX_JSON_DEPTH, MAX_JSON_VALUES, BodyLimit, json_shape
from stvcli.serve.server import background_server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
BIG = 20 * 2**20


@pytest.fixture(scope="module")
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=60) as client:
        yield client


def request(served: Served, **fields) -> dict:
    return {"model": served.ids["demo"], "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}], **fields}


def big_body(served: Served) -> bytes:
    return json.dumps(request(served, messages=[{"role": "user", "content": "fox " * (BIG // 4)}])).encode()


def chunks(body: bytes, started: threading.Event, size: int = 2**20) -> Iterator[bytes]:
    """``body`` as a chunked upload (no Content-Length), a little at a time."""
    for start in range(0, len(body), size):
        yield body[start:start + size]
        started.set()
        time.sleep(0.01)


def while_sending(url: str, body: bytes, model: str, chunked: bool) -> tuple[httpx.Response, float]:
    """(the response to ``body``, how long a small request took while ``body`` was being refused)."""
    started, result = threading.Event(), {}

    def send_big() -> None:
        with httpx.Client(base_url=url, headers=AUTH, timeout=120) as client:
            content = chunks(body, started) if chunked else body
            if not chunked:
                started.set()
            try:
                result["big"] = client.post("/v1/chat/completions", content=content)
            except httpx.HTTPError as error:
                result["big"] = error

    thread = threading.Thread(target=send_big)
    thread.start()
    assert started.wait(30)
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        began = time.monotonic()
        small = client.post("/v1/chat/completions", json={"model": model, "max_tokens": 2,
                                                          "messages": [{"role": "user", "content": "hi"}]})
        took = time.monotonic() - began
    assert small.status_code == 200, small.text
    thread.join(120)
    return result["big"], took


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_20mb_body_over_the_limit_is_refused_while_others_are_served(served: Served, chunked: bool) -> None:
    big, took = while_sending(served.url, big_body(served), served.ids["demo"], chunked)  # limit: 256 KiB
    assert took < 2
    assert isinstance(big, httpx.Response), big  # the rest of the upload is read and dropped, not cut off
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"


def test_a_20mb_body_under_the_limit_does_not_hold_up_others(served: Served, vector_files) -> None:
    """Within the body limit, the text alone cannot fit the context: refused before tokenizing."""
    app = create_app(serve_config(vector_files, max_body_bytes=64 * 2**20), served.adapter)
    with background_server(app) as url:
        began = time.monotonic()
        big, took = while_sending(url, big_body(served), served.ids["demo"], chunked=False)
        assert took < 2
        assert big.status_code == 400 and big.json()["error"]["code"] == "context_length_exceeded"
        assert time.monotonic() - began < 20


def test_body_limit_counts_streamed_bytes(http: httpx.Client, served: Served) -> None:
    body = json.dumps(request(served, messages=[{"role": "user", "content": "x" * 300_000}])).encode()
    refused = http.post("/v1/chat/completions", content=iter([body[:100_000], body[100_000:]]))
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "request_too_large"
    fits = json.dumps(request(served)).encode()
    assert http.post("/v1/chat/completions", content=iter([fits[:10], fits[10:]])).status_code == 200


def test_deeply_nested_json_is_400(http: httpx.Client, served: Served) -> None:
    for depth in (MAX_JSON_DEPTH + 1, 100, 100_000):
        nested = json.dumps(request(served)).encode()[:-1] + b', "extra": ' + b"[" * depth + b"]" * depth + b"}"
        response = http.post("/v1/chat/completions", content=nested)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_json" and "deeper" in response.json()["error"]["message"]
    fine = json.dumps(request(served, extra=json.loads("[" * 20 + "]" * 20))).encode()
    assert http.post("/v1/chat/completions", content=fine).status_code == 200


def test_the_shape_scan_reads_strings_escapes_and_structure() -> None:
    def depth(text: str | bytes) -> int:
        return json_shape(text.encode() if isinstance(text, str) else text).depth

    def nesting(value) -> int:
        if isinstance(value, dict):
            value = list(value.values())
        return 1 + max(map(nesting, value), default=0) if isinstance(value, list) else 0

    for text in ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, '{"a": 1}', '"[[["', "7",
                 '{"a": "' + "[" * 100 + '"}',  # brackets inside strings do not count
                 '{"a": "\\"[[[[", "b": [1, {"c": []}]}',  # an escaped quote does not end the string
                 '{"a": "\\\\", "b": [[[]]]}',  # an escaped backslash does not escape the quote
                 '{"a": "\\\\\\"[[", "b": [[]], "c": "\\\\\\\\"}'):
        assert depth(text) == nesting(json.loads(text)), text
    assert depth("") == 0
    alternating = "".join("[{" if i % 2 else "{[" for i in range(20)) + "".join("}]" if i % 2 else "]}"
                                                                                 for i in range(19, -1, -1))
    assert depth(alternating) == 40
    assert json_shape(b'{"a": [1, 2, {"b": "x,y,[z]"}], "c": {}}').values == 7  # 4 containers, 3 commas
    chunked = b'{"s": "' + b"x" * (5 << 22) + b'[", "d": ' + b"[" * 40 + b"]" * 40 + b"}"
    assert json_shape(chunked).depth == 41  # the string and the state cross chunk boundaries
    began = time.monotonic()
    shape = json_shape(b"[" + b",".join([b'{"a": [1, 2, {"b": "x\\"y"}]}'] * 500_000) + b"]")
    assert (shape.depth, shape.values) == (4, 500_000 * 6)  # per item: 3 containers, 2 commas inside, 1 after
    assert time.monotonic() - began < 3


def test_too_many_json_values_are_400_before_parsing(adapter) -> None:
    app = create_app(serve_config({}, max_body_bytes=64 * 2**20), adapter)
    model = app.state.catalog.base_id
    with TestClient(app) as client:
        many = {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}],
                "extra": [[]] * MAX_JSON_VALUES}
        response = client.post("/v1/chat/completions", json=many, headers=AUTH)
        assert response.status_code == 400 and "JSON values" in response.json()["error"]["message"]
        fine = many | {"extra": [0] * 1000}
        assert client.post("/v1/chat/completions", json=fine, headers=AUTH).status_code == 200


BAD_FIELDS = [
    ("seed", 2**80), ("seed", -(2**64)), ("seed", 1.5), ("seed", "7"), ("seed", True),
    ("max_tokens", -1), ("max_tokens", 2**80), ("max_tokens", "5"), ("max_tokens", 2.5), ("max_tokens", [4]),
    ("max_completion_tokens", 0), ("temperature", "nan"), ("temperature", 2.5), ("temperature", -0.1),
    ("temperature", "hot"), ("top_p", 0), ("top_p", 1.5), ("top_p", -1), ("n", 2), ("n", 0), ("n", "1"),
    ("stream", "yes"), ("stream", 1), ("stream_options", {"include_usage": "x"}), ("stream_options", []),
    ("stop", [""]), ("stop", ["x"] * 17), ("stop", "y" * 1000), ("stop", 5), ("stop", [1]),
    ("model", ""), ("model", 7), ("model", None), ("messages", "hi"), ("messages", []), ("messages", [1]),
    ("messages", [{"role": "user", "content": 5}]), ("messages", [{"role": "user"}] * 2000),
    ("messages", [{"role": "user", "content": [{"type": "text", "text": 1}]}]),
    ("messages", [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}]),
    ("messages", [{"role": "user", "content": [{"type": "text", "text": "a"}] * 300}]),
]


@pytest.mark.parametrize("field, value", BAD_FIELDS, ids=[f"{f}={str(v)[:20]}" for f, v in BAD_FIELDS])
def test_every_bad_field_is_400(http: httpx.Client, served: Served, field: str, value) -> None:
    response = http.post("/v1/chat/completions", json=request(served, **{field: value}))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["param"].startswith(field)


@pytest.mark.parametrize("raw", [
    b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}',
    b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}',
    b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "seed": 1' + b"0" * 5000 + b"}",
    b'{"model": "M", "messages": [{"role": "user", "content": "hi"}], "top_p": -1e400}',
])
def test_non_finite_and_huge_numbers_are_400(http: httpx.Client, served: Served, raw: bytes) -> None:
    response = http.post("/v1/chat/completions", content=raw.replace(b'"M"', json.dumps(served.ids["demo"]).encode()))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("invalid_json", "invalid_request")


def test_edge_values_are_served(http: httpx.Client, served: Served) -> None:
    for fields in ({"seed": 2**64 - 1, "temperature": 1}, {"seed": -(2**63), "temperature": 0.5, "top_p": 1},
                   {"temperature": 0, "n": 1, "stream": False, "stop": "x" * 256},
                   {"max_completion_tokens": 2, "max_tokens": None, "stream_options": None},
                   {"temperature": 5e-324, "top_p": 1e-9}, {"messages": [{"role": "user", "content": None}]},
                   {"messages": [{"role": "user", "content": []}]}):
        response = http.post("/v1/chat/completions", json=request(served, **fields))
        assert response.status_code == 200, (fields, response.text)


def test_malformed_content_length_is_not_a_500(served: Served) -> None:
    for value in ("9" * 5000, "abc"):
        with httpx.Client(base_url=served.url, headers=AUTH, timeout=30) as client:
            try:
                response = client.post("/v1/chat/completions", content=b"{}", headers={"Content-Length": value})
            except httpx.HTTPError:
                continue  # the HTTP server hung up on it: fine
            assert response.status_code in (400, 413), response.text


def asgi_call(app, headers: list[tuple[bytes, bytes]], chunk_count: int) -> tuple[int, list[dict]]:
    """Run ``app`` on a request of ``chunk_count`` 1000-byte chunks: (chunks read, messages sent)."""
    read, sent = [0], []

    async def receive() -> dict:
        read[0] += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": read[0] < chunk_count}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    asyncio.run(app(scope, receive, send))
    return read[0], sent


def test_body_limit_middleware_reads_no_more_than_the_limit() -> None:
    async def reader(scope, receive, send) -> None:  # an app that wants the whole body
        await Request(scope, receive).body()
        await Response(b"ok")(scope, receive, send)

    limited = BodyLimit(reader, max_bytes=10_000)
    read, sent = asgi_call(limited, [], chunk_count=20_000)  # 20 MB, streamed
    assert read == 11 and sent[0]["status"] == 413  # refused at the first chunk past the limit
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_too_large"
    read, sent = asgi_call(limited, [(b"content-length", b"20000000")], chunk_count=20_000)
    assert read == 0 and sent[0]["status"] == 413  # declared too large: not a byte read
    read, sent = asgi_call(limited, [], chunk_count=10)
    assert read == 10 and sent[0]["status"] == 200
