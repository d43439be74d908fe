"""Stage plumbing: reusing an artifact only when its settings match."""

from __future__ import annotations

import torch

from stvcli.artifacts import save_artifact
from stvcli.stages.common import reuse_artifact


def _write(path, settings):
    tensors = {"bank": torch.ones(2, 3, 4), "counts": torch.ones(2, 3), "locations": torch.tensor([[0, 1], [1, 0]])}
    save_artifact(path, "bank", tensors, model="m", fingerprint={"a": 1}, settings=settings)


def test_reuse_artifact_only_with_the_same_settings(tmp_path, capsys):
    path = tmp_path / "bank.safetensors"
    assert reuse_artifact(path, "bank", {"clusters": 4}, False, quiet=True) is None  # nothing there yet
    _write(path, {"clusters": 4, "scan": "abc"})
    found = reuse_artifact(path, "bank", {"scan": "abc", "clusters": 4}, False, quiet=False, why="same settings")
    assert torch.equal(found["bank"], torch.ones(2, 3, 4))
    assert "bank: reusing" in capsys.readouterr().err
    assert reuse_artifact(path, "bank", {"clusters": 8, "scan": "abc"}, False, quiet=True) is None
    assert reuse_artifact(path, "bank", {"clusters": 4, "scan": "abc"}, True, quiet=True) is None  # --force
    assert reuse_artifact(path, "scan", {"clusters": 4, "scan": "abc"}, False, quiet=True) is None  # other kind


def test_a_corrupt_artifact_is_not_reused(tmp_path):
    path = tmp_path / "bank.safetensors"
    path.write_bytes(b"not safetensors")
    assert reuse_artifact(path, "bank", {}, False, quiet=True) is None
