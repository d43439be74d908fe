"""Qwen2-VL and Qwen2.5-VL (Qwen/Qwen2-VL-7B-Instruct, Qwen/Qwen2.5-VL-7B-Instruct).

Each ``<image>`` becomes ``<|vision_start|><|image_pad|><|vision_end|>``; the processor
expands ``<|image_pad|>`` to t*h*w/merge^2 tokens. In transformers 5.x the models need
``mm_token_type_ids`` (0 text, 1 image) for their 3-D rotary positions (Qwen2.5-VL
silently falls back to 1-D positions without it), so every batch carries it, text-only
ones included.

Without torchvision the stock processors refuse to construct (they check their video
processor's class); ``processor_from_parts`` builds an image-only subclass instead.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor

from stvcli.models.registry import register
from stvcli.models.vision import VisionAdapter


def _image_only(processor_class: type) -> type:
    """``processor_class`` without its video processor (image and text inputs only)."""

    class ImageOnlyProcessor(processor_class):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **_: Any):
            super().__init__(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)

    ImageOnlyProcessor.__name__ = ImageOnlyProcessor.__qualname__ = f"{processor_class.__name__}ImageOnly"
    return ImageOnlyProcessor


Qwen2VLImageOnlyProcessor = _image_only(Qwen2VLProcessor)
Qwen2_5_VLImageOnlyProcessor = _image_only(Qwen2_5_VLProcessor)


@register
class Qwen2VLAdapter(VisionAdapter):
    family: ClassVar[str] = "qwen2-vl"
    architectures: ClassVar[tuple[str, ...]] = ("Qwen2VLForConditionalGeneration",)
    prefix_sharing: bool = True
    processor_class: ClassVar[type] = Qwen2VLImageOnlyProcessor
    reserved_markup: ClassVar[tuple[str, ...]] = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

    @classmethod
    def processor_from_parts(cls, config: Any, tokenizer: Any, image_processor: Any) -> Any:
        return cls.processor_class(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=getattr(tokenizer, "chat_template", None)
        )

    def _token(self, attribute: str, default: str) -> str:
        token_id = getattr(self.model.config, attribute, None)
        return default if token_id is None else self.tokenizer.convert_ids_to_tokens(int(token_id))

    def image_text(self) -> str:
        start = self._token("vision_start_token_id", "<|vision_start|>")
        end = self._token("vision_end_token_id", "<|vision_end|>")
        return f"{start}{self._token('image_token_id', '<|image_pad|>')}{end}"

    def _encode_batch(self, texts: list[str], images: list[list[Any]]) -> dict[str, torch.Tensor]:
        inputs = super()._encode_batch(texts, images)
        if "mm_token_type_ids" not in inputs:
            ids = inputs["input_ids"]
            types = torch.zeros_like(ids)
            types[ids == int(self.model.config.image_token_id)] = 1
            inputs["mm_token_type_ids"] = types
        return inputs


@register
class Qwen25VLAdapter(Qwen2VLAdapter):
    family: ClassVar[str] = "qwen2.5-vl"
    architectures: ClassVar[tuple[str, ...]] = ("Qwen2_5_VLForConditionalGeneration",)
    processor_class: ClassVar[type] = Qwen2_5_VLImageOnlyProcessor
