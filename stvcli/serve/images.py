"""Images of a request: ``data:`` URLs decoded with size and format checks, remote URLs
refused unless allowed (then fetched by ``stvcli.serve.remote``: public addresses only,
with a byte cap and a deadline). Decoding runs off the event loop."""

from __future__ import annotations

import base64
import binascii
import io
import re

from PIL import Image
from starlette.concurrency import run_in_threadpool

from stvcli.serve.errors import ApiError, bad_request, image_too_large
from stvcli.serve.remote import fetch

MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding pixels

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)$", re.DOTALL)


async def load_image(url: str, *, max_bytes: int, allow_remote: bool, param: str) -> Image.Image:
    """The RGB image an ``image_url`` part names; ApiError (4xx) for anything unusable."""
    if url.startswith("data:"):
        return await run_in_threadpool(_decode_data_image, url, max_bytes, param)
    if url.startswith(("http://", "https://")):
        if not allow_remote:
            raise bad_request(
                "remote image URLs are refused by this server; send the image inline as a "
                "data:image/...;base64 URL, or start the server with --allow-remote-images",
                param=param, code="remote_images_disabled",
            )
        raw = await fetch(url, max_bytes=max_bytes, param=param)
        return await run_in_threadpool(decode_image, raw, param=param)
    raise bad_request("image_url must be a data:image/...;base64 URL (or http(s) with --allow-remote-images)",
                      param=param, code="invalid_image_url")


def _decode_data_image(url: str, max_bytes: int, param: str) -> Image.Image:
    return decode_image(decode_data_url(url, max_bytes=max_bytes, param=param), param=param)


def decode_data_url(url: str, *, max_bytes: int, param: str) -> bytes:
    match = _DATA_URL.match(url)
    if match is None:
        raise bad_request("malformed data URL: expected data:image/<format>;base64,<data>", param=param,
                          code="invalid_image_url")
    mime = match["mime"] or ""
    if mime and not mime.startswith("image/"):
        raise bad_request(f"data URL has media type {mime!r}, expected image/*", param=param, code="invalid_image_url")
    data = "".join(match["data"].split())  # tolerate line breaks inside the base64 text
    if len(data) // 4 * 3 > max_bytes + 2:
        raise image_too_large(max_bytes, param)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("malformed base64 in image data URL", param=param, code="invalid_base64") from None
    if len(raw) > max_bytes:
        raise image_too_large(max_bytes, param)
    return raw


def decode_image(raw: bytes, *, param: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(raw)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise bad_request(f"image of {image.width}x{image.height} pixels is over the limit of {MAX_PIXELS}",
                                  param=param, code="image_too_large")
            return image.convert("RGB")
    except ApiError:
        raise
    except Exception:  # noqa: BLE001 - decoders raise all kinds (SyntaxError, EOFError, ...) on bad bytes
        raise bad_request("the image data is not a readable image", param=param, code="invalid_image") from None
