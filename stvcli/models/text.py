"""Adapters that need no family knowledge, and the shared base of processor-driven VLMs.

- ``TextAdapter``: text-only decoders (Llama, Qwen2, Mistral, Gemma-3, ...).
- ``VisionAdapter``: base of the VLM families whose processor expands one image token
  per image and takes ``images=`` (Idefics2/3, LLaVA, Qwen2-VL).
- ``GenericAdapter``: an architecture nobody registered; its projections are found in
  the module tree by ``discover_projections``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import torch
from torch import nn

from stvcli.errors import ModelError
from stvcli.models.base import ModelAdapter
from stvcli.models.registry import register
from stvcli.prompt import IMAGE_PLACEHOLDER

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


def _split_images(text: str) -> list[dict[str, str]]:
    """Chat-message content for ``text``: text and image items in prompt order."""
    content: list[dict[str, str]] = []
    for index, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if index:
            content.append({"type": "image"})
        if piece:
            content.append({"type": "text", "text": piece})
    return content


def chat_template_of(adapter: ModelAdapter) -> str | None:
    """The chat template the adapter's processor or tokenizer ships, if any."""
    return getattr(adapter.processor, "chat_template", None) or getattr(adapter.tokenizer, "chat_template", None)


def settle_chat_template(adapter: ModelAdapter, requested: bool | None) -> None:
    """Keep ``use_chat_template`` only where a template exists.

    The family default (``requested`` None) quietly falls back to raw text; an explicit
    request for a template the model lacks is a ModelError.
    """
    if not adapter.use_chat_template or chat_template_of(adapter) is not None:
        return
    if requested:
        raise ModelError(f"{adapter.name} has no chat template; run without --chat-template or use a model that ships one")
    adapter.use_chat_template = False


def without_duplicate_bos(adapter: ModelAdapter, rendered: str) -> str:
    """Drop a template's leading BOS text when the tokenizer adds BOS itself (else BOS twice)."""
    tokenizer = adapter.tokenizer
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or not rendered.startswith(bos):
        return rendered
    ids = tokenizer("x")["input_ids"]
    return rendered[len(bos) :] if ids and ids[0] == tokenizer.bos_token_id else rendered


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

    def __init__(self, model: nn.Module, processor: Any, name: str, **kwargs: Any) -> None:
        super().__init__(model, processor, name, **kwargs)
        settle_chat_template(self, kwargs.get("use_chat_template"))

    def render_text(self, text: str, n_images: int) -> str:
        rendered = super().render_text(text, n_images)
        return without_duplicate_bos(self, rendered) if self.use_chat_template else rendered


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
