"""The workspace layer: paths, settings with upstream digests, reuse, checkpoints, shards."""

from __future__ import annotations

import pytest
import torch

from stvcli import distributed as dist
from stvcli.artifacts import load_artifact, save_artifact
from stvcli.errors import ArtifactError, StvError
from stvcli.workspace import Provenance, Workspace, file_digest

PROVENANCE = Provenance("m", {"n_layers": 2}, {"source": "x"})


def _bank(space: Workspace, settings: dict) -> None:
    tensors = {"bank": torch.ones(2, 3, 4), "counts": torch.ones(2, 3), "locations": torch.tensor([[0, 1], [1, 0]])}
    space.save("bank", tensors, settings=settings, provenance=PROVENANCE)


def test_paths_come_from_the_one_kinds_table(tmp_path):
    space = Workspace(tmp_path)
    assert space.path("scan") == tmp_path / "scan.safetensors"
    assert space.path("vectors") == tmp_path / "vectors.safetensors"
    assert space.path("mtv-state") == tmp_path / "mtv-state.safetensors"
    with pytest.raises(ArtifactError, match=r"run `stv scan` first"):
        space.load("scan")


def test_settings_add_the_upstream_digest_and_inherited_keys(tmp_path):
    space = Workspace(tmp_path)
    _bank(space, {"clusters": 4, "task": "t", "model": {"model": "m"}, "data": {"d": 1}, "shots": 3, "other": 1})
    upstream = space.load("bank")
    settings = space.settings({"iterations": 5}, upstream=upstream)
    assert settings == {"iterations": 5, "bank": file_digest(space.path("bank")), "task": "t", "model": {"model": "m"},
                        "data": {"d": 1}, "shots": 3}
    _bank(space, {"clusters": 8})  # a new upstream file changes the digest
    assert space.settings({}, upstream=space.load("bank"))["bank"] != settings["bank"]


def test_reuse_only_with_the_same_settings(tmp_path, capsys):
    space = Workspace(tmp_path)
    assert space.reuse("bank", {"clusters": 4}) is None  # nothing there yet
    _bank(space, {"clusters": 4, "scan": "abc"})
    found = space.reuse("bank", {"scan": "abc", "clusters": 4}, why="same settings")
    assert torch.equal(found["bank"], torch.ones(2, 3, 4))
    assert "bank: reusing" in capsys.readouterr().err
    assert space.reuse("bank", {"clusters": 8, "scan": "abc"}) is None
    assert Workspace(tmp_path, force=True).reuse("bank", {"clusters": 4, "scan": "abc"}) is None


def test_reuse_refuses_another_models_artifact(tmp_path):
    space = Workspace(tmp_path)
    tensors = {"bank": torch.ones(2, 3, 4), "counts": torch.ones(2, 3), "locations": torch.tensor([[0, 1], [1, 0]])}
    space.save("bank", tensors, settings={}, provenance=Provenance("m", {"n_layers": 2}))
    with pytest.raises(ArtifactError, match="another model"):
        space.reuse("bank", {}, fingerprint={"n_layers": 3})
    assert space.reuse("bank", {}, fingerprint={"n_layers": 2}) is not None


def test_a_corrupt_artifact_is_not_reused(tmp_path):
    space = Workspace(tmp_path)
    space.path("bank").write_bytes(b"not safetensors")
    assert space.reuse("bank", {}) is None


def test_checkpoints_load_only_with_the_same_settings_and_not_when_forced(tmp_path):
    space = Workspace(tmp_path)
    space.save("mtv-state", {"logits": torch.zeros(2, 3)}, settings={"seed": 1}, provenance=PROVENANCE,
               extra={"iteration": 4})
    assert space.load_state("mtv-state", {"seed": 1}).meta["extra"]["iteration"] == 4
    assert space.load_state("mtv-state", {"seed": 2}) is None
    assert Workspace(tmp_path, force=True).load_state("mtv-state", {"seed": 1}) is None
    space.discard("mtv-state")
    assert not space.exists("mtv-state")


def test_one_process_computes_its_one_share_and_writes_no_shard(tmp_path):
    space = Workspace(tmp_path)
    calls = []

    def compute(start, stop):
        calls.append((start, stop))
        return {"x": torch.arange(float(start), float(stop))}, {"forwards": stop - start}

    shares = space.sharded("scan", {"seed": 1}, 5, compute)
    assert calls == [(0, 5)] and shares.stats == {"forwards": 5}
    assert torch.equal(shares.cat("x"), torch.arange(5.0)) and torch.equal(shares.sum("x"), torch.arange(5.0))
    assert not (tmp_path / "shards").exists()


def test_shards_round_trip_and_are_read_only_with_the_same_settings(tmp_path):
    space = Workspace(tmp_path)
    settings = {"stage": "scan", "settings": {"seed": 1}, "rank": 0, "world": 1, "start": 0, "stop": 4}
    path = tmp_path / "shards" / "scan-0-of-1.safetensors"
    save_artifact(path, "shard", {"x": torch.ones(2, 3)}, model="", fingerprint={}, settings=settings,
                  extra={"stats": {"forwards": 2}})
    (shard,) = space.read_shards("scan", {"seed": 1}, 4)
    assert torch.equal(shard["x"], torch.ones(2, 3))
    with pytest.raises(StvError, match="file system that every rank"):
        space.read_shards("scan", {"seed": 2}, 4)
    with pytest.raises(StvError, match="file system that every rank"):
        space.read_shards("scan", {"seed": 1}, 5)
    space.clear_shards("scan")
    assert not (tmp_path / "shards").exists()


def test_a_saved_artifact_records_its_provenance(tmp_path):
    space = Workspace(tmp_path)
    _bank(space, {"clusters": 4})
    artifact = load_artifact(space.path("bank"), "bank")
    assert artifact.meta["model"] == "m" and artifact.fingerprint == {"n_layers": 2} and artifact.meta["data"] == {"source": "x"}
    assert Provenance.of(artifact) == PROVENANCE
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file
    assert dist.world_size() == 1


def test_begin_loads_the_upstream_settles_settings_and_finds_a_finished_artifact(tmp_path, capsys):
    space = Workspace(tmp_path)
    _bank(space, {"clusters": 4, "task": "t"})
    start = space.begin("vectors", {"iterations": 2}, upstream="bank")
    assert start.upstream.kind == "bank" and start.done is None
    assert start.settings == {"iterations": 2, "bank": file_digest(space.path("bank")), "task": "t"}
    vectors = {"vectors": torch.ones(2, 4), "locations": torch.tensor([[0, 1], [1, 0]]), "logits": torch.zeros(2, 3)}
    space.save("vectors", vectors, settings=start.settings, provenance=PROVENANCE)
    again = space.begin("vectors", {"iterations": 2}, upstream="bank")
    assert again.done is not None and torch.equal(again.done["vectors"], torch.ones(2, 4))
    said = capsys.readouterr().err
    assert "search: reusing" in said and "same settings and bank; --force reruns" in said
    assert space.begin("vectors", {"iterations": 3}, upstream="bank").done is None
    with pytest.raises(ArtifactError, match="another model"):
        space.begin("vectors", {"iterations": 2}, upstream="bank", fingerprint={"n_layers": 3})


def test_check_writable_refuses_files_and_read_only_folders_without_creating_anything(tmp_path):
    import os

    from stvcli.workspace import check_writable

    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(StvError, match="--workspace .* is a file"):
        check_writable(file, "--workspace")
    with pytest.raises(StvError, match="is a file"):
        check_writable(file / "sub", "--workspace")
    check_writable(tmp_path / "new" / "deeper", "--workspace")
    assert not (tmp_path / "new").exists()  # checked, not created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # the probe is gone
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(StvError, match="cannot write to --output-path"):
            check_writable(locked, "--output-path")


def test_lineage_refuses_an_artifact_made_from_another_upstream_file(tmp_path):
    space = Workspace(tmp_path / "w")
    scan = {"scores": torch.rand(2, 2), "locations": torch.tensor([[0, 1], [1, 0]])}
    space.save("scan", scan, settings={"seed": 0}, provenance=PROVENANCE)
    _bank(space, space.settings({"clusters": 3}, upstream=space.load("scan")))
    space.check_lineage(space.load("bank"))  # made from this scan
    space.save("scan", {**scan, "scores": torch.rand(2, 2)}, settings={"seed": 1}, provenance=PROVENANCE)
    with pytest.raises(ArtifactError, match="another scan.safetensors.*stv bank -w .* --force"):
        space.check_lineage(space.load("bank"))
