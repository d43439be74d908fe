"""Fixtures: a tiny LLaVA with vectors files, served by a real uvicorn on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_helpers import FAMILY, Served, serve_config, write_vectors

from stvcli.models.base import ModelAdapter
from stvcli.serve.app import create_app
from stvcli.serve.server import background_server
from stvcli.testing.tiny import tiny_adapter
from stvcli.vectors import TaskVectors

@pytest.fixture(scope="session")
def adapter() -> ModelAdapter:
    return tiny_adapter(FAMILY)


@pytest.fixture(scope="session")
def vector_files(adapter: ModelAdapter, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vectors")
    return {
        "demo": write_vectors(adapter, root / "demo.safetensors", "demo", seed=1),
        "other": write_vectors(adapter, root / "other.safetensors", "other", seed=2),
        "added": write_vectors(adapter, root / "added.safetensors", "added", seed=3, insert="add"),
    }


@pytest.fixture(scope="session")
def served(adapter: ModelAdapter, vector_files: dict[str, Path]) -> Iterator[Served]:
    app = create_app(serve_config(vector_files), adapter)
    catalog = app.state.catalog
    vectors = {task: TaskVectors.load(path) for task, path in vector_files.items()}
    ids = {task: next(i for i in catalog.ids() if f"+{task}@" in i) for task in vectors}
    ids["bare"] = catalog.base_id
    with background_server(app) as url:
        yield Served(url, app, adapter, vectors, ids)
