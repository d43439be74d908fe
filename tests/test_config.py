"""ModelOptions: local model paths are stored absolute, hub ids and short names as given."""

from stvcli.config import ModelOptions
from stvcli.models.loading import resolve_source


def test_relative_model_directory_and_gguf_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "config.json").write_text("{}")
    (tmp_path / "q4.gguf").write_bytes(b"GGUF")
    (tmp_path / "bare").mkdir()
    assert ModelOptions(model="models/tiny").model == str(tmp_path / "models" / "tiny")
    assert ModelOptions(model="./models/tiny/").model == str(tmp_path / "models" / "tiny")
    assert ModelOptions(model="q4.gguf").model == str(tmp_path / "q4.gguf")
    assert ModelOptions(model="bare").model == str(tmp_path / "bare")
    options = ModelOptions(model="models/tiny")
    monkeypatch.chdir(tmp_path / "bare")  # a later stage, run from elsewhere, rebuilds the options
    again = ModelOptions(**options.model_dump())
    assert again == options and resolve_source(again.model).location == str(tmp_path / "models" / "tiny")


def test_hub_ids_short_names_and_missing_paths_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llava").mkdir()  # a folder named like a short name: the short name wins (as in loading)
    for model in ("llava", "llava-hf/llava-1.5-7b-hf", "Qwen/Qwen2-VL-7B-Instruct", "missing/dir", "x.gguf"):
        assert ModelOptions(model=model).model == model
