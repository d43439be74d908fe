"""Every user mistake, on every command: exit 2, exactly one line on stderr, no
traceback, and no artifact created or changed (issue 14).

One finished workspace (scan, bank, vectors, results.json of a tiny Llama on a text
task) is built once; each case runs on a fresh copy of it and compares every file
under its folder, bytes and mode, before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from stvcli.cli import app
from stvcli.config import ModelOptions
from stvcli.data.options import DataOptions
from stvcli.data.synthetic import ANTONYMS, write_text_jsonl

runner = CliRunner()
PAIRS = [(f"{a}{i}", f"{b}{i}") for i in range(4) for a, b in ANTONYMS]


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> dict[str, Path]:
    """A tiny text model, its data, a finished workspace W and a second one, B, made
    with another seed (its bank is "another workspace's bank")."""
    from stvcli.stages.bank import run_bank
    from stvcli.stages.config import BankConfig, EvalConfig, ScanConfig, SearchConfig
    from stvcli.stages.evaluate import run_eval
    from stvcli.stages.scan import run_scan
    from stvcli.stages.search import run_search
    from stvcli.testing.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("finished")
    model = save_tiny_model("llama", root / "model")
    data = write_text_jsonl(root, PAIRS)
    for name, seed in (("W", 0), ("B", 1)):
        space = root / name
        options = ModelOptions(model=str(model), dtype="float32", device="cpu")
        scan = ScanConfig(model=options, data=DataOptions(task="text", data=str(data), seed=0, eval_limit=8),
                          workspace=space, shots=2, queries=4, top_k=3, seed=seed, keep_contexts=4, quiet=True)
        run_scan(scan)
        run_bank(BankConfig(workspace=space, clusters=2, contexts=4, seed=seed, quiet=True))
        if name == "W":
            run_search(SearchConfig(workspace=space, iterations=2, samples=2, queries_per_iteration=1, holdout=0,
                                    quiet=True))
            run_eval(EvalConfig(workspace=space, methods=["zero-shot"], limit=2, quiet=True))
    return {"root": root, "model": model, "data": data, "W": root / "W", "B": root / "B"}


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: its SHA-256 and mode."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def free_port_in_use():
    """A bound, listening socket (the port is busy while it lives)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


# ------------------------------------------------------------------ setups
# Each setup gets the case folder (holding a fresh copy of W) and the finished bed,
# and may add files; it returns extra substitutions for the arguments.
def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def vectors_edited(case: Path, edit) -> Path:
    source = case / "W" / "vectors.safetensors"
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as handle:
        meta = handle.metadata()
    tensors = load_file(str(source))
    edit(tensors)
    target = case / "edited.safetensors"
    save_file(tensors, str(target), metadata=meta)
    return target


def nan_vectors(case, bed):
    return {"FILE": str(vectors_edited(case, lambda t: t["vectors"].fill_(float("nan"))))}


def far_locations(case, bed):
    return {"FILE": str(vectors_edited(case, lambda t: t["locations"].add_(99)))}


def wide_vectors(case, bed):
    def widen(t):
        t["vectors"] = torch.cat([t["vectors"], t["vectors"]], dim=-1)
        t["baseline"] = torch.cat([t["baseline"], t["baseline"]], dim=-1)

    return {"FILE": str(vectors_edited(case, widen))}


def a_file(case, bed):
    return {"FILE": str(write(case / "plain.txt", b"not a folder\n"))}


def binary_data(case, bed):
    return {"DATA": str(write(case / "binary.jsonl", bytes(range(256)) * 8))}


def latin1_data(case, bed):
    return {"DATA": str(write(case / "latin1.jsonl", '{"question": "caf\u00e9", "answers": ["x"]}\n'.encode("latin-1")))}


def broken_json_data(case, bed):
    return {"DATA": str(write(case / "broken.jsonl", b'{"question": "a", "answers": ["b"]}\n{"question": \n'))}


def long_question_data(case, bed):
    pairs = [("word " * 4000, "x")] + PAIRS
    return {"DATA": str(write_text_jsonl(case, pairs, name="long.jsonl"))}


def truncated_scan(case, bed):
    path = case / "W" / "scan.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    return {}


def truncated_results(case, bed):
    path = case / "W" / "results.json"
    path.write_text(path.read_text()[:50])
    return {}


def foreign_bank(case, bed):
    shutil.copy(bed["B"] / "bank.safetensors", case / "W" / "bank.safetensors")
    return {}


def only_scan(case, bed):
    for name in ("bank.safetensors", "vectors.safetensors"):
        (case / "W" / name).unlink()
    return {}


def busy_port(case, bed):
    sock = free_port_in_use()
    case_sockets.append(sock)
    return {"PORT": str(sock.getsockname()[1])}


case_sockets: list[socket.socket] = []

# ------------------------------------------------------------------ the cases
# (id, arguments, a fragment of the one error line, setup). In the arguments: W is the
# case's copy of the finished workspace, MODEL and DATA the bed's, FILE / DATA / PORT
# what the setup made.
SCAN = ["scan", "--model", "MODEL", "-w", "NEW", "--task", "text", "--data", "DATA"]
CASES = [
    # scan: options
    ("scan-queries-0", [*SCAN, "--queries", "0"], "--queries", None),
    ("scan-queries-negative", [*SCAN, "--queries", "-1"], "--queries", None),
    ("scan-queries-text", [*SCAN, "--queries", "abc"], "--queries", None),
    ("scan-shots-0", [*SCAN, "--shots", "0"], "--shots", None),
    ("scan-shots-too-many", [*SCAN, "--shots", "5000"], "--shots", None),
    ("scan-top-k-0", [*SCAN, "--top-k", "0"], "--top-k", None),
    ("scan-top-frac-0", [*SCAN, "--top-frac", "0"], "--top-frac", None),
    ("scan-top-frac-above-1", [*SCAN, "--top-frac", "1.5"], "--top-frac", None),
    ("scan-top-frac-nan", [*SCAN, "--top-frac", "nan"], "--top-frac", None),
    ("scan-top-k-and-frac", [*SCAN, "--top-k", "3", "--top-frac", "0.1"], "not both", None),
    ("scan-sensitivity", [*SCAN, "--sensitivity", "foo"], "--sensitivity", None),
    ("scan-batch-size-0", [*SCAN, "--batch-size", "0"], "--batch-size", None),
    ("scan-batch-size-text", [*SCAN, "--batch-size", "abc"], "--batch-size", None),
    ("scan-group-size-0", [*SCAN, "--group-size", "0"], "--group-size", None),
    ("scan-seed-negative", [*SCAN, "--seed", "-1"], "--seed", None),
    ("scan-dtype", [*SCAN, "--dtype", "float8"], "--dtype", None),
    ("scan-device", [*SCAN, "--device", "tpu"], "--device", None),
    ("scan-projection-pattern", [*SCAN, "--projection-pattern", "(["], "--projection-pattern", None),
    ("scan-max-memory", [*SCAN, "--max-memory", "lots"], "--max-memory", None),
    ("scan-columns", [*SCAN, "--columns", "nonsense"], "--columns", None),
    ("scan-unknown-option", [*SCAN, "--queriess", "3"], "--queriess", None),
    ("scan-eval-limit-0", [*SCAN, "--eval-limit", "0"], "--eval-limit", None),
    ("scan-support-limit-0", [*SCAN, "--support-limit", "0"], "--support-limit", None),
    # scan: inputs
    ("scan-no-model", ["scan", "--model", "/nope/model", "-w", "NEW", "--task", "text", "--data", "DATA"],
     "/nope/model", None),
    ("scan-no-data", ["scan", "--model", "MODEL", "-w", "NEW", "--task", "text", "--data", "/nope/d.jsonl"],
     "no such file", None),
    ("scan-unknown-task", ["scan", "--model", "MODEL", "-w", "NEW", "--task", "no-such-task", "--data", "DATA"],
     "no-such-task", None),
    ("scan-binary-data", SCAN, "UTF-8", binary_data),
    ("scan-latin1-data", SCAN, "UTF-8", latin1_data),
    ("scan-broken-json", SCAN, "broken.jsonl:2", broken_json_data),
    ("scan-long-question", [*SCAN, "--shots", "2", "--queries", "4"], "token", long_question_data),
    ("scan-workspace-is-file", ["scan", "--model", "MODEL", "-w", "FILE", "--task", "text", "--data", "DATA"],
     "is a file", a_file),
    ("scan-workspace-under-file", ["scan", "--model", "MODEL", "-w", "FILE/sub", "--task", "text", "--data",
                                   "DATA"], "is a file", a_file),
    # bank
    ("bank-clusters-0", ["bank", "-w", "W", "--clusters", "0"], "--clusters", None),
    ("bank-clusters-negative", ["bank", "-w", "W", "--clusters", "-3"], "--clusters", None),
    ("bank-clusters-text", ["bank", "-w", "W", "--clusters", "abc"], "--clusters", None),
    ("bank-contexts-0", ["bank", "-w", "W", "--contexts", "0"], "--contexts", None),
    ("bank-zero-zero", ["bank", "-w", "W", "--clusters", "0", "--contexts", "0"], "--clusters", None),
    ("bank-contexts-below-clusters", ["bank", "-w", "W", "--clusters", "8", "--contexts", "4"], "T >= M", None),
    ("bank-seed-negative", ["bank", "-w", "W", "--seed", "-5"], "--seed", None),
    ("bank-no-scan", ["bank", "-w", "EMPTY"], "run `stv scan` first", None),
    ("bank-workspace-is-file", ["bank", "-w", "FILE"], "is a file", a_file),
    ("bank-truncated-scan", ["bank", "-w", "W", "--force"], "not a readable safetensors file", truncated_scan),
    # search
    ("search-lr-negative", ["search", "-w", "W", "--lr", "-1"], "--lr", None),
    ("search-lr-0", ["search", "-w", "W", "--lr", "0"], "--lr", None),
    ("search-lr-nan", ["search", "-w", "W", "--lr", "nan"], "--lr", None),
    ("search-lr-inf", ["search", "-w", "W", "--lr", "inf"], "--lr", None),
    ("search-iterations-0", ["search", "-w", "W", "--iterations", "0"], "--iterations", None),
    ("search-samples-1", ["search", "-w", "W", "--samples", "1"], "--samples", None),
    ("search-queries-per-iteration-0", ["search", "-w", "W", "--queries-per-iteration", "0"],
     "--queries-per-iteration", None),
    ("search-holdout-negative", ["search", "-w", "W", "--holdout", "-1"], "--holdout", None),
    ("search-holdout-0-best-of", ["search", "-w", "W", "--holdout", "0", "--select", "best-of"], "--holdout", None),
    ("search-reward", ["search", "-w", "W", "--reward", "foo"], "--reward", None),
    ("search-select", ["search", "-w", "W", "--select", "foo"], "--select", None),
    ("search-insert", ["search", "-w", "W", "--insert", "foo"], "--insert", None),
    ("search-write-at", ["search", "-w", "W", "--write-at", "foo"], "--write-at", None),
    ("search-auto-write-at", ["search", "-w", "W", "--auto", "--auto-write-at", "every,every"], "--auto-write-at", None),
    ("search-mean-prior-above-1", ["search", "-w", "W", "--mean-prior", "1.5"], "--mean-prior", None),
    ("search-mean-prior-0", ["search", "-w", "W", "--mean-prior", "0"], "--mean-prior", None),
    ("search-no-bank", ["search", "-w", "W"], "run `stv bank` first", only_scan),
    ("search-foreign-bank", ["search", "-w", "W", "--force"], "another scan.safetensors", foreign_bank),
    ("search-too-many-holdout", ["search", "-w", "W", "--holdout", "100000", "--select", "best-of", "--force"],
     "--holdout", None),
    # eval
    ("eval-methods-empty", ["eval", "-w", "W", "--methods", ","], "--methods", None),
    ("eval-methods-unknown", ["eval", "-w", "W", "--methods", "foo"], "unknown method", None),
    ("eval-methods-icl-0", ["eval", "-w", "W", "--methods", "icl:0"], "icl:N", None),
    ("eval-methods-twice", ["eval", "-w", "W", "--methods", "stv,stv"], "twice", None),
    ("eval-limit-0", ["eval", "-w", "W", "--limit", "0"], "--limit", None),
    ("eval-limit-negative", ["eval", "-w", "W", "--limit", "-3"], "--limit", None),
    ("eval-mtv-iterations-0", ["eval", "-w", "W", "--mtv-iterations", "0"], "--mtv-iterations", None),
    ("eval-mtv-threshold", ["eval", "-w", "W", "--mtv-threshold", "1.5"], "--mtv-threshold", None),
    ("eval-metric-variant", ["eval", "-w", "W", "--metric-variant", "foo"], "--metric-variant", None),
    ("eval-insert", ["eval", "-w", "W", "--insert", "foo"], "--insert", None),
    ("eval-write-at", ["eval", "-w", "W", "--write-at", "last"], "--write-at", None),
    ("eval-no-source", ["eval"], "--workspace or --vectors", None),
    ("eval-data-without-task", ["eval", "-w", "W", "--data", "DATA"], "--task", None),
    ("eval-vectors-folder", ["eval", "--vectors", "W", "--methods", "zero-shot"], "is a folder", None),
    ("eval-vectors-missing", ["eval", "--vectors", "/nope/v.safetensors", "--methods", "stv"], "does not exist", None),
    ("eval-vectors-nan", ["eval", "--vectors", "FILE", "--methods", "zero-shot,stv", "--output-path", "OUT"],
     "NaN", nan_vectors),
    ("eval-vectors-far-locations", ["eval", "--vectors", "FILE", "--methods", "zero-shot,stv", "--output-path",
                                    "OUT"], "out of range", far_locations),
    ("eval-vectors-wide", ["eval", "--vectors", "FILE", "--methods", "zero-shot,stv", "--output-path", "OUT"],
     "wide", wide_vectors),
    ("eval-vectors-with-mtv", ["eval", "--vectors", "W/vectors.safetensors", "--methods", "mtv"], "--workspace",
     None),
    ("eval-output-path-file", ["eval", "-w", "W", "--methods", "zero-shot", "--output-path", "FILE"], "is a file",
     a_file),
    ("eval-workspace-is-file", ["eval", "-w", "FILE", "--methods", "zero-shot"], "is a file", a_file),
    ("eval-truncated-results", ["eval", "-w", "W", "--methods", "zero-shot", "--limit", "1"], "results.json",
     truncated_results),
    ("eval-seed-negative", ["eval", "-w", "W", "--seed", "-2"], "--seed", None),
    # report
    ("report-truncated-results", ["report", "-w", "W"], "results.json", truncated_results),
    ("report-no-scan", ["report", "-w", "EMPTY"], "run `stv scan` first", None),
    ("report-output-path-file", ["report", "-w", "W", "--output-path", "FILE"], "is a file", a_file),
    # serve-local (refused before anything loads or binds)
    ("serve-no-vectors", ["serve-local", "--vectors", "/nope/v.safetensors"], "does not exist", None),
    ("serve-nan-vectors", ["serve-local", "--vectors", "FILE"], "NaN", nan_vectors),
    ("serve-empty-api-key", ["serve-local", "--vectors", "W/vectors.safetensors", "--api-key", ""], "--api-key",
     None),
    ("serve-port-range", ["serve-local", "--vectors", "W/vectors.safetensors", "--port", "70000"], "--port", None),
    ("serve-port-text", ["serve-local", "--vectors", "W/vectors.safetensors", "--port", "abc"], "--port", None),
    ("serve-max-batch-0", ["serve-local", "--vectors", "W/vectors.safetensors", "--max-batch", "0"], "--max-batch",
     None),
    ("serve-busy-port", ["serve-local", "--vectors", "W/vectors.safetensors", "--port", "PORT"], "--port",
     busy_port),
    ("serve-insert", ["serve-local", "--vectors", "W/vectors.safetensors", "--insert", "foo"], "--insert", None),
    ("serve-write-at", ["serve-local", "--vectors", "W/vectors.safetensors", "--write-at", "foo"], "--write-at", None),
    # demo and listings
    ("demo-insert", ["demo", "-w", "NEW", "--insert", "foo"], "'replace' or 'add'", None),
    ("demo-sensitivity", ["demo", "-w", "NEW", "--sensitivity", "foo"], "'l2', 'relative' or 'layer'", None),
    ("demo-task", ["demo", "-w", "NEW", "--task", "no-such-task"], "no-such-task", None),
    ("demo-backbone", ["demo", "-w", "NEW", "--backbone", "gpt9"], "--backbone", None),
    ("demo-mtv-iterations-0", ["demo", "-w", "NEW", "--mtv-iterations", "0"], "--mtv-iterations", None),
    ("models-unknown-option", ["models", "--bogus"], "--bogus", None),
    ("tasks-unknown-option", ["tasks", "--bogus"], "--bogus", None),
    ("unknown-command", ["scna"], "scna", None),
]


def test_at_least_sixty_cases_over_every_command():
    commands = {args[0] for _, args, _, _ in CASES}
    assert len(CASES) >= 60
    assert {"scan", "bank", "search", "eval", "report", "serve-local", "demo", "models", "tasks"} <= commands


@pytest.mark.parametrize("name, args, fragment, setup", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_changes_nothing(finished, tmp_path, name, args, fragment, setup):
    case = tmp_path / "case"
    case.mkdir()
    shutil.copytree(finished["W"], case / "W")
    (case / "EMPTY").mkdir()
    names = {"W": str(case / "W"), "NEW": str(case / "NEW"), "EMPTY": str(case / "EMPTY"), "OUT": str(case / "OUT"),
             "MODEL": str(finished["model"]), "DATA": str(finished["data"])}
    if setup is not None:
        names.update(setup(case, finished))
    before = snapshot(case)
    resolved = [_substitute(arg, names) for arg in args]
    try:
        result = runner.invoke(app, resolved)
    finally:
        while case_sockets:
            case_sockets.pop().close()
    stderr = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(stderr) == 1 and stderr[0].startswith("error:"), result.stderr
    assert fragment in stderr[0], stderr[0]
    assert "Traceback" not in result.output
    assert snapshot(case) == before  # nothing created, changed or removed
    assert not (case / "NEW").exists() and not (case / "OUT").exists()


def _substitute(arg: str, names: dict[str, str]) -> str:
    head, sep, tail = arg.partition("/")
    if head in names and (sep or arg == head):
        return names[head] + sep + tail
    return arg


def test_results_json_keeps_methods_a_rerun_does_not_redo(finished, tmp_path):
    """A second eval with other methods merges into results.json: nothing is lost."""
    space = tmp_path / "W"
    shutil.copytree(finished["W"], space)
    before = json.loads((space / "results.json").read_text())
    assert list(before["results"]["text"]) == ["zero-shot"]
    result = runner.invoke(app, ["eval", "-w", str(space), "--methods", "icl:1", "--limit", "2", "-q"])
    assert result.exit_code == 0, result.output
    after = json.loads((space / "results.json").read_text())
    assert set(after["results"]["text"]) == {"zero-shot", "icl:1"}
    assert after["results"]["text"]["zero-shot"] == before["results"]["text"]["zero-shot"]


def test_artifacts_honour_the_umask(finished, tmp_path):
    space = tmp_path / "W"
    shutil.copytree(finished["W"], space)
    old = os.umask(0o022)
    try:
        result = runner.invoke(app, ["eval", "-w", str(space), "--methods", "icl:1", "--limit", "1", "-q"])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert (space / "results.json").stat().st_mode & 0o777 == 0o644
