"""benchmarks/gpu.sh end to end at tiny size on the CPU (issue 17), and its arithmetic."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _gpu_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu = _gpu_module()


def test_gpu_script_runs_the_chain_at_tiny_size_on_cpu(tmp_path):
    # a python that reports rich as missing: gpu.sh tries the (absent) wheelhouse and says so in one line
    shim = tmp_path / "python"
    shim.write_text("#!/bin/sh\n"
                    'if [ "$1" = "-c" ] && [ "$2" = "import rich" ]; then exit 1; fi\n'
                    f'exec {sys.executable} "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PYTHON": str(shim), "WHEELS": str(tmp_path / "no-wheels"), "PYTHONPATH": ""}
    out = tmp_path / "gpu.json"
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--tiny", "--device", "cpu", "--out", str(out),
                          "--root", str(tmp_path / "work")], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    results = json.loads(out.read_text())
    for stage in ("scan", "bank", "search", "eval"):
        stats = results["chain"][stage]
        assert stats["forwards"] == stats["plan_forwards"] > 0, stage
        assert stats["forwards_per_s"] == pytest.approx(stats["forwards"] / stats["seconds"])
        assert any(line.startswith(f"{stage}: {stats['forwards']} forwards") and "forwards/s" in line for line in lines)
    assert results["search_step"]["flops"] > 0 and results["search_step"]["share_of_peak"] is None
    # what a CPU run cannot do is one line each, with the reason
    skips = [line for line in lines if line.startswith("skip:")]
    assert any("bf16 peak" in line for line in skips) and any("FAISS GPU" in line for line in skips)
    assert f"skip: installing rich: no wheelhouse at {tmp_path / 'no-wheels'}" in skips[0]
    assert results["kmeans"]["cpu_seconds"] > 0 and "gpu_seconds" not in results["kmeans"]
    assert results["parameters"]["total"] > 0 and lines[-1].startswith("total:")


def test_gpu_script_says_why_when_cuda_is_missing(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    env = {**os.environ, "PYTHON": sys.executable, "WHEELS": str(tmp_path), "PYTHONPATH": ""}
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--out", str(tmp_path / "x.json")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert run.stdout.strip().splitlines()[-1].startswith("skip: the GPU run: torch sees no CUDA device")


def test_bf16_peaks(monkeypatch):
    monkeypatch.delenv("GPU_PEAK_TFLOPS", raising=False)
    assert gpu.bf16_peak("NVIDIA H200") == 989e12
    assert gpu.bf16_peak("NVIDIA H100 PCIe") == 756e12
    assert gpu.bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu.bf16_peak("Some GPU") is None
    monkeypatch.setenv("GPU_PEAK_TFLOPS", "100")
    assert gpu.bf16_peak("Some GPU") == 100e12


def test_search_flops_counts_matmuls():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert gpu.search_flops(lambda: a @ b) == 2 * 8 * 16 * 4


def test_missing_modules_are_named(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "pydantic":
            raise ImportError("No module named 'pydantic'\nsecond line")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    missing = gpu.check_imports()
    assert missing == ["pydantic (stage configs): No module named 'pydantic'"]
