"""Idefics2 (HuggingFaceM4/idefics2-8b): SigLIP tower + perceiver resampler + Mistral.

Each ``<image>`` becomes ``<fake_token_around_image><image>*n<fake_token_around_image>``
(n = resampler latents, 64 on the real model), expanded by the processor. Image
splitting is switched off: many-shot prompts cannot afford 5x the image tokens. The
perceiver resampler has its own ``o_proj`` modules; the base class resolves the text
decoder first (``get_decoder()``), so only the language layers count.
"""

from __future__ import annotations

from typing import ClassVar

from stvcli.models.registry import register
from stvcli.models.vision import VisionAdapter


@register
class Idefics2Adapter(VisionAdapter):
    family: ClassVar[str] = "idefics2"
    architectures: ClassVar[tuple[str, ...]] = ("Idefics2ForConditionalGeneration",)
    prefix_sharing: bool = True
    nested_images: ClassVar[bool] = True
    reserved_markup: ClassVar[tuple[str, ...]] = ("<fake_token_around_image>", "<end_of_utterance>")
    #: MTV's reference code prompts Idefics2 with raw text; --chat-template opts in.
    chat_template_default: ClassVar[bool] = False

    def _configure_processor(self) -> None:
        image_processor = getattr(self.processor, "image_processor", None)
        if image_processor is not None:
            image_processor.do_image_splitting = False
