"""Helpers shared by the serve tests: vectors files, images, the served-app handle."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from stvcli.artifacts import save_artifact
from stvcli.models.base import ModelAdapter
from stvcli.serve.config import ServeConfig
from stvcli.vectors import TaskVectors

API_KEY = "test-key"
FAMILY = "llava"  # a tiny VLM: serves text and image requests


def write_vectors(adapter: ModelAdapter, path: Path, task: str, seed: int, insert: str = "replace") -> Path:
    """A vectors artifact over half of the model's heads, strong enough to change answers."""
    generator = torch.Generator().manual_seed(seed)
    n_layers, n_heads, head_dim = adapter.n_layers, adapter.n_heads, adapter.head_dim
    k = max(1, n_layers * n_heads // 2)
    chosen = torch.randperm(n_layers * n_heads, generator=generator)[:k]
    locations = torch.stack([chosen // n_heads, chosen % n_heads], dim=1)
    tensors = {
        "vectors": torch.randn(k, head_dim, generator=generator) * 4,
        "locations": locations,
        "logits": torch.zeros(k, 4),
        "baseline": torch.randn(k, head_dim, generator=generator),
    }
    return save_artifact(path, "vectors", tensors, model=adapter.name, fingerprint=adapter.fingerprint(),
                         settings={"insert": insert, "task": task})


def image_data_url(color: tuple[int, int, int] = (200, 30, 30), size: int = 32, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image_of(color, size).save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def image_of(color: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> Image.Image:
    image = Image.new("RGB", (size, size), color)
    image.putpixel((0, 0), (0, 0, 0))
    return image


@dataclass
class Served:
    url: str
    app: object
    adapter: ModelAdapter
    vectors: dict[str, TaskVectors]  # task -> the loaded vectors
    ids: dict[str, str]  # task -> served model id; "bare" -> the base model id

    @property
    def api(self) -> str:
        return f"{self.url}/v1"

    @property
    def worker(self):
        return self.app.state.worker


def serve_config(vector_files: dict[str, Path], **overrides) -> ServeConfig:
    settings = dict(vectors=list(vector_files.values()), api_key=API_KEY, max_image_bytes=64 * 1024,
                    max_body_bytes=256 * 1024)
    settings.update(overrides)
    return ServeConfig(**settings)
