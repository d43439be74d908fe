"""``VisionAdapter``: the shared base of the VLM families whose processor expands one
image token per image and takes ``images=`` (Idefics2/3, LLaVA, Qwen2-VL)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from stvcli.errors import ModelError
from stvcli.models.base import ModelAdapter, settle_chat_template, without_duplicate_bos
from stvcli.prompt import IMAGE_PLACEHOLDER


def _split_images(text: str) -> list[dict[str, str]]:
    """Chat-message content for ``text``: text and image items in prompt order."""
    content: list[dict[str, str]] = []
    for index, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if index:
            content.append({"type": "image"})
        if piece:
            content.append({"type": "text", "text": piece})
    return content


class VisionAdapter(ModelAdapter):
    """A VLM driven by its processor: one image token per image, expanded by the processor.

    Subclasses set how one image is written in raw (template-free) text and how images
    are handed to the processor (flat list or one list per row).
    """

    chat_template_default: ClassVar[bool] = True
    #: Whether the processor wants images as one list per row (else one flat list).
    nested_images: ClassVar[bool] = False

    def __init__(self, model: nn.Module, processor: Any, name: str, **kwargs: Any) -> None:
        super().__init__(model, processor, name, **kwargs)
        self._configure_processor()
        settle_chat_template(self, kwargs.get("use_chat_template"))

    @classmethod
    def processor_from_parts(cls, config: Any, tokenizer: Any, image_processor: Any) -> Any:
        """A processor built from its parts, for when ``AutoProcessor`` refuses (None: cannot)."""
        return None

    def _configure_processor(self) -> None:
        """Hook for family fix-ups of processor settings (image splitting, patch size)."""

    @property
    def has_images(self) -> bool:
        return getattr(self.processor, "image_processor", None) is not None

    def image_text(self) -> str:
        """How one image is written in the text the processor sees (before its expansion)."""
        return getattr(self.processor, "image_token", None) or IMAGE_PLACEHOLDER

    def render_text(self, text: str, n_images: int) -> str:
        if n_images and not self.has_images:
            raise ModelError(f"{self.name} has no image processor; the prompt has {n_images} image(s)")
        if self.use_chat_template:
            messages = [{"role": "user", "content": _split_images(text)}]
            renderer = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
            rendered = renderer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return without_duplicate_bos(self, rendered)
        return text.replace(IMAGE_PLACEHOLDER, self.image_text())

    def _encode_batch(self, texts: list[str], images: list[list[Any]]) -> dict[str, torch.Tensor]:
        """Processor call (left padded); rows without images go through the tokenizer alone."""
        if not any(images):
            return dict(self.tokenizer(texts, padding=True, return_tensors="pt"))
        payload: Any = images if self.nested_images else [image for row in images for image in row]
        return dict(self.processor(text=texts, images=payload, padding=True, return_tensors="pt"))
