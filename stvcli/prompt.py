"""The neutral prompt: text with ``<image>`` placeholders plus the images they stand for.

Data code builds these; each model adapter turns them into its own model inputs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from PIL import Image

IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class Prompt:
    text: str
    images: tuple[Image.Image, ...] = field(default=())

    def __post_init__(self) -> None:
        n = self.text.count(IMAGE_PLACEHOLDER)
        if n != len(self.images):
            raise ValueError(f"prompt has {n} {IMAGE_PLACEHOLDER} placeholders but {len(self.images)} images")

    def __add__(self, other: "Prompt") -> "Prompt":
        return Prompt(self.text + other.text, self.images + other.images)


@dataclass(frozen=True)
class _ReservedIndex:
    strings: frozenset[str]
    starts: re.Pattern[str]  # any first character of a reserved string
    lengths: dict[str, tuple[int, ...]]  # first character -> lengths of its strings, longest first


@lru_cache(maxsize=32)
def _reserved_index(reserved: tuple[str, ...]) -> _ReservedIndex | None:
    strings = frozenset(s for s in reserved if s)
    if not strings:
        return None
    lengths: dict[str, set[int]] = {}
    for text in strings:
        lengths.setdefault(text[0], set()).add(len(text))
    starts = re.compile("[" + "".join(re.escape(c) for c in sorted(lengths)) + "]")
    return _ReservedIndex(strings, starts, {c: tuple(sorted(n, reverse=True)) for c, n in lengths.items()})


def reserved_in(text: str, reserved: Iterable[str] = (IMAGE_PLACEHOLDER,)) -> str | None:
    """The first reserved string in ``text`` (None when there is none).

    User text (questions, answers, class names, chat messages) must not contain the
    ``<image>`` placeholder nor a model's image or special tokens
    (``ModelAdapter.reserved_text``): a prompt would then hold more image slots than
    images, or markup the user never meant (an image pad, a chat turn, an end of text).
    Fast for thousands of reserved strings (Llama-3 has 256): only positions holding a
    reserved string's first character are looked at.
    """
    index = _reserved_index(tuple(reserved))
    if index is None:
        return None
    for start in index.starts.finditer(text):
        at = start.start()
        for length in index.lengths[text[at]]:
            if text[at : at + length] in index.strings:
                return text[at : at + length]
    return None
