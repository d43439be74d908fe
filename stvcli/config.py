"""Pydantic configs shared by the CLI and the stage functions."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from stvcli.paths import absolute_if_local


class ModelOptions(BaseModel):
    """How to load a model: short name, hub id, local directory or GGUF file.

    A local directory or GGUF file is stored as its absolute path (artifacts record these
    options; a later stage may run from another directory). Hub ids and short names stay.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"  # auto | cpu | mps | cuda | cuda:N
    device_map: str | None = None  # e.g. "auto" to shard a model over several GPUs
    max_memory: dict[str, str] | None = None
    revision: str | None = None
    chat_template: bool | None = None  # None: the family's default
    projection_pattern: str | None = None  # regex override for unknown architectures
    trust_remote_code: bool = False

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError(f"must be auto, cpu, mps, cuda or cuda:N, not {value!r}")
        return value

    @field_validator("projection_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"is not a regular expression ({error})") from None
        return value

    @field_validator("model")
    @classmethod
    def _local_model_absolute(cls, value: str) -> str:
        absolute = absolute_if_local(value)
        if absolute == value or "/" in value or "\\" in value or value.endswith(".gguf"):
            return absolute or value
        from stvcli.models.registry import known_model  # a short name wins over a folder of that name

        return value if known_model(value) is not None else absolute or value
