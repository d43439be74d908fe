"""Idefics3 and SmolVLM (HuggingFaceM4/Idefics3-8B-Llama3, HuggingFaceTB/SmolVLM-Instruct).

Each ``<image>`` becomes ``<fake_token_around_image><global-img><image>*n
<fake_token_around_image>`` with n = (size/patch)^2 / scale_factor^2, expanded by the
processor. Tiling (image splitting) is switched off so that one image costs one
global tile; the processor resizes the image to its ``max_image_size``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import Idefics3Processor

from stvcli.models.registry import register
from stvcli.models.vision import VisionAdapter


def image_seq_len(config: Any) -> int:
    """Image tokens per tile: (image_size / patch_size)^2 / scale_factor^2."""
    vision = config.vision_config
    return int((vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2)


@register
class Idefics3Adapter(VisionAdapter):
    family: ClassVar[str] = "idefics3"
    architectures: ClassVar[tuple[str, ...]] = (
        "Idefics3ForConditionalGeneration",
        "SmolVLMForConditionalGeneration",
    )
    prefix_sharing: bool = True
    nested_images: ClassVar[bool] = True
    reserved_markup: ClassVar[tuple[str, ...]] = ("<fake_token_around_image>", "<global-img>", "<end_of_utterance>")

    @classmethod
    def processor_from_parts(cls, config: Any, tokenizer: Any, image_processor: Any) -> Any:
        # SmolVLM's own processor insists on a (torchvision) video processor.
        return Idefics3Processor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            image_seq_len=image_seq_len(config),
            chat_template=getattr(tokenizer, "chat_template", None),
        )

    def _configure_processor(self) -> None:
        image_processor = getattr(self.processor, "image_processor", None)
        if image_processor is not None:
            image_processor.do_image_splitting = False
