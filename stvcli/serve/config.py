"""``ServeConfig``: everything ``stv serve-local`` needs, validated once."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from stvcli.config import ModelOptions
from stvcli.engine import InsertMode

API_KEY_ENV = "STV_API_KEY"


class ServeConfig(BaseModel):
    """Options of ``stv serve-local`` (one field per CLI option)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    vectors: list[Path] = Field(default_factory=list)  # vectors artifacts; each is served as a model
    model: str | None = None  # None: the model recorded in the first vectors file
    # how to load the model (the fields of stvcli.config.ModelOptions besides ``model``)
    dtype: str = "auto"
    device: str = "auto"
    device_map: str | None = None
    max_memory: dict[str, str] | None = None
    revision: str | None = None
    chat_template: bool | None = None
    projection_pattern: str | None = None
    trust_remote_code: bool = False

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = None  # None: $STV_API_KEY; neither set: no authentication
    insert: InsertMode | None = None  # None: each vectors file's own mode
    max_batch: int = Field(8, ge=1)  # rows per forward pass
    batch_wait_ms: float = Field(5.0, ge=0)  # how long a batch waits for more requests
    max_queue: int = Field(256, ge=1)  # waiting requests beyond this get 503
    max_image_bytes: int = Field(20 * 2**20, ge=1)  # per decoded image
    max_body_bytes: int = Field(64 * 2**20, ge=1)  # per request body
    allow_remote_images: bool = False  # fetch http(s) image URLs
    default_max_tokens: int = Field(256, ge=1)  # when a request names no max_tokens
    log_level: str = "info"

    def model_options(self, name: str) -> ModelOptions:
        """How to load ``name`` with this config's loading options."""
        fields = {key: getattr(self, key) for key in ModelOptions.model_fields if key != "model"}
        return ModelOptions(model=name, **fields)

    def resolved_api_key(self) -> str | None:
        """The key requests must present: ``api_key``, else ``$STV_API_KEY``, else none."""
        return self.api_key or os.environ.get(API_KEY_ENV) or None

    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
