"""Request bodies bounded before anything parses them.

``BodyLimit`` is a pure ASGI middleware: a declared ``Content-Length`` over the limit
is refused with 413 before a byte of the body is read; otherwise it counts the body as
it streams in and refuses as soon as the count passes the limit, so no request ever
holds more than ``max_bytes`` of body in memory. ``parse_json`` turns a body into a
JSON object, refusing nesting deeper than ``max_depth`` and more than ``max_values``
values with a vectorized scan of the raw bytes before ``json.loads`` builds anything
(``json.loads`` holds the GIL, so a body of millions of tiny values would stall every
request), and refusing the NaN/Infinity literals (numbers that overflow to infinity
are refused by the schema's finite-number fields).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from stvcli.serve.errors import ApiError, bad_request

MAX_JSON_DEPTH = 32  # a chat request needs 6 levels; extras (JSON schemas, ...) get room
MAX_JSON_VALUES = 200_000  # json.loads takes ~0.1 s for these; 30 M small lists would take ~25 s

_CHUNK = 1 << 22  # bytes per step of the depth scan (bounds its scratch memory)
_QUOTE, _COMMA = ord('"'), ord(",")
_STEPS = np.zeros(256, dtype=np.int8)  # byte -> its change of nesting depth
_STEPS[[ord("["), ord("{")]] = 1
_STEPS[[ord("]"), ord("}")]] = -1


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes (--max-body-bytes)",
                         code="request_too_large")


class BodyLimit:
    """ASGI middleware: HTTP request bodies of at most ``max_bytes``, else 413."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:  # refused unread; the server drops the rest
            await BodyTooLarge(self.max_bytes).response()(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as error:  # the app let it through its own error handlers
            if started:
                raise
            await error.response()(scope, receive, send)


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            if not (text.isascii() and text.isdigit()):
                return None  # the HTTP server refuses malformed ones
            return int(text) if len(text) <= 18 else 10**18  # no int() of thousands of digits
    return None


@dataclass(frozen=True)
class JsonShape:
    depth: int  # deepest nesting of arrays/objects
    values: int  # arrays, objects and their elements (opening brackets plus commas)


def json_shape(body: bytes) -> JsonShape:
    """The shape of the JSON text ``body``, from its raw bytes.

    One vectorized pass, a chunk at a time (numpy releases the GIL): escaped backslashes
    and quotes are dropped, the remaining quotes toggle "inside a string", and outside
    strings the running sum of the brackets is the depth and brackets and commas are
    counted. For text that is not JSON the numbers mean little; ``json.loads`` then says
    what is wrong with it.
    """
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")  # left to right, as JSON reads escapes
    data = np.frombuffer(body, dtype=np.uint8)
    deepest = depth = values = inside = 0
    for start in range(0, len(data), _CHUNK):
        chunk = data[start:start + _CHUNK]
        outside = ((np.cumsum(chunk == _QUOTE, dtype=np.uint8) + inside) & 1) == 0  # a quote opens: inside
        steps = np.where(outside, _STEPS[chunk], 0)
        levels = np.cumsum(steps, dtype=np.int32) + depth
        deepest = max(deepest, int(levels.max()))
        values += int(np.count_nonzero(steps == 1)) + int(np.count_nonzero(outside & (chunk == _COMMA)))
        depth, inside = int(levels[-1]), int(not outside[-1])
    return JsonShape(deepest, values)


def parse_json(body: bytes, max_depth: int = MAX_JSON_DEPTH, max_values: int = MAX_JSON_VALUES) -> dict:
    """The body as a JSON object; a 400 for anything else, or for JSON nested deeper than
    ``max_depth`` or holding more than ``max_values`` values, judged before ``json.loads``
    builds anything (CPU-bound: call it off the event loop)."""
    shape = json_shape(body)
    if shape.depth > max_depth:
        raise bad_request(f"the request body nests arrays/objects deeper than {max_depth} levels",
                          code="invalid_json")
    if shape.values > max_values:
        raise bad_request(f"the request body holds more than {max_values} JSON values", code="invalid_json")
    try:
        payload = json.loads(body, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad_request(f"the request body is not valid JSON ({error})", code="invalid_json") from None
    except (ValueError, RecursionError) as error:  # NaN/Infinity, integers of thousands of digits
        raise bad_request(f"the request body has an unusable number ({error})", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    return payload


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")
