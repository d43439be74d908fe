"""Which adapter serves which model: architecture lookup and short model names.

Family modules register their adapter class with ``@register``; lookups go by
``config.architectures``. Every module of ``stvcli.models`` other than the
infrastructure (``INFRASTRUCTURE_MODULES``) is a family module, imported once before
the first lookup, so a new family is one new file. An architecture nobody registered
gets ``GenericAdapter``, which discovers the attention output projections from the
module tree.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from stvcli.errors import ModelError
from stvcli.models.base import ModelAdapter
from stvcli.registry import Registry

#: Modules of ``stvcli.models`` that define no family (discovery skips them).
INFRASTRUCTURE_MODULES = frozenset({"base", "registry", "loading", "vision", "remote_code"})

A = TypeVar("A", bound=type[ModelAdapter])

_discovered = False


def family_modules() -> list[str]:
    """Full names of the family modules: every module of ``stvcli.models`` but the infrastructure."""
    import stvcli.models as package

    found = pkgutil.iter_modules(package.__path__)
    return [f"{package.__name__}.{m.name}" for m in found if m.name not in INFRASTRUCTURE_MODULES]


def discover_families() -> None:
    """Import every family module once (each registers its adapters on import)."""
    global _discovered
    if _discovered:
        return
    for module in family_modules():
        importlib.import_module(module)
    _discovered = True


ADAPTERS: Registry[type[ModelAdapter]] = Registry("architecture", error=ModelError, discover=discover_families)


@dataclass(frozen=True)
class ModelGeometry:
    """What ``stv plan`` needs of a model without its weights or the hub: the language
    decoder's shape, the context the stages check prompts against, and what one image
    costs in a prompt.

    ``context_length`` is the decoder config's ``max_position_embeddings`` (what
    ``ModelAdapter.context_length`` reads); ``trained_length`` is a shorter length the
    model was trained at where the config names one (Qwen-VL's ``seq_length``: past it,
    dynamic NTK/logn attention, and padded batches are refused). ``image_tokens`` are the
    visual tokens of one image and ``image_extra`` the tokens around them (Idefics2's two
    ``<fake_token_around_image>``; Qwen-VL's ``Picture k:<img>``, ``</img>`` and newline);
    ``image_grid`` > 0 marks a dynamic-resolution family (Qwen2-VL): an image of h x w
    pixels costs about (h / grid) x (w / grid) tokens, so ``image_tokens`` is None and
    the count depends on the image size assumed. ``parameters``: the whole model,
    vision tower included (model card / checkpoint size), for the weights' memory.
    """

    n_layers: int
    n_heads: int
    head_dim: int
    kv_heads: int
    context_length: int
    parameters: int
    image_tokens: int | None = None
    image_extra: int = 0
    image_grid: int = 0
    trained_length: int | None = None
    sliding_window: int | None = None  # attention window of (some of) the decoder's layers, if any
    vision: bool = False
    note: str = ""


# Values of each hub snapshot's config.json (and processor settings for the image tokens),
# kept here so that `stv plan --model <short name>` works offline. They were not re-read from
# the hub when written down: each is the well-known published value (config, model card or
# paper), named in ``note``. tests/test_plan.py checks Idefics2's and Qwen-VL's against what
# `stv plan` reads from configs of their shape (transformers' Idefics2 defaults, Qwen-VL's JSON).
_IDEFICS2 = ModelGeometry(  # Mistral-7B decoder (text_config); perceiver resampler: 64 latents per image
    32, 32, 128, 8, 32768, 8_400_000_000, image_tokens=64, image_extra=2, sliding_window=4096, vision=True,
    note="text_config: Mistral-7B, max_position_embeddings 32768, sliding_window 4096 (Mistral's); "
         "perceiver_config.resampler_n_latents 64; image splitting off (docs/architecture.md); ~8.4B parameters "
         "(model card)")
_IDEFICS3 = ModelGeometry(  # Llama-3.1-8B decoder; 364 px tiles of 14 px patches, pixel shuffle 2: 169 tokens
    32, 32, 128, 8, 131072, 8_460_000_000, image_tokens=169, image_extra=3, vision=True,
    note="text_config: Llama-3.1-8B, max_position_embeddings 131072; (364/14)^2/2^2 = 169 tokens per image "
         "(splitting off) plus <fake_token_around_image><global-img>...<fake_token_around_image>; ~8.5B parameters")
_SMOLVLM = ModelGeometry(  # SmolLM2-1.7B decoder; 384 px tiles, pixel shuffle 3: 81 tokens
    24, 32, 64, 32, 16384, 2_250_000_000, image_tokens=81, image_extra=3, vision=True,
    note="text_config: SmolLM2-1.7B, max_position_embeddings 16384; (384/14)^2/3^2 = 81 tokens per image "
         "(splitting off); ~2.2B parameters")
_QWEN2_VL = ModelGeometry(  # Qwen2-7B decoder; dynamic resolution: 14 px patches merged 2x2
    28, 28, 128, 4, 32768, 8_290_000_000, image_grid=28, image_extra=2, vision=True,
    note="max_position_embeddings 32768; an image costs (h/28) x (w/28) tokens (dynamic resolution, "
         "min_pixels 3136, max_pixels 12845056) plus <|vision_start|><|vision_end|>; ~8.3B parameters")
_QWEN25_VL = ModelGeometry(
    28, 28, 128, 4, 128000, 8_290_000_000, image_grid=28, image_extra=2, vision=True,
    note="max_position_embeddings 128000; an image costs (h/28) x (w/28) tokens (dynamic resolution) "
         "plus <|vision_start|><|vision_end|>; ~8.3B parameters")
_LLAVA = ModelGeometry(  # Vicuna-7B decoder; CLIP ViT-L/14 at 336 px: 24 x 24 = 576 tokens
    32, 32, 128, 32, 4096, 7_060_000_000, image_tokens=576, vision=True,
    note="text_config: Vicuna-7B (Llama-2), max_position_embeddings 4096; image_seq_length 576; ~7.1B parameters")
_QWEN_VL = ModelGeometry(  # Qwen-7B decoder; the resampler's 256 queries per image (tokenizer's IMG_TOKEN_SPAN)
    32, 32, 128, 32, 8192, 9_600_000_000, image_tokens=256, image_extra=7, trained_length=2048, vision=True,
    note="kv_channels 128, max_position_embeddings 8192, seq_length 2048 (dynamic NTK and logn attention past "
         "it); 256 image tokens (IMG_TOKEN_SPAN) inside 'Picture k:<img>...</img>\\n'; 9.6B parameters (paper: "
         "ViT 1.9B + adapter 0.08B + LLM 7.7B)")
_LLAMA = ModelGeometry(16, 32, 64, 8, 131072, 1_240_000_000, note="Llama-3.2-1B config; 1.24B parameters")
_QWEN2 = ModelGeometry(24, 14, 64, 2, 32768, 494_000_000, note="Qwen2.5-0.5B config; 0.49B parameters")
_SMOLLM2 = ModelGeometry(30, 9, 64, 3, 8192, 135_000_000, note="SmolLM2-135M config; 135M parameters")
_GEMMA3 = ModelGeometry(18, 4, 256, 1, 32768, 268_000_000, sliding_window=512,
                        note="gemma-3-270m config (head_dim 256, hidden 640; 15 of 18 layers with a 512-token "
                             "sliding window); 268M parameters")


@dataclass(frozen=True)
class KnownModel:
    """A short name users can type instead of a hub id, with its geometry (``stv plan``)."""

    name: str
    hub_id: str
    family: str
    trust_remote_code: bool = False
    geometry: ModelGeometry | None = None


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("idefics2", "HuggingFaceM4/idefics2-8b", "idefics2", geometry=_IDEFICS2),
    KnownModel("idefics3", "HuggingFaceM4/Idefics3-8B-Llama3", "idefics3", geometry=_IDEFICS3),
    KnownModel("smolvlm", "HuggingFaceTB/SmolVLM-Instruct", "idefics3", geometry=_SMOLVLM),
    KnownModel("qwen2-vl", "Qwen/Qwen2-VL-7B-Instruct", "qwen2-vl", geometry=_QWEN2_VL),
    KnownModel("qwen2.5-vl", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl", geometry=_QWEN25_VL),
    KnownModel("llava", "llava-hf/llava-1.5-7b-hf", "llava", geometry=_LLAVA),
    KnownModel("qwen-vl", "Qwen/Qwen-VL", "qwen-vl", trust_remote_code=True, geometry=_QWEN_VL),
    KnownModel("llama", "meta-llama/Llama-3.2-1B", "text", geometry=_LLAMA),
    KnownModel("qwen2", "Qwen/Qwen2.5-0.5B", "text", geometry=_QWEN2),
    KnownModel("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct", "text", geometry=_SMOLLM2),
    KnownModel("gemma3", "google/gemma-3-270m", "text", geometry=_GEMMA3),
)


def register(cls: A) -> A:
    """Class decorator: serve every architecture in ``cls.architectures`` with ``cls``.

    An architecture already served by another class is a ValueError.
    """
    for architecture in cls.architectures:
        ADAPTERS.register(architecture, cls)
    return cls


def known_model(name: str) -> KnownModel | None:
    """The short-name entry for ``name`` (case-insensitive), or None."""
    lowered = name.lower()
    return next((m for m in KNOWN_MODELS if m.name == lowered), None)


def resolve_name(name: str) -> str:
    """A short name's hub id; anything else (hub id, path) is returned unchanged."""
    known = known_model(name)
    return known.hub_id if known else name


def adapter_class(architectures: Sequence[str] | None) -> type[ModelAdapter]:
    """The registered adapter for the first known architecture, else ``GenericAdapter``."""
    for architecture in architectures or ():
        if architecture in ADAPTERS:
            return ADAPTERS.get(architecture)
    from stvcli.models.text import GenericAdapter

    return GenericAdapter


def adapter_for(model: nn.Module, processor: Any, name: str, **kwargs: Any) -> ModelAdapter:
    """Wrap a loaded model and its processor/tokenizer in the adapter for its architecture.

    kwargs go to the adapter (projection_pattern, use_chat_template, revision).
    """
    architectures = getattr(model.config, "architectures", None) or [type(model).__name__]
    return adapter_class(architectures)(model, processor, name, **kwargs)


def list_models() -> list[dict[str, Any]]:
    """The short names ``stv models`` prints: name, hub_id, family, architectures."""
    families: dict[str, type[ModelAdapter]] = {}
    for _, cls in ADAPTERS.items():
        families.setdefault(cls.family, cls)
    rows = []
    for known in KNOWN_MODELS:
        cls = families.get(known.family)
        rows.append(
            {
                "name": known.name,
                "hub_id": known.hub_id,
                "family": known.family,
                "architectures": list(cls.architectures) if cls else [],
                "trust_remote_code": known.trust_remote_code,
            }
        )
    return rows
