"""A tiny LLaVA model on disk plus a small image VQA set: the pipeline's test bed."""

from __future__ import annotations

from pathlib import Path

import pytest

from stvcli.config import ModelOptions
from stvcli.data.options import DataOptions


@pytest.fixture(scope="session")
def bed(tmp_path_factory) -> dict:
    from stvcli.data.synthetic import write_vqa_jsonl
    from stvcli.testing.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("bed")
    model_dir = save_tiny_model("llava", root / "model")
    data = write_vqa_jsonl(root / "data", n=60, seed=3)
    return {
        "root": root,
        "model": ModelOptions(model=str(model_dir), dtype="float32", device="cpu"),
        "data": DataOptions(task="vqa", data=str(data), seed=0, eval_limit=12),
    }


@pytest.fixture
def workspace(tmp_path) -> Path:
    return tmp_path / "ws"
