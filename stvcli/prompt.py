"""The neutral prompt: text with ``<image>`` placeholders plus the images they stand for.

Data code builds these; each model adapter turns them into its own model inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
