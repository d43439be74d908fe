"""Throughput of `stv serve-local`: requests/s at concurrency 1 and 16, and the cost of
inserting task vectors compared with the bare model.

    python benchmarks/serve.py                       # tiny random LLaVA, random vectors
    python benchmarks/serve.py --family llama        # tiny random Llama
    python benchmarks/serve.py --vectors runs/x/vectors.safetensors [--model M] [--device cuda]

The server runs in this process (uvicorn on a loopback port, real HTTP); each point is
the best of ``--repeats`` runs (timings on shared machines are noisy). "overhead" is
the vectors run's time per generated token over the bare model's, minus one, measured
over HTTP and, less noisily, on the model alone (one batched generation of ``--max-tokens``
tokens per row, without the end-of-sequence stop). "mixed" sends half bare and half
vectors requests, which share forwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import torch

from stvcli.artifacts import save_artifact
from stvcli.engine import Intervention
from stvcli.models.base import ModelAdapter
from stvcli.prompt import Prompt
from stvcli.scoring import generate
from stvcli.serve.app import create_app
from stvcli.serve.config import ServeConfig
from stvcli.serve.generation import Row, generate_rows
from stvcli.serve.server import background_server

PROMPT = "Question: what colour is the shape? Answer:"


@dataclass
class Point:
    workload: str  # bare | vectors | mixed
    concurrency: int
    requests: int
    seconds: float
    requests_per_s: float
    tokens_per_s: float
    p50_latency_ms: float


def random_vectors(adapter: ModelAdapter, path: Path, fraction: float = 0.5) -> Path:
    """Vectors at a random ``fraction`` of the heads (the shape of a real vectors file)."""
    generator = torch.Generator().manual_seed(0)
    total = adapter.n_layers * adapter.n_heads
    k = max(1, int(total * fraction))
    chosen = torch.randperm(total, generator=generator)[:k]
    tensors = {
        "vectors": torch.randn(k, adapter.head_dim, generator=generator),
        "locations": torch.stack([chosen // adapter.n_heads, chosen % adapter.n_heads], dim=1),
        "logits": torch.zeros(k, 32),
        "baseline": torch.zeros(k, adapter.head_dim),
    }
    return save_artifact(path, "vectors", tensors, model=adapter.name, fingerprint=adapter.fingerprint(),
                         settings={"insert": "replace", "task": "bench"})


async def drive(url: str, models: list[str], n: int, concurrency: int, max_tokens: int) -> tuple[float, int, list[float]]:
    """Send ``n`` requests (cycling over ``models``), ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = 0

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def one(i: int) -> None:
            nonlocal tokens
            request = {"model": models[i % len(models)], "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": PROMPT}]}
            async with gate:
                start = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=request)
                latencies.append(time.perf_counter() - start)
            response.raise_for_status()
            tokens += response.json()["usage"]["completion_tokens"]

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - start, tokens, latencies


def best_point(workload: str, concurrency: int, runs: list[tuple[float, int, list[float]]]) -> Point:
    seconds, tokens, latencies = min(runs, key=lambda run: run[0])
    n = len(latencies)
    return Point(workload, concurrency, n, seconds, n / seconds, tokens / seconds, statistics.median(latencies) * 1000)


def direct_ms(adapter: ModelAdapter, max_tokens: int, repeats: int) -> float:
    """One ``scoring.generate`` call (no HTTP, no queue), best of ``repeats``, in ms."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(adapter, [Prompt(PROMPT)], max_tokens)
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def model_level_overhead(adapter: ModelAdapter, intervention: Intervention, batch: int, max_tokens: int,
                         repeats: int) -> tuple[float, float]:
    """Best times (ms) of one batched generation without and with the vectors, interleaved.

    Every row runs to ``max_tokens`` (no end of sequence), so both do the same work.
    """
    prompts = [Prompt(PROMPT)] * batch
    inputs = adapter.encode(prompts)
    rows = [Row(prompt, max_tokens) for prompt in prompts]
    eos = adapter.model.generation_config.eos_token_id
    adapter.model.generation_config.eos_token_id = None
    best = {False: float("inf"), True: float("inf")}
    try:
        for _ in range(repeats):
            for with_vectors in (False, True):
                start = time.perf_counter()
                generate_rows(adapter, inputs, rows, intervention if with_vectors else None)
                best[with_vectors] = min(best[with_vectors], time.perf_counter() - start)
    finally:
        adapter.model.generation_config.eos_token_id = eos
    return best[False] * 1000, best[True] * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="llava", help="tiny model family when no --vectors is given")
    parser.add_argument("--vectors", type=Path, help="a real vectors file (loads its model)")
    parser.add_argument("--model", help="model to load with --vectors (default: the vectors' model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        if args.vectors is None:
            from stvcli.testing.tiny import tiny_adapter

            adapter = tiny_adapter(args.family)
            vectors = random_vectors(adapter, Path(scratch) / "bench.safetensors")
            config = ServeConfig(vectors=[vectors], max_batch=args.max_batch)
            app = create_app(config, adapter)
        else:
            config = ServeConfig(vectors=[args.vectors], model=args.model, device=args.device, max_batch=args.max_batch)
            app = create_app(config)
            adapter = app.state.adapter
        catalog = app.state.catalog
        bare, served = catalog.base_id, catalog.ids()[1]
        direct: list[float] = []
        workloads = {"bare": [bare], "vectors": [served], "mixed": [bare, served]}
        runs: dict[tuple[str, int], list] = {(w, c): [] for c in args.concurrency for w in workloads}
        with background_server(app) as url:
            asyncio.run(drive(url, [bare, served], 4, 2, args.max_tokens))  # warm up
            for _ in range(args.repeats):  # interleaved, so a slow spell hits every workload alike
                direct.append(direct_ms(adapter, args.max_tokens, 4))  # the server is idle here
                for workload, concurrency in runs:
                    runs[(workload, concurrency)].append(
                        asyncio.run(drive(url, workloads[workload], args.requests, concurrency, args.max_tokens)))
        points = [best_point(w, c, found) for (w, c), found in runs.items()]
        baseline_ms = min(direct)
        intervention = catalog.sets[served].intervention
        model_level = {batch: model_level_overhead(adapter, intervention, batch, args.max_tokens, 3 * args.repeats)
                       for batch in args.concurrency}
    overhead = {}
    for concurrency in args.concurrency:
        by = {p.workload: p for p in points if p.concurrency == concurrency}
        overhead[concurrency] = by["bare"].tokens_per_s / by["vectors"].tokens_per_s - 1  # time per token
    report = {"model": catalog.base_id, "device": str(adapter.device), "max_tokens": args.max_tokens,
              "max_batch": args.max_batch, "direct_generate_ms": baseline_ms,
              "points": [asdict(p) for p in points], "insertion_overhead_http": overhead,
              "model_level_ms": {batch: {"bare": bare_ms, "vectors": vectors_ms}
                                 for batch, (bare_ms, vectors_ms) in model_level.items()}}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model {report['model']} on {report['device']}, max_tokens {args.max_tokens}, max_batch {args.max_batch}")
    print(f"direct scoring.generate (1 prompt, no HTTP): {baseline_ms:.1f} ms\n")
    print("| workload | concurrency | requests/s | tokens/s | p50 latency (ms) |")
    print("|---|---:|---:|---:|---:|")
    for p in points:
        print(f"| {p.workload} | {p.concurrency} | {p.requests_per_s:.1f} | {p.tokens_per_s:.0f} | {p.p50_latency_ms:.0f} |")
    print()
    for concurrency, value in overhead.items():
        print(f"insertion overhead over HTTP at concurrency {concurrency}: {value * 100:+.1f}% time per token")
    for batch, (bare_ms, vectors_ms) in model_level.items():
        print(f"insertion overhead in the model, batch {batch}: {bare_ms:.1f} ms bare, {vectors_ms:.1f} ms with "
              f"vectors ({(vectors_ms / bare_ms - 1) * 100:+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
