"""Lazy image references and image identity keys.

Items hold zero-argument callables instead of decoded images, so large sets cost
nothing until a prompt is built. Each source also records an identity key per image
(``file:<absolute path>`` or ``sha1:<digest>``) in ``Item.fields["image_keys"]``; the
loader uses them to keep the support pool and the evaluation items disjoint.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from stvcli.data.types import ImageRef, Item, load_image
from stvcli.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class FileImage:
    """An image file opened on demand."""

    path: str

    @property
    def key(self) -> str:
        return "file:" + self.path

    def __call__(self) -> Image.Image:
        try:
            image = Image.open(self.path)
            image.load()
        except (OSError, ValueError) as exc:  # missing, truncated or not an image
            raise DataError(f"cannot read image {self.path} ({exc}); fix the file or point --image-root elsewhere") from exc
        return image


@dataclass(frozen=True, eq=False)
class HubImage:
    """Row ``index`` of a hub data set's image column (stored undecoded), decoded on demand."""

    dataset: Any = field(repr=False)  # a datasets.Dataset whose image column has decode=False
    index: int
    column: str
    position: int | None = None  # for a column holding a list of images
    label: str = ""

    def __call__(self) -> Image.Image:
        value = self.dataset[self.index][self.column]
        if self.position is not None:
            value = value[self.position]
        try:
            return decode_image_value(value)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image {self.index} of {self.label} ({exc}); the data set may be corrupt") from exc


def decode_image_value(value: Any) -> Image.Image:
    """Decode a ``datasets`` undecoded image value ({bytes, path}) or a PIL image."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            image = Image.open(io.BytesIO(value["bytes"]))
        elif value.get("path"):
            image = Image.open(value["path"])
        else:
            raise ValueError("empty image value")
        image.load()
        return image
    raise ValueError(f"not an image value: {type(value).__name__}")


def bytes_key(data: bytes) -> str:
    return "sha1:" + hashlib.sha1(data).hexdigest()


def pil_key(image: Image.Image) -> str:
    """Identity of an in-memory image: its mode, size and pixels."""
    digest = hashlib.sha1(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return "sha1:" + digest.hexdigest()


def ref_key(ref: ImageRef) -> str | None:
    """The identity key of one image reference, or None when it cannot be known cheaply."""
    if isinstance(ref, FileImage):
        return ref.key
    if isinstance(ref, Image.Image):
        return pil_key(ref)
    return None


def image_keys(item: Item) -> tuple[str, ...] | None:
    """The identity keys of an item's own images (recorded by the source, else derived)."""
    recorded = item.fields.get("image_keys")
    if recorded is not None:
        return tuple(recorded)
    keys = tuple(ref_key(ref) for ref in item.images)
    return None if any(key is None for key in keys) else keys  # type: ignore[return-value]


def resolve_path(value: str, base: str) -> str:
    """An image path from a record, made absolute against ``base`` (the file's folder or --image-root)."""
    path = os.path.expanduser(value)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))


def check_files_exist(paths: list[str], label: str) -> None:
    """One DataError naming the first missing image and the fix."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(paths)} images of {label} are missing (first: {missing[0]}); "
            "set --image-root to the folder that holds them"
        )


def check_readable(items: list[Item]) -> None:
    """Decode every image of the given items (own and episode support images) once."""
    for item in items:
        refs = list(item.images) + [ref for ref, _ in item.fields.get("support", ())]
        for ref in refs:
            try:
                load_image(ref)
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001 - any decoder failure is a data problem
                raise DataError(f"cannot read an image of item {item.uid} ({exc}); check the data") from exc
