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
class KnownModel:
    """A short name users can type instead of a hub id."""

    name: str
    hub_id: str
    family: str
    trust_remote_code: bool = False


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("idefics2", "HuggingFaceM4/idefics2-8b", "idefics2"),
    KnownModel("idefics3", "HuggingFaceM4/Idefics3-8B-Llama3", "idefics3"),
    KnownModel("smolvlm", "HuggingFaceTB/SmolVLM-Instruct", "idefics3"),
    KnownModel("qwen2-vl", "Qwen/Qwen2-VL-7B-Instruct", "qwen2-vl"),
    KnownModel("qwen2.5-vl", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl"),
    KnownModel("llava", "llava-hf/llava-1.5-7b-hf", "llava"),
    KnownModel("qwen-vl", "Qwen/Qwen-VL", "qwen-vl", trust_remote_code=True),
    KnownModel("llama", "meta-llama/Llama-3.2-1B", "text"),
    KnownModel("qwen2", "Qwen/Qwen2.5-0.5B", "text"),
    KnownModel("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct", "text"),
    KnownModel("gemma3", "google/gemma-3-270m", "text"),
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
