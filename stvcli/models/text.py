"""Adapters that need no family knowledge.

- ``TextAdapter``: text-only decoders (Llama, Qwen2, Mistral, Gemma-3, ...).
- ``GenericAdapter``: an architecture nobody registered; its projections are found in
  the module tree by ``discover_projections``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from torch import nn

from stvcli.errors import ModelError
from stvcli.models.base import ModelAdapter, settle_chat_template, without_duplicate_bos
from stvcli.models.registry import register
from stvcli.models.vision import VisionAdapter

# `<prefix>.layers.N.<...attn...>.o_proj` (or GPT-2 / Qwen-VL style `h.N.attn.c_proj`).
_LAYER_PROJECTION = re.compile(
    r"^(?P<prefix>(?:.+\.)?(?:layers|h))\.(?P<index>\d+)\.(?:[^.]+\.)*?[^.]*attn[^.]*\.(?:o_proj|c_proj)$"
)


def discover_projections(model: nn.Module, name: str = "model") -> list[nn.Module]:
    """The attention output projections of the one stack of numbered layers in ``model``.

    Groups ``*.layers.N.*attn*.{o_proj,c_proj}`` linear modules by the module holding the
    layers; exactly one complete group must exist (several, e.g. a vision tower that
    also uses ``o_proj``, is ambiguous). Raises ModelError naming ``--projection-pattern``.
    """
    groups: dict[str, dict[int, nn.Module]] = {}
    for module_name, module in model.named_modules():
        match = _LAYER_PROJECTION.match(module_name)
        if match and isinstance(module, nn.Linear):
            groups.setdefault(match["prefix"], {}).setdefault(int(match["index"]), module)
    complete = {p: g for p, g in groups.items() if sorted(g) == list(range(len(g)))}
    if not complete:
        raise ModelError(
            f"{name}: found no decoder attention output projections (layers.N.*attn*.o_proj or c_proj); "
            "pass --projection-pattern (a regex over module names matching one linear per layer)"
        )
    if len(complete) > 1:
        raise ModelError(
            f"{name}: attention output projections found under several stacks ({', '.join(sorted(complete))}); "
            "pass --projection-pattern to pick the language decoder's"
        )
    (group,) = complete.values()
    return [group[i] for i in range(len(group))]


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
    """An unregistered architecture: projections from the decoder or the module tree."""

    family: ClassVar[str] = "generic"
    chat_template_default: ClassVar[bool] = False

    def _resolve_projections(self, pattern: str | None) -> list[nn.Module]:
        if pattern is not None:
            return super()._resolve_projections(pattern)
        try:
            return super()._resolve_projections(None)
        except (ModelError, AttributeError, NotImplementedError, TypeError):
            return discover_projections(self.model, self.name)
