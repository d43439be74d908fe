"""One GPU run (issue 17): a random Idefics2-8B-geometry model in bf16, the whole chain at the paper's settings.

    bash benchmarks/gpu.sh                       # on the GPU machine (installs missing wheels offline)
    bash benchmarks/gpu.sh --tiny --device cpu   # the CPU check the test suite runs (seconds)

Builds ``stvcli.testing.scale.IDEFICS2_8B`` (32 x 32 heads of 128, Mistral-7B decoder,
SigLIP tower, 64-latent perceiver; random weights, about 8B parameters) directly on the
GPU in bf16, writes synthetic VQA data with 378-pixel images, and runs scan (100
queries, --shots, K = 300), bank (M = 32, T = 256, FAISS on the GPU when faiss-gpu
sees one), search (300 x 32 x 4) and eval (zero-shot, stv, mean-at-stv) through the
stage functions, with the model registered in-process (nothing written to disk).
Prints, one line each: forwards/s per stage, the share of the GPU's bf16 peak in a
search step's forwards (FLOPs counted by torch's FlopCounterMode), FAISS GPU vs CPU
k-means seconds at the paper's size, and peak memory; anything it cannot do is one
line starting with ``skip:`` and the reason. Results also go to --out (JSON).

Settings are flags (or the environment: SHOTS, QUERIES, ITERATIONS, EVAL_ITEMS).
Images enter through ``PixelProcessor`` (no transformers image processor: those of
transformers 5.0-5.17 need torchvision).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # scale.py
sys.path.insert(0, str(HERE.parent))  # stvcli without installing it

#: Dense bf16 peak (FLOP/s, no sparsity) by device name, from the vendors' data sheets.
BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "B200": 2250e12,
             "A10G": 125e12, "L4": 121e12}


def say(text: str) -> None:
    print(text, flush=True)


def bf16_peak(device_name: str) -> float | None:
    """The device's dense bf16 peak (GPU_PEAK_TFLOPS overrides); None when unknown."""
    if os.environ.get("GPU_PEAK_TFLOPS"):
        return float(os.environ["GPU_PEAK_TFLOPS"]) * 1e12
    for name, peak in BF16_PEAK.items():  # "H100 PCIe" before "H100"
        if name in device_name:
            return peak
    return None


def check_imports() -> list[str]:
    """Modules stvcli needs at import time that are missing (one reason each)."""
    missing = []
    for module, why in (("pydantic", "stage configs"), ("rich", "progress lines"), ("PIL", "images"),
                        ("numpy", "k-means input"), ("safetensors", "artifacts"), ("transformers", "models")):
        try:
            __import__(module)
        except ImportError as error:
            missing.append(f"{module} ({why}): {str(error).splitlines()[0] if str(error) else type(error).__name__}")
    return missing


def search_flops(step: Any) -> float:
    """FLOPs one call of ``step`` runs (torch.utils.flop_counter: matmuls and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny geometry and counts (the CPU test)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shots", type=int, default=int(os.environ.get("SHOTS", 64)))
    parser.add_argument("--queries", type=int, default=int(os.environ.get("QUERIES", 100)))
    parser.add_argument("--iterations", type=int, default=int(os.environ.get("ITERATIONS", 300)))
    parser.add_argument("--eval-items", type=int, default=int(os.environ.get("EVAL_ITEMS", 200)))
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    missing = check_imports()
    if missing:
        say("skip: everything: missing " + "; ".join(missing) + " (fill the wheelhouse: docs/benchmarks.md)")
        raise SystemExit(2)

    import tempfile

    import torch
    import transformers

    import scale
    from stvcli.testing.scale import IDEFICS2_8B, SCALE_TINY, parameter_counts, scale_adapter

    results: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__, "skips": []}

    def skip(what: str, why: str) -> None:
        say(f"skip: {what}: {why}")
        results["skips"].append(f"{what}: {why}")

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        skip("the GPU run", "torch sees no CUDA device; rerun with --device cpu --tiny for the CPU check")
        raise SystemExit(2)
    cuda = device.startswith("cuda")
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    results["device"] = name
    say(f"device: {name}; torch {torch.__version__}, transformers {transformers.__version__}")
    if tuple(int(x) for x in transformers.__version__.split(".")[:2]) < (5, 18):
        say("note: transformers < 5.18: Idefics2's image processors need torchvision; images go through "
            "stvcli.testing.scale.PixelProcessor")
    dtype = torch.bfloat16 if cuda else torch.float32
    g = SCALE_TINY if args.tiny else IDEFICS2_8B
    base = scale.QUICK if args.tiny else scale.PAPER
    sizes = replace(base, shots=args.shots if not args.tiny else base.shots,
                    queries=args.queries if not args.tiny else base.queries,
                    iterations=args.iterations if not args.tiny else base.iterations,
                    eval_items=args.eval_items if not args.tiny else base.eval_items)
    sizes = replace(sizes, keep_contexts=min(sizes.keep_contexts, sizes.queries),
                    support=max(sizes.support, sizes.queries + sizes.holdout + sizes.shots + 8))
    results["sizes"] = asdict(sizes)

    tick = time.perf_counter()
    adapter = scale_adapter(g, dtype=dtype, device=device)
    if cuda:
        torch.cuda.synchronize()
    results["build_seconds"] = time.perf_counter() - tick
    results["parameters"] = parameter_counts(adapter.model)
    say(f"model: {g.name}, {adapter.n_layers} x {adapter.n_heads} heads of {adapter.head_dim}, "
        f"{results['parameters']['total'] / 1e9:.2f}B parameters, {dtype}, built in {results['build_seconds']:.1f} s")
    root = args.root or Path(tempfile.mkdtemp(prefix="stv-gpu-"))
    tick = time.perf_counter()
    bed = scale.make_bed(g, root, sizes, device, dtype, adapter=adapter)
    results["data_seconds"] = time.perf_counter() - tick

    # ---- the chain
    from stvcli.stages.bank import faiss_gpus

    try:
        gpus = faiss_gpus()
    except ImportError as error:
        skip("bank", f"faiss is not installed ({error})")
        raise SystemExit(2) from None
    if cuda and gpus == 0:
        skip("FAISS on the GPU", "faiss sees no GPU (faiss-cpu, or faiss-gpu built for another CUDA); "
             "the bank's k-means runs on the CPU")
    chain = scale.run_chain(bed, sizes, root / "chain")
    plan = scale.planned(sizes, sizes.support, sizes.eval_items)
    results["chain"] = chain
    for stage in ("scan", "bank", "search", "eval"):
        stats = chain[stage]
        stats["plan_forwards"] = int(plan[stage]["forwards"])
        rate = stats["forwards"] / stats["model_seconds"] if stats["model_seconds"] else None
        stats["forwards_per_s"] = stats["forwards"] / stats["seconds"] if stats["seconds"] else None
        stats["forwards_per_model_s"] = rate
        say(f"{stage}: {stats['forwards']} forwards (plan {stats['plan_forwards']}) in {stats['seconds']:.1f} s = "
            f"{stats['forwards_per_s'] or 0:.1f} forwards/s, {100 * (stats['model_share'] or 0):.0f}% in forwards, "
            f"peak {stats['peak_mb'] or 0:,.0f} MB")

    # ---- share of the bf16 peak in the search's forwards
    step = scale.search_step(bed, sizes.top_k if not args.tiny else adapter.n_layers, sizes.samples,
                             sizes.queries_per_iteration)
    flops = search_flops(step)
    seconds = scale.best_of({"step": step}, 3, sync=cuda)["step"]
    peak = bf16_peak(name) if cuda else None
    results["search_step"] = {"flops": flops, "seconds": seconds, "tflops_per_s": flops / seconds / 1e12,
                              "peak_flops": peak, "share_of_peak": flops / seconds / peak if peak else None}
    if peak:
        say(f"search step: {flops / 1e12:.2f} TFLOP in {seconds * 1e3:.1f} ms = {flops / seconds / 1e12:.1f} TFLOP/s, "
            f"{100 * flops / seconds / peak:.1f}% of the {peak / 1e12:.0f} TFLOP/s bf16 peak")
    else:
        skip("share of the bf16 peak", f"no bf16 peak known for {name!r} (set GPU_PEAK_TFLOPS); "
             f"{flops / seconds / 1e12:.3f} TFLOP/s measured")

    # ---- FAISS k-means, GPU vs CPU, at the paper's size
    n, k, m, d = sizes.contexts, sizes.top_k, sizes.clusters, adapter.head_dim
    kmeans: dict[str, Any] = {"contexts": n, "K": k, "M": m, "D": d,
                              "cpu_seconds": scale.kmeans_seconds(n, k, m, d, gpu=False)}
    if gpus:
        kmeans["gpu_seconds"] = scale.kmeans_seconds(n, k, m, d, gpu=True)
        say(f"k-means T={n} K={k} M={m} D={d}: FAISS GPU {kmeans['gpu_seconds']:.2f} s, "
            f"CPU {kmeans['cpu_seconds']:.2f} s ({kmeans['cpu_seconds'] / kmeans['gpu_seconds']:.1f}x)")
    else:
        skip("FAISS GPU k-means", f"faiss sees no GPU; CPU k-means T={n} K={k} M={m} D={d}: "
             f"{kmeans['cpu_seconds']:.2f} s")
    results["kmeans"] = kmeans

    # ---- memory
    if cuda:
        results["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        say(f"peak GPU memory: {results['peak_memory_gb']:.1f} GB allocated "
            f"(of {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GB)")
    else:
        from stvcli.stages.common import peak_memory_mb

        results["peak_memory_gb"] = peak_memory_mb() / 1024
        say(f"peak memory: {results['peak_memory_gb']:.2f} GB resident (CPU)")
    results["seconds"] = time.perf_counter() - started
    say(f"total: {results['seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return results


if __name__ == "__main__":
    main()
