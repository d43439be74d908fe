"""LLaVA-1.5 (llava-hf/llava-1.5-7b-hf): CLIP tower + MLP projector + Llama/Vicuna.

Each ``<image>`` is expanded by the processor into (size/patch)^2 image tokens,
+ ``num_additional_image_tokens`` (the CLS token: 1 for CLIP, 0 for SigLIP) - 1 under the
"default" feature-select strategy. Old processor configs lack ``patch_size``; it
is taken from the model's vision config so the counts match the vision features.
"""

from __future__ import annotations

from typing import ClassVar

from stvcli.models.registry import register
from stvcli.models.vision import VisionAdapter


@register
class LlavaAdapter(VisionAdapter):
    family: ClassVar[str] = "llava"
    architectures: ClassVar[tuple[str, ...]] = ("LlavaForConditionalGeneration",)
    prefix_sharing: bool = True

    def _configure_processor(self) -> None:
        processor, config = self.processor, self.model.config
        if not hasattr(processor, "image_processor"):
            return
        if getattr(processor, "patch_size", None) is None:
            processor.patch_size = config.vision_config.patch_size
            has_cls = config.vision_config.model_type == "clip_vision_model"
            processor.num_additional_image_tokens = 1 if has_cls else 0
        if getattr(processor, "vision_feature_select_strategy", None) is None:
            processor.vision_feature_select_strategy = config.vision_feature_select_strategy
