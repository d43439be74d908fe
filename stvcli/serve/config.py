"""``ServeConfig``: everything ``stv serve-local`` needs, validated once.

Out-of-range values raise ``StvError`` naming the command-line option and the fix (the
CLI prints it as one line); wrong types stay pydantic's ``ValidationError``.
"""

from __future__ import annotations

import ipaddress
import math
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stvcli.config import ModelOptions
from stvcli.engine import InsertMode, WriteAt
from stvcli.errors import StvError

API_KEY_ENV = "STV_API_KEY"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
# field -> the option that sets it (config-only fields are named as such)
_OPTIONS = {
    "max_batch": "--max-batch", "max_queue": "--max-queue", "max_image_bytes": "--max-image-bytes",
    "max_body_bytes": "--max-body-bytes", "default_max_tokens": "ServeConfig.default_max_tokens",
}


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
    port: int = 8000  # 1..65535
    api_key: str | None = None  # None: $STV_API_KEY; neither set: no authentication
    insert: InsertMode | None = None  # None: each vectors file's own mode
    write_at: WriteAt | None = None  # None: where each vectors file was chosen to be written
    max_batch: int = 8  # rows per forward pass
    batch_wait_ms: float = 5.0  # how long a batch waits for more requests
    max_queue: int = 256  # waiting requests beyond this get 503
    max_image_bytes: int = 20 * 2**20  # per decoded image
    max_body_bytes: int = 64 * 2**20  # per request body
    allow_remote_images: bool = False  # fetch http(s) image URLs
    default_max_tokens: int = 256  # when a request names no max_tokens
    log_level: str = "info"

    @model_validator(mode="after")
    def _check(self) -> "ServeConfig":
        """Every value usable, or a one-line StvError naming its option."""
        if not 1 <= self.port <= 65535:
            raise StvError(f"--port {self.port} is out of range; give a port in 1..65535")
        if not self.host.strip():
            raise StvError("--host is empty; give an address such as 127.0.0.1 (loopback) or 0.0.0.0 (all)")
        if self.api_key is not None and not self.api_key.strip():
            raise StvError("--api-key is empty; give a non-empty key or leave it out")
        if self.api_key is not None and self.api_key != self.api_key.strip():
            raise StvError("--api-key starts or ends with whitespace, which no client can send; remove it")
        if self.model is not None and not self.model.strip():
            raise StvError("--model is empty; name a model or leave it out to use the vectors' model")
        for field, option in _OPTIONS.items():
            if getattr(self, field) < 1:
                raise StvError(f"{option} is {getattr(self, field)}; give a positive number")
        if not 0 <= self.batch_wait_ms <= 60_000 or not math.isfinite(self.batch_wait_ms):
            raise StvError(f"ServeConfig.batch_wait_ms is {self.batch_wait_ms}; give 0..60000 milliseconds")
        if self.log_level.lower() not in LOG_LEVELS:
            raise StvError(f"log level {self.log_level!r} is unknown; give one of {', '.join(LOG_LEVELS)}")
        return self

    def model_options(self, name: str) -> ModelOptions:
        """How to load ``name`` with this config's loading options."""
        fields = {key: getattr(self, key) for key in ModelOptions.model_fields if key != "model"}
        return ModelOptions(model=name, **fields)

    def resolved_api_key(self) -> str | None:
        """The key requests must present: ``api_key``, else ``$STV_API_KEY``, else none.

        A ``$STV_API_KEY`` that is set but blank is an error, not "no authentication".
        """
        if self.api_key is not None:
            return self.api_key
        key = os.environ.get(API_KEY_ENV)
        if key is None:
            return None
        if not key.strip():
            raise StvError(f"${API_KEY_ENV} is set but empty; give it a key or unset it")
        return key.strip()

    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
