import json

import pytest
import torch
from safetensors.torch import save_file

from stvcli.artifacts import SCHEMA_VERSION, load_artifact, save_artifact
from stvcli.errors import ArtifactError

FP = {"architecture": "LlamaForCausalLM", "n_layers": 2, "n_heads": 4, "head_dim": 16, "weights": "abc"}


def write_scan(path, **kw):
    tensors = {"scores": torch.rand(2, 4), "locations": torch.tensor([[0, 1], [1, 3]])}
    return save_artifact(path, "scan", tensors, model="tiny", fingerprint=FP, settings={"shots": 4}, seed=0, **kw)


def test_roundtrip_keeps_tensors_and_metadata(tmp_path):
    path = write_scan(tmp_path / "scan.safetensors", data={"source": "x.jsonl"})
    artifact = load_artifact(path, "scan", fingerprint=FP)
    assert artifact.settings == {"shots": 4}
    assert artifact.meta["data"] == {"source": "x.jsonl"}
    assert artifact.meta["schema"] == SCHEMA_VERSION and artifact.meta["model"] == "tiny"
    assert {"stvcli", "torch", "transformers"} <= set(artifact.meta["versions"])
    assert torch.equal(artifact["locations"], torch.tensor([[0, 1], [1, 3]]))


def test_missing_artifact_names_the_command(tmp_path):
    with pytest.raises(ArtifactError, match="stv scan"):
        load_artifact(tmp_path / "scan.safetensors", "scan")


def test_wrong_kind_and_foreign_files_are_refused(tmp_path):
    path = write_scan(tmp_path / "scan.safetensors")
    with pytest.raises(ArtifactError, match="expected 'bank'"):
        load_artifact(path, "bank")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(ArtifactError, match="not an stv artifact"):
        load_artifact(foreign, "scan")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="not a readable"):
        load_artifact(corrupt, "scan")


def test_other_model_is_refused(tmp_path):
    path = write_scan(tmp_path / "scan.safetensors")
    with pytest.raises(ArtifactError, match="another model"):
        load_artifact(path, "scan", fingerprint={**FP, "weights": "zzz"})


def test_schema_mismatch_is_refused(tmp_path):
    path = tmp_path / "scan.safetensors"
    meta = {"stv.kind": "scan", "stv.schema": "999", "stv.settings": json.dumps({})}
    save_file({"scores": torch.rand(2, 4), "locations": torch.zeros(1, 2, dtype=torch.long)}, str(path), metadata=meta)
    with pytest.raises(ArtifactError, match="schema version"):
        load_artifact(path, "scan")


def test_shape_checks(tmp_path):
    with pytest.raises(ArtifactError, match="rank"):
        save_artifact(tmp_path / "b.safetensors", "bank",
                      {"bank": torch.rand(2, 3), "counts": torch.ones(2, 3), "locations": torch.zeros(2, 2)},
                      model="m", fingerprint=FP, settings={})
    with pytest.raises(ArtifactError, match="rows"):
        save_artifact(tmp_path / "b.safetensors", "bank",
                      {"bank": torch.rand(3, 4, 8), "counts": torch.ones(3, 4), "locations": torch.zeros(2, 2)},
                      model="m", fingerprint=FP, settings={})


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    import stvcli.artifacts as artifacts

    write_scan(tmp_path / "scan.safetensors")
    before = (tmp_path / "scan.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "save_file", broken)
    with pytest.raises(OSError):
        write_scan(tmp_path / "scan.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.safetensors"]
    assert (tmp_path / "scan.safetensors").read_bytes() == before


def write_vectors(path, vectors=None, locations=None, fingerprint=FP):
    locations = torch.tensor([[0, 1], [1, 3]]) if locations is None else locations
    vectors = torch.rand(2, 16) if vectors is None else vectors
    tensors = {"vectors": vectors, "locations": locations, "logits": torch.zeros(2, 3), "baseline": torch.rand(2, 16)}
    return save_artifact(path, "vectors", tensors, model="tiny", fingerprint=fingerprint, settings={}, seed=0)


@pytest.mark.parametrize(
    "vectors, locations, fragment",
    [
        (torch.full((2, 16), float("nan")), None, "NaN"),
        (torch.full((2, 16), float("inf")), None, "NaN or infinite"),
        (torch.rand(2, 32), None, "32 wide"),
        (None, torch.tensor([[2, 0], [0, 0]]), "layer 2 is out of range"),
        (None, torch.tensor([[0, 4], [0, 0]]), "head 4 is out of range"),
        (None, torch.tensor([[0, -1], [0, 0]]), "non-negative"),
    ],
)
def test_loaded_values_and_locations_must_fit_the_model(tmp_path, vectors, locations, fragment):
    path = write_vectors(tmp_path / "v.safetensors", vectors, locations)
    with pytest.raises(ArtifactError, match=fragment):
        load_artifact(path, "vectors")


def test_geometry_is_checked_against_the_model_it_is_used_with(tmp_path):
    """A file whose own fingerprint says nothing of geometry still cannot write outside this model."""
    path = write_vectors(tmp_path / "v.safetensors", locations=torch.tensor([[0, 1], [1, 3]]), fingerprint={})
    load_artifact(path, "vectors")  # nothing to check it against
    with pytest.raises(ArtifactError, match="head 3 is out of range"):
        load_artifact(path, "vectors", fingerprint={"n_layers": 2, "n_heads": 3, "head_dim": 16})
    with pytest.raises(ArtifactError, match="16 wide, the model's heads 8"):
        load_artifact(path, "vectors", fingerprint={"n_layers": 2, "n_heads": 4, "head_dim": 8})


def test_a_folder_is_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="is a folder"):
        load_artifact(tmp_path, "vectors")


def test_written_files_honour_the_umask(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        path = write_scan(tmp_path / "scan.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
