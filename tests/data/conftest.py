"""Synthetic data sets on disk, built once per test session (all offline)."""

from pathlib import Path

import pytest

from stvcli.data import synthetic


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stv-data")


@pytest.fixture(scope="session")
def vqa_jsonl(data_root) -> Path:
    return synthetic.write_vqa_jsonl(data_root / "vqa", n=20, seed=0)


@pytest.fixture(scope="session")
def text_jsonl(data_root) -> Path:
    return synthetic.write_text_jsonl(data_root / "text", synthetic.ANTONYMS)


@pytest.fixture(scope="session")
def split_folder(data_root) -> Path:
    return synthetic.write_classification_imagefolder(
        data_root / "folder", classes=("red", "green", "blue", "yellow"), per_class=4, splits=("train", "test")
    )


@pytest.fixture(scope="session")
def episodes_json(data_root) -> Path:
    return synthetic.write_episodes(data_root / "episodes", classes=("red", "green", "blue", "yellow"), per_class=3)
