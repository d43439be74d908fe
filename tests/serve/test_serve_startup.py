"""Start-up: every unusable setting is one line (StvError, exit 2 from the CLI) before
the model loads; vector sets are checked against the model; ids are names, not paths."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from serve_helpers import write_vectors
from typer.testing import CliRunner

from stvcli.artifacts import save_artifact
from stvcli.cli import app as cli
from stvcli.engine import Intervention
from stvcli.errors import StvError
from stvcli.serve import ServeConfig, serve
from stvcli.serve.app import create_app
from stvcli.serve.catalog import Catalog, VectorSet, check_vector_set, served_name
from stvcli.vectors import TaskVectors


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def test_busy_port_is_one_line_before_the_model_loads(vector_files, busy_port: int) -> None:
    """The vectors' model ("tiny-llava") cannot be loaded from the hub: reaching the
    port error proves the port is checked first."""
    started = time.monotonic()
    with pytest.raises(StvError) as error:
        serve(ServeConfig(vectors=[vector_files["demo"]], port=busy_port))
    assert f"--port {busy_port} is already in use" in one_line(error)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("host, fragment", [("no-such-host.invalid", "does not resolve"),
                                            ("192.0.2.1", "not an address of this machine")])
def test_unknown_host_is_one_line(vector_files, host: str, fragment: str) -> None:
    with pytest.raises(StvError) as error:
        serve(ServeConfig(vectors=[vector_files["demo"]], host=host, port=8123))
    message = one_line(error)
    assert "--host" in message and fragment in message


def test_cli_start_up_errors_exit_2_with_one_line(vector_files, busy_port: int) -> None:
    vectors = str(vector_files["demo"])
    for args in (["--port", str(busy_port)], ["--host", "no-such-host.invalid"], ["--api-key", ""],
                 ["--port", "0"], ["--max-body-bytes", "0"]):
        result = CliRunner().invoke(cli, ["serve-local", "--vectors", vectors, *args])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1 and lines[0].startswith("error:") and args[0] in lines[0], (args, lines)


def test_empty_api_key_is_an_error_not_no_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STV_API_KEY", raising=False)
    with pytest.raises(StvError) as error:
        ServeConfig(api_key="")
    assert one_line(error) == "--api-key is empty; give a non-empty key or leave it out"
    with pytest.raises(StvError, match="--api-key"):
        ServeConfig(api_key="   ")
    with pytest.raises(StvError, match="whitespace"):
        ServeConfig(api_key=" key")
    monkeypatch.setenv("STV_API_KEY", "")
    with pytest.raises(StvError, match="STV_API_KEY"):
        ServeConfig().resolved_api_key()
    with pytest.raises(StvError, match="STV_API_KEY"):
        serve(ServeConfig(model="m"))  # before binding or loading anything


@pytest.mark.parametrize("field, value, option", [
    ("port", 0, "--port"), ("port", 65536, "--port"), ("port", -1, "--port"),
    ("max_batch", 0, "--max-batch"), ("max_queue", 0, "--max-queue"), ("max_image_bytes", 0, "--max-image-bytes"),
    ("max_body_bytes", -5, "--max-body-bytes"), ("default_max_tokens", 0, "default_max_tokens"),
    ("batch_wait_ms", -1.0, "batch_wait_ms"), ("batch_wait_ms", float("nan"), "batch_wait_ms"),
    ("batch_wait_ms", float("inf"), "batch_wait_ms"), ("host", "", "--host"), ("model", "", "--model"),
    ("log_level", "loud", "log level"),
])
def test_every_config_value_is_checked(field: str, value, option: str) -> None:
    with pytest.raises(StvError) as error:
        ServeConfig(**{field: value})
    assert option in one_line(error)


def test_config_limits_at_their_edges_are_fine() -> None:
    ServeConfig(port=1, max_batch=1, max_queue=1, max_image_bytes=1, max_body_bytes=1, batch_wait_ms=0,
                default_max_tokens=1, log_level="WARNING")
    ServeConfig(port=65535, api_key="k")


def broken_file(adapter, path: Path, edit) -> Path:
    good = TaskVectors.load(write_vectors(adapter, path, "broken", seed=5))
    tensors = {"vectors": good.vectors.clone(), "locations": good.locations.clone(), "logits": torch.zeros(
        len(good.locations), 4), "baseline": good.baseline.clone()}
    edit(tensors)
    return save_artifact(path, "vectors", tensors, model=adapter.name, fingerprint=adapter.fingerprint(),
                         settings={"insert": "replace", "task": "broken"})


@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t["vectors"].__setitem__((0, 0), float("nan")), "NaN"),
    (lambda t: t["vectors"].__setitem__((1, 2), float("inf")), "infinite"),
    (lambda t: t["locations"].__setitem__((0, 0), 99), "range"),
    (lambda t: t["locations"].__setitem__((0, 1), 99), "range"),
    (lambda t: t.update(vectors=torch.cat([t["vectors"], t["vectors"]], -1),
                        baseline=torch.cat([t["baseline"], t["baseline"]], -1)), "wide"),
])
def test_unusable_vector_files_fail_at_load_naming_the_file(adapter, tmp_path, edit, fragment) -> None:
    path = broken_file(adapter, tmp_path / "broken.safetensors", edit)
    with pytest.raises(StvError) as error:
        create_app(ServeConfig(vectors=[path]), adapter)
    message = one_line(error)
    assert str(path) in message and fragment in message


def test_vector_sets_are_checked_against_the_model(adapter) -> None:
    """What the file checks cannot see (sets built in code, duplicates, dtype range)."""
    k, d = 2, adapter.head_dim

    def make(locations, vectors) -> VectorSet:
        return VectorSet("x", "t", "d", Intervention(torch.tensor(locations), vectors, "replace"))

    fine = make([[0, 0], [0, 1]], torch.ones(k, d))
    assert check_vector_set(adapter, fine, "s") is fine
    cases = [
        (make([[0, 0], [0, 0]], torch.ones(k, d)), "twice"),
        (make([[0, 0], [adapter.n_layers, 0]], torch.ones(k, d)), "outside"),
        (make([[0, 0], [0, -1]], torch.ones(k, d)), "outside"),
        (make([[0, 0], [0, 1]], torch.ones(k, d + 1)), "wide"),
        (make([[0, 0], [0, 1]], torch.full((k, d), float("nan"))), "NaN"),
        (make([[0, 0], [0, 1]], torch.full((k, d), 1e39, dtype=torch.float64)), "too large"),
        (make([[0, 0]], torch.ones(k, d)), "locations"),
    ]
    for vector_set_, fragment in cases:
        with pytest.raises(StvError, match=fragment):
            check_vector_set(adapter, vector_set_, "vectors for task 't'")
    nan = TaskVectors(torch.tensor([[0, 0]]), torch.full((1, d), float("nan")), None, "replace", adapter.name, {},
                      "nan", "d")
    with pytest.raises(StvError, match="NaN"):
        create_app(ServeConfig(), adapter, [nan])


def test_served_names_are_never_paths(tmp_path) -> None:
    directory = tmp_path / "models" / "SmolLM2-135M"
    directory.mkdir(parents=True)
    assert served_name(str(directory)) == "SmolLM2-135M"
    assert served_name(str(directory) + "/") == "SmolLM2-135M"
    assert served_name(str(tmp_path / "weights" / "model.Q4_K_M.gguf")) == "model.Q4_K_M"
    assert served_name("./checkpoints/run7") == "run7"
    assert served_name("~/models/llava") == "llava"
    assert served_name("smollm2") == "smollm2"
    assert served_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_the_load_path_still_names_the_model(adapter) -> None:
    demo = VectorSet("base+demo@abc", "demo", "abc", Intervention(torch.tensor([[0, 0]]), torch.ones(1, 2)))
    catalog = Catalog("base", [demo], loaded_as="/srv/models/base")
    assert catalog.ids() == ["base", "base+demo@abc"]
    assert catalog.resolve("/srv/models/base") is None
    assert catalog.resolve("/srv/models/base+demo@abc") is demo
    assert catalog.resolve("/srv/models/base+demo") is demo
    assert catalog.canonical("/srv/models/base+demo@abc") == "base+demo@abc"
    assert catalog.canonical("/srv/models/basement") == "/srv/models/basement"


def test_docs_and_openapi_are_off(adapter) -> None:
    app = create_app(ServeConfig(), adapter)
    with TestClient(app) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            response = client.get(path)
            assert response.status_code == 404 and response.json()["error"]["message"]
