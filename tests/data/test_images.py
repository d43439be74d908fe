"""Lazy image references, identity keys and answer parsing."""

import io

import pytest
from PIL import Image

from stvcli.data.columns import answers_of
from stvcli.data.images import FileImage, decode_image_value, image_keys, pil_key, ref_key, resolve_path
from stvcli.data.types import Item
from stvcli.errors import DataError


def png_bytes(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_image_values(tmp_path):
    assert decode_image_value({"bytes": png_bytes("red"), "path": None}).getpixel((0, 0)) == (255, 0, 0)
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes("blue"))
    assert decode_image_value({"bytes": None, "path": str(path)}).getpixel((0, 0)) == (0, 0, 255)
    image = Image.new("RGB", (1, 1))
    assert decode_image_value(image) is image
    with pytest.raises(ValueError):
        decode_image_value({"bytes": None, "path": None})


def test_file_image_is_lazy_and_fails_clearly(tmp_path):
    path = tmp_path / "y.png"
    ref = FileImage(str(path))  # nothing is read yet
    with pytest.raises(DataError, match="cannot read image .*y.png"):
        ref()
    path.write_bytes(png_bytes("green"))
    assert ref().size == (3, 2) and ref.key == "file:" + str(path)


def test_identity_keys():
    red, blue = Image.new("RGB", (2, 2), "red"), Image.new("RGB", (2, 2), "blue")
    assert pil_key(red) == pil_key(Image.new("RGB", (2, 2), "red")) != pil_key(blue)
    assert ref_key(FileImage("/a.png")) == "file:/a.png" and ref_key(lambda: red) is None
    assert image_keys(Item("1", images=(red, FileImage("/a.png")))) == (pil_key(red), "file:/a.png")
    assert image_keys(Item("1", images=(lambda: red,))) is None
    assert image_keys(Item("1", images=(red,), fields={"image_keys": ("mine",)})) == ("mine",)


def test_resolve_path():
    assert resolve_path("images/a.png", "/data/set") == "/data/set/images/a.png"
    assert resolve_path("./flowers-102/jpg/x.jpg", "/root") == "/root/flowers-102/jpg/x.jpg"
    assert resolve_path("/abs/a.png", "/data") == "/abs/a.png"


def test_answers_of_every_layout():
    assert answers_of(["red", " red ", ""]) == ("red", "red")
    assert answers_of([{"answer": "yes", "answer_confidence": "maybe"}, {"answer": "no"}]) == ("yes", "no")
    assert answers_of("  cold ") == ("cold",)
    assert answers_of(None) == () and answers_of("") == ()
