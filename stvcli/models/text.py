"""Adapters that need no family knowledge.

- ``TextAdapter``: text-only decoders (Llama, Qwen2, Mistral, Gemma-3, ...).
- ``GenericAdapter``: an architecture nobody registered (GPT-2, GPT-NeoX, Falcon, OPT,
  Bloom, GPT-J, MPT, ...); its projections are found by structure
  (``stvcli.models.base.discover_projections``), in the decoder, else in the whole tree.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from stvcli.errors import ModelError
from stvcli.models.base import ModelAdapter, discover_projections, settle_chat_template, without_duplicate_bos
from stvcli.models.registry import register
from stvcli.models.vision import VisionAdapter

__all__ = ["GenericAdapter", "TextAdapter", "discover_projections"]


@register
class TextAdapter(ModelAdapter):
    """Text-only causal LMs: prompts are plain text (no images)."""

    family: ClassVar[str] = "text"
    architectures: ClassVar[tuple[str, ...]] = (
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "Gemma2ForCausalLM",
        "Gemma3ForCausalLM",
        "Phi3ForCausalLM",
        "OlmoForCausalLM",
        "Olmo2ForCausalLM",
        "GraniteForCausalLM",
    )
    prefix_sharing: bool = True

    def __init__(self, model: nn.Module, processor: Any, name: str, **kwargs: Any) -> None:
        super().__init__(model, processor, name, **kwargs)
        settle_chat_template(self, kwargs.get("use_chat_template"))

    def render_text(self, text: str, n_images: int) -> str:
        rendered = super().render_text(text, n_images)
        return without_duplicate_bos(self, rendered) if self.use_chat_template else rendered


class GenericAdapter(VisionAdapter):
    """An unregistered architecture: projections from the decoder or the module tree.

    Prompts are plain text unless the processor has an image processor; the shared-prefix
    path stays off (``prefix_sharing`` False): it is only checked for registered families.
    """

    family: ClassVar[str] = "generic"
    chat_template_default: ClassVar[bool] = False

    def _resolve_projections(self, pattern: str | None) -> list[nn.Module]:
        if pattern is not None:
            return super()._resolve_projections(pattern)
        try:
            return super()._resolve_projections(None)
        except (ModelError, AttributeError, NotImplementedError, TypeError):
            return discover_projections(self.model, self.name, config=self.text_config)
