"""Cache root, manifests and atomic builds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stvcli.cache import MANIFEST_NAME, atomic_directory, cache_dir, ensure_built, read_manifest_info, verify_manifest


def test_cache_dir_from_env_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STV_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env" and (tmp_path / "env").is_dir()
    assert cache_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("STV_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "stv"


def _build(calls: list[int]):
    def build(staging: Path) -> dict:
        calls.append(1)
        (staging / "weights.bin").write_bytes(b"\x00" * 100)
        (staging / "sub").mkdir()
        (staging / "sub" / "config.json").write_text("{}")
        return {"version": 1}

    return build


def test_ensure_built_builds_once_and_verifies(tmp_path: Path) -> None:
    calls: list[int] = []
    target = tmp_path / "thing"
    assert ensure_built(target, _build(calls)) == target
    assert ensure_built(target, _build(calls)) == target
    assert len(calls) == 1
    assert verify_manifest(target) is None
    assert read_manifest_info(target) == {"version": 1}
    assert set(json.loads((target / MANIFEST_NAME).read_text())["files"]) == {"weights.bin", "sub/config.json"}
    assert [p.name for p in tmp_path.iterdir()] == ["thing"]  # no staging directory left


@pytest.mark.parametrize("damage", ["flip", "delete", "manifest"])
def test_corrupt_directory_is_rebuilt(tmp_path: Path, damage: str) -> None:
    calls: list[int] = []
    reasons: list[str] = []
    target = tmp_path / "thing"
    ensure_built(target, _build(calls))
    if damage == "flip":
        (target / "weights.bin").write_bytes(b"\x01" + b"\x00" * 99)
    elif damage == "delete":
        (target / "sub" / "config.json").unlink()
    else:
        (target / MANIFEST_NAME).write_text("not json")
    assert verify_manifest(target) is not None
    ensure_built(target, _build(calls), on_rebuild=reasons.append)
    assert len(calls) == 2 and len(reasons) == 1
    assert verify_manifest(target) is None


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "thing"

    def broken(staging: Path) -> dict:
        (staging / "half.bin").write_bytes(b"x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        ensure_built(target, broken)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_atomic_directory_replaces_old_content(tmp_path: Path) -> None:
    target = tmp_path / "thing"
    target.mkdir()
    (target / "old").write_text("old")
    with atomic_directory(target) as staging:
        (staging / "new").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert target.stat().st_mode & 0o077  # readable by others, like any cache directory
