"""Paper-scale cost (issue 17): the whole chain on a 32 x 32-head Idefics2 at the paper's settings.

    .venv/bin/python benchmarks/scale.py --json benchmarks/results/scale_cpu.json --markdown runs/scale/scale.md
    .venv/bin/python benchmarks/scale.py --quick          # tiny geometry, seconds (what the test runs)
    .venv/bin/python benchmarks/scale.py --sections chain,shots

Model: ``stvcli.testing.scale.SCALE_CPU``, random weights, the paper's 32 layers x 32
heads and 64 image tokens per image (Idefics2-8B's perceiver), head_dim 8 and a 512-wide
MLP so it runs on 2 CPU cores. Data: synthetic colour VQA with real images.

Sections (each a ratio or a count inside one run; timings are minima over repeats):

  chain    scan -> bank -> search -> eval at the paper's settings (64 shots, K = 300,
           M = 32, T = 256, 300 x 32 x 4 search), RUN AT REDUCED COUNTS (a few scan
           queries, bank contexts, search iterations and eval items) and extrapolated
           linearly in forwards to the paper's counts, except the bank's k-means, which
           runs at the paper's size (T = 256, K = 300, M = 32). Per stage: forwards
           (measured, and ``stv plan``'s prediction for the same settings), seconds,
           share in model forwards, peak memory (resident above the start, or CUDA
           allocated), artifact bytes (measured, and the plan's formula).
  shots    one many-shot forward (the scan's) at 16, 32, 64 shots: tokens, seconds, memory.
  k        K = 50, 150, 300: one search step (4 queries x 32 candidates, shared prefix),
           k-means of T = 256 contexts into 32 clusters, bank and vectors bytes.
  m        M = 8, 32 at K = 300: k-means seconds and bank bytes.
  eval     three methods on the same prompts: one generate each (before) vs the shared
           prompt prefix (scoring.generate_each), same generations.
  queries  scan peak memory over 25, 50, 100 queries (4 shots, 25 kept contexts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # stvcli from a checkout (no install needed)
sys.path.insert(0, str(HERE))  # the benchmarks' own helpers
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from peak_memory import PeakMemory  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    """The chain's settings (the stage configs' names)."""

    shots: int = 64
    queries: int = 100
    keep_contexts: int = 100
    top_k: int = 300
    clusters: int = 32
    contexts: int = 256
    iterations: int = 300
    samples: int = 32
    queries_per_iteration: int = 4
    holdout: int = 50
    eval_items: int = 500
    support: int = 400  # support pool
    methods: tuple[str, ...] = ("zero-shot", "stv", "mean-at-stv")


PAPER = Sizes()
#: What the CPU run measures (then extrapolated to ``PAPER``): 4 scan queries, 2 extra bank
#: contexts (k-means on them at M = 4; the paper-size k-means is timed apart), 3 search iterations.
MEASURED_CPU = Sizes(queries=4, keep_contexts=4, clusters=4, contexts=6, iterations=3, holdout=4, eval_items=8,
                     support=80)
#: The tiny geometry of --quick and the tests.
QUICK = Sizes(shots=4, queries=4, keep_contexts=4, top_k=6, clusters=2, contexts=5, iterations=2, samples=4,
              queries_per_iteration=2, holdout=2, eval_items=3, support=24)


def best_of(fns: dict[str, Callable[[], Any]], repeats: int, sync: bool = False) -> dict[str, float]:
    """Minimum seconds of each variant, variants interleaved in every repeat (after a warm-up)."""
    def timed(fn: Callable[[], Any]) -> float:
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: min(values) for name, values in times.items()}


# ------------------------------------------------------------------------------ setup
@dataclass
class Bed:
    """A scale model registered for the stages, with its data on disk."""

    adapter: Any
    model: Any  # ModelOptions
    data: Any  # DataOptions
    geometry: Any  # ScaleGeometry
    device: str
    root: Path


def make_bed(geometry: Any, root: Path, sizes: Sizes, device: str = "cpu", dtype: torch.dtype = torch.float32,
             adapter: Any = None) -> Bed:
    """Build (or take) the model, register it under ``scale-<name>`` and write the data:
    ``sizes.support`` support items and ``sizes.eval_items`` evaluation items."""
    from stvcli.config import ModelOptions
    from stvcli.data.options import DataOptions
    from stvcli.stages.common import register_adapter
    from stvcli.testing.scale import scale_adapter, write_scale_vqa

    adapter = adapter or scale_adapter(geometry, dtype=dtype, device=device)
    dtype_name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    model = ModelOptions(model=f"scale-{geometry.name}", dtype=dtype_name, device=device)
    register_adapter(model, adapter)
    support = write_scale_vqa(root / "data", sizes.support, geometry.image_size, seed=1, name="support.jsonl")
    evaluation = write_scale_vqa(root / "data", sizes.eval_items, geometry.image_size, seed=2, name="eval.jsonl")
    data = DataOptions(task="vqa", data=str(support), eval_data=str(evaluation), seed=0)
    return Bed(adapter, model, data, geometry, device, root)


def plan_geometry(adapter: Any, image_tokens: int) -> Any:
    from stvcli.models.registry import ModelGeometry

    text = adapter.text_config
    return ModelGeometry(adapter.n_layers, adapter.n_heads, adapter.head_dim, int(text.num_key_value_heads),
                         adapter.context_length, sum(p.numel() for p in adapter.model.parameters()), image_tokens, 2)


def plan_settings(sizes: Sizes) -> Any:
    from stvcli.plan import StageSettings

    return StageSettings(
        shots=sizes.shots, queries=sizes.queries, keep_contexts=sizes.keep_contexts, top_k=sizes.top_k,
        clusters=sizes.clusters, contexts=sizes.contexts, iterations=sizes.iterations, samples=sizes.samples,
        queries_per_iteration=sizes.queries_per_iteration, holdout=sizes.holdout, select="argmax", best_of=10,
        mean_choice=False, keep_choice=False, mtv_iterations=600, mtv_samples=32, mtv_queries_per_iteration=1,
        mtv_holdout=50, mtv_best_of=10, methods=sizes.methods, limit=None,
    )  # fmt: skip


def planned(sizes: Sizes, n_support: int, n_eval: int) -> dict[str, Any]:
    """``stv plan``'s forward counts for ``sizes`` (stvcli.plan.forward_counts)."""
    from stvcli.plan import forward_counts

    return forward_counts(plan_settings(sizes), n_support, n_eval)


def planned_artifacts(adapter: Any, image_tokens: int, sizes: Sizes, n_support: int, n_eval: int) -> dict[str, int]:
    """The plan's artifact bytes per file name (``stvcli.plan.stage_artifacts``)."""
    from stvcli.plan import stage_artifacts

    counts = planned(sizes, n_support, n_eval)
    files = stage_artifacts(plan_geometry(adapter, image_tokens), plan_settings(sizes), counts, "W")
    return {Path(path).name: size for stage in files.values() for path, size in stage.items() if size is not None}


def tensor_bytes(path: Path) -> int:
    """Bytes of a safetensors file's tensors (the file less its 8-byte length and JSON header)."""
    with open(path, "rb") as handle:
        header = int.from_bytes(handle.read(8), "little")
    return path.stat().st_size - 8 - header


def artifact_bytes(workspace: Path) -> dict[str, int]:
    """Tensor bytes of every safetensors file in ``workspace`` (JSON metadata excluded)."""
    return {path.name: tensor_bytes(path) for path in sorted(workspace.glob("*.safetensors"))}


# ------------------------------------------------------------------------------ chain
def run_chain(bed: Bed, sizes: Sizes, workspace: Path, quiet: bool = True) -> dict[str, Any]:
    """scan -> bank -> search -> eval on ``bed`` at ``sizes``: per stage the stages' own
    records (forwards, seconds, model seconds), peak memory and the files written."""
    from stvcli.stages.bank import run_bank
    from stvcli.stages.config import BankConfig, EvalConfig, ScanConfig, SearchConfig
    from stvcli.stages.evaluate import run_eval
    from stvcli.stages.scan import run_scan
    from stvcli.stages.search import run_search

    out: dict[str, Any] = {}

    def stage(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        before = artifact_bytes(workspace) if workspace.exists() else {}
        started = time.perf_counter()
        with PeakMemory(bed.device) as peak:
            stats = fn()
        wall = time.perf_counter() - started
        files = {k: v for k, v in artifact_bytes(workspace).items() if before.get(k) != v}
        out[name] = {"forwards": int(stats.get("forwards", 0)), "seconds": float(stats.get("seconds", wall)),
                     "kmeans_seconds": stats.get("kmeans_seconds"),
                     "model_seconds": float(stats.get("model_seconds", 0.0)), "wall_seconds": wall,
                     "peak_mb": peak.mb, "artifacts": files}

    scan = ScanConfig(model=bed.model, data=bed.data, workspace=workspace, shots=sizes.shots, queries=sizes.queries,
                      keep_contexts=sizes.keep_contexts, top_k=sizes.top_k, quiet=quiet)
    stage("scan", lambda: run_scan(scan).stats)
    bank_config = BankConfig(workspace=workspace, clusters=sizes.clusters, contexts=sizes.contexts, quiet=quiet)
    stage("bank", lambda: run_bank(bank_config).stats)
    search = SearchConfig(workspace=workspace, iterations=sizes.iterations, samples=sizes.samples,
                          queries_per_iteration=sizes.queries_per_iteration, holdout=sizes.holdout, quiet=quiet)
    stage("search", lambda: run_search(search).stats)
    report: dict[str, Any] = {}

    def evaluate() -> dict[str, Any]:
        report.update(run_eval(EvalConfig(workspace=workspace, methods=list(sizes.methods), quiet=quiet,
                                          output_path=workspace / "eval")))
        per_method = report["stages"]["eval"]
        return {key: sum(float(m.get(key, 0)) for m in per_method.values()) for key in ("forwards", "model_seconds",
                                                                                           "seconds")}

    stage("eval", evaluate)
    out["eval"]["methods"] = report["stages"]["eval"]
    out["eval"]["accuracy"] = {m: r["accuracy"] for m, r in next(iter(report["results"].values())).items()}
    for stats in out.values():
        stats["model_share"] = stats["model_seconds"] / stats["seconds"] if stats["seconds"] else None
    return out


def kmeans_seconds(n_contexts: int, k: int, clusters: int, head_dim: int, gpu: bool | None = None,
                   seed: int = 0) -> float:
    """Seconds of the bank's per-location k-means (``cluster_locations``) on random
    activations [n_contexts, k, head_dim]."""
    from stvcli.stages.bank import cluster_locations

    activations = torch.randn(n_contexts, k, head_dim, generator=torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    cluster_locations(activations, clusters, seed, gpu=gpu)
    return time.perf_counter() - start


def extrapolate(measured: dict[str, Any], sizes: Sizes, paper: Sizes, plan_measured: dict[str, Any],
                plan_paper: dict[str, Any], kmeans_paper_s: float) -> dict[str, Any]:
    """Each stage's seconds at the paper's counts: the measured seconds per forward times
    the plan's forwards at the paper's settings (model and non-model time alike); the
    bank's k-means replaced by its paper-size timing."""
    out: dict[str, Any] = {}
    for name in ("scan", "bank", "search", "eval"):
        m = measured[name]
        key = name
        forwards_paper = int(plan_paper[key]["forwards"])
        forwards = max(1, m["forwards"])
        if name == "bank":
            kmeans_measured = float(m.get("kmeans_seconds") or 0.0)
            model_paper = m["model_seconds"] / forwards * forwards_paper
            seconds = model_paper + kmeans_paper_s
            share = model_paper / seconds if seconds else None
            factor = forwards_paper / forwards
            out[name] = {"forwards": forwards_paper, "seconds": seconds, "model_share": share, "factor": factor,
                         "kmeans_seconds": kmeans_paper_s, "kmeans_measured_seconds": kmeans_measured}
            continue
        factor = forwards_paper / forwards
        out[name] = {"forwards": forwards_paper, "seconds": m["seconds"] * factor,
                     "model_share": m["model_share"], "factor": factor}
    return out


def chain_section(bed: Bed, sizes: Sizes, paper: Sizes, quiet: bool = True) -> dict[str, Any]:
    workspace = bed.root / "chain"
    measured = run_chain(bed, sizes, workspace, quiet)
    n_support, n_eval = sizes.support, sizes.eval_items
    plan_measured = planned(sizes, n_support, n_eval)
    plan_paper = planned(paper, paper.support, paper.eval_items)
    for name in ("scan", "bank", "search", "eval"):
        measured[name]["plan_forwards"] = int(plan_measured[name]["forwards"])
        measured[name]["plan_matches"] = measured[name]["plan_forwards"] == measured[name]["forwards"]
    g = bed.geometry
    kmeans_paper = kmeans_seconds(paper.contexts, paper.top_k, paper.clusters, bed.adapter.head_dim)
    return {
        "measured_sizes": asdict(sizes), "paper_sizes": asdict(paper), "stages": measured,
        "paper": extrapolate(measured, sizes, paper, plan_measured, plan_paper, kmeans_paper),
        "artifacts_measured": artifact_bytes(workspace),
        "artifacts_plan_measured": planned_artifacts(bed.adapter, g.image_tokens, sizes, n_support, n_eval),
        "artifacts_plan_paper": planned_artifacts(bed.adapter, g.image_tokens, paper, paper.support, paper.eval_items),
    }


# ------------------------------------------------------------------------------ curves
def _items(bed: Bed, n: int) -> list[Any]:
    from stvcli.data.loading import load_task_data

    return load_task_data(bed.data).support[:n]


def shots_section(bed: Bed, shots: Sequence[int], repeats: int) -> dict[str, Any]:
    """One many-shot forward (batch 1, all heads captured: the scan's) per shot count."""
    from stvcli.data.tasks import get_task
    from stvcli.stages.common import Meter
    from stvcli.stages.scan import capture_prompts

    task = get_task("vqa")
    pool = _items(bed, max(shots) + 1)
    rows = []
    prompts = {s: task.build_prompt(pool[0], pool[1 : 1 + s]) for s in shots}
    zero = task.build_prompt(pool[0])
    fns = {s: (lambda p=p: capture_prompts(bed.adapter, [p], Meter(), 1)) for s, p in prompts.items()}
    fns[0] = lambda: capture_prompts(bed.adapter, [zero], Meter(), 1)
    times = best_of(fns, repeats, sync=bed.device.startswith("cuda"))
    for s in [0, *shots]:
        prompt = zero if s == 0 else prompts[s]
        with PeakMemory(bed.device) as peak:
            fns[s]()
        tokens = int(bed.adapter.encode([prompt])["attention_mask"].sum())
        rows.append({"shots": s, "tokens": tokens, "seconds": times[s], "peak_mb": peak.mb})
    first = next(r for r in rows if r["shots"] == shots[0])
    for row in rows:
        row["x_seconds"] = row["seconds"] / first["seconds"]
        row["x_tokens"] = row["tokens"] / first["tokens"]
    return {"rows": rows, "repeats": repeats}


def search_step(bed: Bed, k: int, samples: int, queries: int, clusters: int = 32) -> Callable[[], Any]:
    """One search reward step: ``queries`` x ``samples`` candidates (a bank vector at each of
    ``k`` random locations), shared prefix (``scoring.shared_answer_scores``)."""
    from stvcli.data.tasks import get_task
    from stvcli.engine import Intervention
    from stvcli.scoring import shared_answer_scores

    adapter = bed.adapter
    task = get_task("vqa")
    generator = torch.Generator().manual_seed(k)
    order = torch.randperm(adapter.n_layers * adapter.n_heads, generator=generator)[:k]
    locations = torch.stack([order // adapter.n_heads, order % adapter.n_heads], 1)
    bank = torch.randn(k, clusters, adapter.head_dim, generator=generator)
    choices = torch.randint(clusters, (samples, k), generator=generator)
    candidates = Intervention(locations, bank[torch.arange(k)[None, :], choices], "replace")
    items = _items(bed, queries)
    prompts = [task.build_prompt(q) for q in items]
    answers = [task.target(q) for q in items]
    return lambda: shared_answer_scores(adapter, prompts, answers, candidates, samples)


def k_section(bed: Bed, ks: Sequence[int], sizes: Sizes, repeats: int) -> dict[str, Any]:
    steps = best_of({k: search_step(bed, k, sizes.samples, sizes.queries_per_iteration) for k in ks}, repeats,
                    sync=bed.device.startswith("cuda"))
    rows = []
    for k in ks:
        files = planned_artifacts(bed.adapter, bed.geometry.image_tokens, replace(sizes, top_k=k), sizes.support,
                                  sizes.eval_items)
        kmeans = min(kmeans_seconds(sizes.contexts, k, sizes.clusters, bed.adapter.head_dim) for _ in range(repeats))
        rows.append({"K": k, "search_step_seconds": steps[k], "kmeans_seconds": kmeans,
                     "bank_bytes": files["bank.safetensors"], "vectors_bytes": files["vectors.safetensors"],
                     "activations_bytes": files["activations.safetensors"]})
    return {"rows": rows, "samples": sizes.samples, "queries": sizes.queries_per_iteration,
            "contexts": sizes.contexts, "clusters": sizes.clusters}


def m_section(bed: Bed, ms: Sequence[int], sizes: Sizes, repeats: int) -> dict[str, Any]:
    rows = []
    for m in ms:
        files = planned_artifacts(bed.adapter, bed.geometry.image_tokens, replace(sizes, clusters=m), sizes.support,
                                  sizes.eval_items)
        kmeans = min(kmeans_seconds(sizes.contexts, sizes.top_k, m, bed.adapter.head_dim) for _ in range(repeats))
        rows.append({"M": m, "kmeans_seconds": kmeans, "bank_bytes": files["bank.safetensors"],
                     "vectors_bytes": files["vectors.safetensors"]})
    return {"rows": rows, "K": sizes.top_k, "contexts": sizes.contexts}


def queries_section(bed: Bed, counts: Sequence[int], shots: int, keep: int) -> dict[str, Any]:
    """Peak memory of the scan stage (run_scan, batch auto) over ``counts`` queries."""
    from stvcli.stages.config import ScanConfig
    from stvcli.stages.scan import run_scan

    rows = []
    for n in [counts[0], *counts]:  # the first run warms allocator and kernels up; not reported
        config = ScanConfig(model=bed.model, data=bed.data, workspace=bed.root / f"queries-{n}-{len(rows)}",
                            shots=shots, queries=n, keep_contexts=keep, quiet=True)
        with PeakMemory(bed.device) as peak:
            stats = run_scan(config).stats
        rows.append({"queries": n, "peak_mb": peak.mb, "forwards": stats["forwards"], "seconds": stats["seconds"]})
    return {"rows": rows[1:], "shots": shots, "keep_contexts": keep}


def eval_sharing_section(bed: Bed, n_items: int, k: int, repeats: int) -> dict[str, Any]:
    """Eval of three methods on the same prompts (the bare model and two K-location vector
    sets, as zero-shot, stv and mean-at-stv): one ``generate`` per method (the path
    before, forced with ``prefix.straightforward()``) against ``scoring.generate_each``
    (prompt prefix computed once). Same generations; seconds of one batch."""
    from stvcli.data.tasks import get_task
    from stvcli.engine import Intervention
    from stvcli.prefix import straightforward
    from stvcli.scoring import generate_each

    adapter = bed.adapter
    task = get_task("vqa")
    prompts = [task.build_prompt(q) for q in _items(bed, n_items)]
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(adapter.n_layers * adapter.n_heads, generator=generator)[:k]
    locations = torch.stack([order // adapter.n_heads, order % adapter.n_heads], 1)
    interventions = [None] + [Intervention(locations, torch.randn(k, adapter.head_dim, generator=generator))
                              for _ in range(2)]

    def shared() -> list[list[str]]:
        return generate_each(adapter, prompts, task.max_new_tokens, interventions, task.answer_final)

    def separate() -> list[list[str]]:
        with straightforward():
            return generate_each(adapter, prompts, task.max_new_tokens, interventions, task.answer_final)

    identical = shared() == separate()
    times = best_of({"separate": separate, "shared": shared}, repeats, sync=bed.device.startswith("cuda"))
    return {"items": n_items, "methods": 3, "K": k, "identical": identical, "max_new_tokens": task.max_new_tokens,
            "separate_seconds": times["separate"], "shared_seconds": times["shared"],
            "x": times["separate"] / times["shared"], "repeats": repeats}


# ------------------------------------------------------------------------------ report
def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Machine: {results['machine']}; geometry {results['geometry']}."]
    chain = results.get("chain")
    if chain:
        lines += ["", "| stage | forwards measured | plan (same settings) | seconds measured | model share | "
                  "peak MB | forwards at paper | seconds at paper (extrapolated) |", "|" + "---|" * 8]
        for name in ("scan", "bank", "search", "eval"):
            m, p = chain["stages"][name], chain["paper"][name]
            lines.append(f"| {name} | {m['forwards']} | {m['plan_forwards']} | {_f(m['seconds'])} | "
                         f"{_f(m['model_share'], 2)} | {_f(m['peak_mb'])} | {p['forwards']:,} | {_f(p['seconds'])} |")
        lines += ["", "| artifact | tensor bytes measured | plan (same settings) | plan at paper |",
                  "|---|---|---|---|"]
        for name, size in chain["artifacts_measured"].items():
            lines.append(f"| {name} | {size:,} | {_f(chain['artifacts_plan_measured'].get(name))} | "
                         f"{_f(chain['artifacts_plan_paper'].get(name))} |")
    sharing = results.get("eval_sharing")
    if sharing:
        lines += ["", f"Eval, {sharing['methods']} methods x {sharing['items']} items, one batch: one generate per "
                  f"method {_f(sharing['separate_seconds'])} s, shared prompt prefix {_f(sharing['shared_seconds'])} s "
                  f"= {sharing['x']:.2f}x (identical generations: {sharing['identical']})."]
    for key, title, columns in (
        ("shots", "shots", ["shots", "tokens", "seconds", "x_seconds", "x_tokens", "peak_mb"]),
        ("k", "K", ["K", "search_step_seconds", "kmeans_seconds", "bank_bytes", "vectors_bytes", "activations_bytes"]),
        ("m", "M", ["M", "kmeans_seconds", "bank_bytes", "vectors_bytes"]),
        ("queries", "queries", ["queries", "forwards", "seconds", "peak_mb"]),
    ):
        section = results.get(key)
        if not section:
            continue
        lines += ["", f"Growth in {title}:", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_f(row.get(c)) for c in columns) + " |" for row in section["rows"]]
    return "\n".join(lines)


def machine() -> str:
    import transformers
    from machine_info import cpu_name

    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), {gpu}; torch "
            f"{torch.__version__}, transformers {transformers.__version__}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from stvcli.testing.scale import SCALE_CPU, SCALE_TINY, geometry

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny geometry and counts (seconds)")
    parser.add_argument("--geometry", default=None, help="scale-cpu (default), scale-tiny")
    parser.add_argument("--sections", default="chain,shots,k,m,eval,queries")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    g = geometry(args.geometry) if args.geometry else (SCALE_TINY if args.quick else SCALE_CPU)
    sizes = QUICK if args.quick else MEASURED_CPU
    paper = replace(QUICK, queries=8, keep_contexts=8, contexts=10, iterations=4, eval_items=6) if args.quick else PAPER
    root = args.root or Path(tempfile.mkdtemp(prefix="stv-scale-"))
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    query_counts = (3, 6) if args.quick else (25, 50, 100)
    support = max(sizes.support, paper.shots + 1, max(query_counts) + 8)  # the queries curve scans 100 of them
    bed = make_bed(g, root, replace(sizes, support=support))
    results: dict[str, Any] = {"machine": machine(), "geometry": asdict(g), "quick": args.quick,
                               "command": " ".join(sys.argv)}

    def save() -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
        if args.markdown:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(markdown(results) + "\n")

    if "chain" in sections:
        results["chain"] = chain_section(bed, replace(sizes, support=support), paper)
        save()
    if "shots" in sections:
        shots = (2, 3, 4) if args.quick else (16, 32, 64)
        results["shots"] = shots_section(bed, shots, 1 if args.quick else args.repeats)
        save()
    if "k" in sections:
        ks = (2, 4, 6) if args.quick else (50, 150, 300)
        results["k"] = k_section(bed, ks, replace(paper, contexts=min(paper.contexts, 256)), args.repeats)
        save()
    if "m" in sections:
        ms = (2, 4) if args.quick else (8, 32)
        results["m"] = m_section(bed, ms, paper, args.repeats)
        save()
    if "eval" in sections:
        results["eval_sharing"] = eval_sharing_section(bed, 3 if args.quick else 8, 6 if args.quick else 300,
                                                       args.repeats)
        save()
    if "queries" in sections:
        results["queries"] = queries_section(bed, query_counts, 2 if args.quick else 4, 2 if args.quick else 25)
        save()
    print(markdown(results), flush=True)
    return results


if __name__ == "__main__":
    main()
