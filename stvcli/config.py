"""Pydantic configs shared by the CLI and the stage functions."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ModelOptions(BaseModel):
    """How to load a model: short name, hub id, local directory or GGUF file."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    device_map: str | None = None  # e.g. "auto" to shard a model over several GPUs
    max_memory: dict[str, str] | None = None
    revision: str | None = None
    chat_template: bool | None = None  # None: the family's default
    projection_pattern: str | None = None  # regex override for unknown architectures
    trust_remote_code: bool = False
