"""Images of a request: ``data:`` URLs decoded with size and format checks, remote URLs
refused unless allowed (then fetched with a byte cap and a timeout)."""

from __future__ import annotations

import base64
import binascii
import io
import re

import httpx
from PIL import Image, UnidentifiedImageError

from stvcli.serve.errors import ApiError, bad_request

MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding pixels
FETCH_TIMEOUT_S = 10.0

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)$", re.DOTALL)


async def load_image(url: str, *, max_bytes: int, allow_remote: bool, param: str) -> Image.Image:
    """The RGB image an ``image_url`` part names; ApiError (4xx) for anything unusable."""
    if url.startswith("data:"):
        return decode_image(decode_data_url(url, max_bytes=max_bytes, param=param), param=param)
    if url.startswith(("http://", "https://")):
        if not allow_remote:
            raise bad_request(
                "remote image URLs are refused by this server; send the image inline as a "
                "data:image/...;base64 URL, or start the server with --allow-remote-images",
                param=param, code="remote_images_disabled",
            )
        return decode_image(await fetch(url, max_bytes=max_bytes, param=param), param=param)
    raise bad_request("image_url must be a data:image/...;base64 URL (or http(s) with --allow-remote-images)",
                      param=param, code="invalid_image_url")


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
        raise too_large(max_bytes, param)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("malformed base64 in image data URL", param=param, code="invalid_base64") from None
    if len(raw) > max_bytes:
        raise too_large(max_bytes, param)
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
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise bad_request("the image data is not a readable image", param=param, code="invalid_image") from None


async def fetch(url: str, *, max_bytes: int, param: str) -> bytes:
    """Download ``url`` (at most ``max_bytes``); a 400 when it cannot be had."""
    try:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=True, max_redirects=3) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise bad_request(f"fetching the image failed: HTTP {response.status_code}", param=param,
                                      code="image_fetch_failed")
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise too_large(max_bytes, param)
                    chunks.append(chunk)
                return b"".join(chunks)
    except httpx.HTTPError as error:
        raise bad_request(f"fetching the image failed ({type(error).__name__}); the server may have no network",
                          param=param, code="image_fetch_failed") from None


def too_large(max_bytes: int, param: str) -> ApiError:
    return ApiError(413, f"image is over the limit of {max_bytes} bytes (--max-image-bytes)", param=param,
                    code="image_too_large")
