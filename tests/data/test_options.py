"""The --data notation."""

import pytest
from pydantic import ValidationError

from stvcli.data.options import DataOptions, parse_spec
from stvcli.errors import DataError


def test_hub_ids_with_revision_and_split():
    spec = parse_spec("lmms-lab/VizWiz-VQA:val")
    assert (spec.kind, spec.location, spec.split, spec.revision) == ("hub", "lmms-lab/VizWiz-VQA", "val", None)
    spec = parse_spec("owner/name@refs/convert/parquet:train")
    assert (spec.location, spec.revision, spec.split) == ("owner/name", "refs/convert/parquet", "train")
    assert parse_spec("owner/name", revision="v2").revision == "v2"
    assert parse_spec("owner/name@v1", revision="v2").revision == "v1"  # the spec's own revision wins
    assert parse_spec("hf:owner/name:test").split == "test"


def test_local_files_and_folders(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "b.json").write_text("[]")
    (tmp_path / "folder" / "test").mkdir(parents=True)
    assert parse_spec(str(tmp_path / "a.jsonl")).kind == "jsonl"
    assert parse_spec(str(tmp_path / "b.json")).kind == "json"
    folder = parse_spec(str(tmp_path / "folder"))
    assert (folder.kind, folder.split) == ("imagefolder", None)
    assert parse_spec(f"{tmp_path / 'folder'}:test").split == "test"
    with pytest.raises(DataError, match="has no splits"):
        parse_spec(f"{tmp_path / 'a.jsonl'}:train")
    (tmp_path / "c.csv").write_text("x")
    with pytest.raises(DataError, match=r"\.jsonl or \.json"):
        parse_spec(str(tmp_path / "c.csv"))


def test_missing_local_paths_are_not_taken_for_hub_ids(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        parse_spec(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="no such file"):
        parse_spec("./data/nope")


def test_plugin_prefix_and_bad_ids():
    spec = parse_spec("shapes:colour", plugin_prefixes=("shapes",))
    assert (spec.kind, spec.prefix, spec.location) == ("plugin", "shapes", "colour")
    with pytest.raises(DataError, match="hub id"):
        parse_spec("not a valid id!")
    with pytest.raises(DataError, match="empty"):
        parse_spec("  ")


def test_data_options_validate():
    options = DataOptions(task="vizwiz")
    assert options.seed == 0 and options.data is None
    with pytest.raises(ValidationError):
        DataOptions(task="vizwiz", eval_limit=0)
    with pytest.raises(ValidationError):
        DataOptions(task="vizwiz", shots=3)


def test_local_data_paths_are_stored_absolute(tmp_path, monkeypatch):
    """Artifacts record these options; a later stage may run from another directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sets" / "folder" / "train").mkdir(parents=True)
    (tmp_path / "sets" / "v.jsonl").write_text("{}\n")
    (tmp_path / "pics").mkdir()
    options = DataOptions(task="vqa", data="sets/v.jsonl", eval_data="./sets/folder:train", image_root="pics")
    assert options.data == str(tmp_path / "sets" / "v.jsonl")
    assert options.eval_data == f"{tmp_path / 'sets' / 'folder'}:train"
    assert options.image_root == str(tmp_path / "pics")
    again = DataOptions(**options.model_dump())  # as a later stage rebuilds it from the settings
    assert again == options
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert parse_spec(again.data).location == str(tmp_path / "sets" / "v.jsonl")
    assert parse_spec(again.eval_data).split == "train"


def test_hub_ids_plugins_and_missing_paths_stay_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes").mkdir()  # a folder named like the plugin prefix does not capture shapes:colour
    (tmp_path / "lmms-lab").mkdir()
    for spec in ("lmms-lab/VizWiz-VQA", "lmms-lab/VizWiz-VQA@main:val", "shapes:colour", "hf:owner/name", "nope.jsonl"):
        assert DataOptions(task="vqa", data=spec, eval_data=spec).data == spec
    assert DataOptions(task="vqa", image_root="no/such/dir").image_root == "no/such/dir"
    assert DataOptions(task="vqa").data is None
