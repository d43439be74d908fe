"""stv speed benchmark: every stage against its straightforward version, as ratios inside one run.

    .venv/bin/python benchmarks/run.py [--quick] [--threads N] [--json out.json] [--markdown out.md]

Machines are noisy (a shared 2-core box can slow down 20x for a while), so every number
that matters is a RATIO of two timings taken in the same run, each the minimum over a
few repeats, and the two variants alternate within a repeat.

Models: the tiny random LLaVA (stvcli.testing.tiny, 2 layers x 4 heads) and the shapes
model (LLaVA on SmolLM2-135M, 30 x 9 heads) when it is in the stv cache, else the
SmolLM2 text backbone when that is, else the tiny model only. Nothing is built or
downloaded. Sections:

  search   candidates/s of the search's reward: optimised (shared-prefix KV cache, all
           S candidates in one batched step) vs straightforward (a full forward per
           candidate at batch 1, how MTV's code works) and vs full forwards batched 8.
  location STV's scan at the paper's defaults (Nq = 100: 200 forwards, 16 shots) vs MTV's
           REINFORCE location search (600 iterations x 32 samples + best of 10 on 50
           items), both measured on a few queries/iterations and extrapolated linearly;
           also in forwards and in zero-shot-forward equivalents.
  scan     per-query time of the many-shot passes at 16 shots: one full forward per
           query (batch 1), full forwards batched, and G queries sharing one sampled
           demonstration prefix (group size G).
  overhead capture (all heads) and insertion (25% of heads) vs a plain forward
           (benchmarks/overhead.py's measure()).
  memory   peak resident memory of scan + bank (streamed) against the number of queries,
           shots, K and T, next to holding every activation (the previous scan), on a
           random model with an 8B model's head count per layer.
  stages   share of each stage's wall time spent in model forwards (Meter records).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # overhead.py, peak_memory.py
sys.path.insert(0, str(HERE.parent))  # stvcli from a checkout

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from peak_memory import peak_delta_mb  # noqa: E402
from stvcli.data.tasks import get_task  # noqa: E402
from stvcli.data.types import Item, Task  # noqa: E402
from stvcli.engine import Intervention, all_locations  # noqa: E402
from stvcli.models.base import ModelAdapter  # noqa: E402
from stvcli.prefix import can_share_prefix, straightforward  # noqa: E402
from stvcli.scoring import answer_scores  # noqa: E402
from stvcli.stages.common import Meter  # noqa: E402
from stvcli.stages.reinforce import candidate_rewards  # noqa: E402
from stvcli.stages.scan import (  # noqa: E402
    DEFAULT_TOP_FRAC,
    capture_grouped,
    capture_prompts,
    many_shot_prompts,
    scan_pass,
    sensitivity_scores,
    top_locations,
)

PAPER = {"scan_queries": 100, "mtv_iterations": 600, "mtv_samples": 32, "mtv_best_of": 10, "mtv_holdout": 50,
         "search_samples": 32, "clusters": 32, "shots": 16}


# --------------------------------------------------------------------- helpers
def best_of(fn: Callable[[], Any], repeats: int, warm_up: bool = True) -> float:
    """Minimum wall seconds of ``fn`` over ``repeats`` runs (after one warm-up run)."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def alternate(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Minimum seconds of each variant, the variants interleaved within every repeat."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def say(text: str = "") -> None:
    print(text, flush=True)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Bed:
    """A model with a task and a support pool to draw queries and demonstrations from."""

    name: str
    adapter: ModelAdapter
    task: Task
    pool: list[Item]
    path: str | None = None  # the model's directory (None: the tiny model, saved when a stage needs it)

    @property
    def k(self) -> int:
        return max(1, round(DEFAULT_TOP_FRAC * self.adapter.n_layers * self.adapter.n_heads))


def tiny_bed() -> Bed:
    from stvcli.shapes.variants import vqa_items
    from stvcli.testing.tiny import tiny_adapter

    return Bed("tiny-llava (random, 2x4 heads)", tiny_adapter("llava"), get_task("vqa"), vqa_items("support", 400))


def real_bed() -> Bed | None:
    """The shapes model if it is built, else the SmolLM2 text backbone if converted, else None."""
    from stvcli.config import ModelOptions
    from stvcli.models.loading import load_model
    from stvcli.shapes.backbones import backbone_dir
    from stvcli.shapes.build import shapes_model_dir
    from stvcli.shapes.variants import vqa_items

    shapes = shapes_model_dir()
    if (shapes / "config.json").exists() and any(shapes.glob("*.safetensors")):
        adapter = load_model(ModelOptions(model=str(shapes), dtype="float32", device="cpu"))
        return Bed("shapes (LLaVA on SmolLM2-135M, 30x9 heads)", adapter, get_task("vqa"), vqa_items("support", 400),
                   str(shapes))
    backbone = backbone_dir("smollm2")
    if (backbone / "config.json").exists():
        adapter = load_model(ModelOptions(model=str(backbone), dtype="float32", device="cpu"))
        words = ("red green blue yellow purple orange circle square triangle cross top bottom left right one two "
                 "three four cat dog bird fish apple banana hot cold big small up down fast slow").split()
        pool = [Item(uid=f"w{i}", question=f"{words[i % 32]} {words[(i * 7) % 32]}", answers=(words[(i * 3) % 32],))
                for i in range(400)]
        return Bed("smollm2 (text, 30x9 heads)", adapter, get_task("text"), pool, str(backbone))
    return None


def random_choices(bed: Bed, samples: int, seed: int = 0) -> Intervention:
    """STV-style candidates: one of M bank vectors at each of K locations, per sample."""
    adapter = bed.adapter
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(adapter.n_layers * adapter.n_heads, generator=generator)[: bed.k]
    locations = torch.stack([order // adapter.n_heads, order % adapter.n_heads], 1)
    bank = torch.randn(bed.k, PAPER["clusters"], adapter.head_dim, generator=generator)
    choices = torch.randint(PAPER["clusters"], (samples, bed.k), generator=generator)
    return Intervention(locations, bank[torch.arange(bed.k)[None, :], choices], "replace")


def mtv_candidates(bed: Bed, samples: int, seed: int = 0) -> Intervention:
    """MTV-style candidates: the mean vector at every head, a Bernoulli head subset per sample."""
    adapter = bed.adapter
    generator = torch.Generator().manual_seed(seed)
    every = all_locations(adapter.n_layers, adapter.n_heads)
    means = torch.randn(len(every), adapter.head_dim, generator=generator)
    masks = torch.rand(samples, len(every), generator=generator) < 0.27  # sigmoid(-1)
    return Intervention(every, means, "replace", masks)


def one_by_one(bed: Bed, query: Item, candidates: Intervention, n: int) -> None:
    """The straightforward search: a full forward of the prompt per candidate, batch 1."""
    prompt, target = bed.task.build_prompt(query), bed.task.target(query)
    for s in range(n):
        answer_scores(bed.adapter, [prompt], [target], candidates.rows(slice(s, s + 1)))


# --------------------------------------------------------------------- sections
def search_section(bed: Bed, quick: bool) -> dict[str, Any]:
    samples = PAPER["search_samples"]
    query = bed.pool[0]
    n_single = 4 if quick else 8
    repeats = 2 if quick else 4
    out = {"shared_prefix": can_share_prefix(bed.adapter)}
    for kind, candidates in (("stv", random_choices(bed, samples)), ("mtv", mtv_candidates(bed, samples))):
        times = alternate({
            "optimised": lambda c=candidates: candidate_rewards(bed.adapter, bed.task, [query], c, samples,
                                                                "first-token", Meter(), None),
            "batched": lambda c=candidates: _straight(lambda: candidate_rewards(
                bed.adapter, bed.task, [query], c, samples, "first-token", Meter(), 8)),
            "batch1": lambda c=candidates: one_by_one(bed, query, c, n_single),
        }, repeats)
        rate = {"optimised": samples / times["optimised"], "batched": samples / times["batched"],
                "batch1": n_single / times["batch1"]}
        out[kind] = {"candidates_per_s": rate, "x_vs_batch1": rate["optimised"] / rate["batch1"],
                     "x_vs_batched": rate["optimised"] / rate["batched"]}
    return out


def _straight(fn: Callable[[], Any]) -> Any:
    with straightforward():
        return fn()


def location_section(bed: Bed, search: dict[str, Any], quick: bool) -> dict[str, Any]:
    """STV's scan at Nq = 100 vs MTV's REINFORCE location search, extrapolated linearly."""
    task, adapter = bed.task, bed.adapter
    n = 4 if quick else 12
    rng = random.Random(0)
    queries = rng.sample(bed.pool, n)
    zero = [task.build_prompt(q) for q in queries]
    many = many_shot_prompts(task, queries, bed.pool, PAPER["shots"], rng)
    repeats = 1 if quick else 2
    scan_seconds = best_of(lambda: scan_pass(adapter, zero, many, Meter(), None, keep=n), repeats, warm_up=False)
    scan_total = scan_seconds / n * PAPER["scan_queries"]
    group = 8  # the scan with --group-size 8 (queries sharing one demonstration sample)
    grouped_queries = random.Random(3).sample(bed.pool, group)
    grouped_many = many_shot_prompts(task, grouped_queries, bed.pool, PAPER["shots"], random.Random(3), group)
    grouped_seconds = best_of(lambda: scan_pass(adapter, [task.build_prompt(q) for q in grouped_queries],
                                                grouped_many, Meter(), None, keep=group, group_size=group),
                              repeats, warm_up=False)
    grouped_total = grouped_seconds / group * PAPER["scan_queries"]
    # one zero-shot forward at batch 1: the unit of "forward equivalents"
    unit = best_of(lambda: answer_scores(adapter, [zero[0]], [task.target(queries[0])]), 3 if quick else 6)
    per_candidate = {name: 1 / rate for name, rate in search["mtv"]["candidates_per_s"].items()}
    holdout = bed.pool[-5:]
    best = mtv_candidates(bed, PAPER["mtv_best_of"], seed=1)
    best_of_seconds = best_of(lambda: candidate_rewards(adapter, task, holdout, best, PAPER["mtv_best_of"],
                                                        "first-token", Meter(), None), repeats)
    rows_per_search = PAPER["mtv_iterations"] * PAPER["mtv_samples"]
    mtv_forwards = rows_per_search + PAPER["mtv_best_of"] * PAPER["mtv_holdout"]
    mtv_original = per_candidate["batch1"] * mtv_forwards
    mtv_optimised = (per_candidate["optimised"] * rows_per_search
                     + best_of_seconds * PAPER["mtv_holdout"] / len(holdout))
    return {
        "measured_scan_queries": n,
        "scan_seconds": scan_total,
        "scan_forwards": 2 * PAPER["scan_queries"],
        "mtv_forwards": mtv_forwards,
        "mtv_seconds_original": mtv_original,
        "mtv_seconds_optimised": mtv_optimised,
        "zero_shot_forward_seconds": unit,
        "scan_forward_equivalents": scan_total / unit,
        "mtv_forward_equivalents_original": mtv_original / unit,
        "mtv_forward_equivalents_optimised": mtv_optimised / unit,
        "scan_share_of_mtv_original": scan_total / mtv_original,
        "scan_share_of_mtv_optimised": scan_total / mtv_optimised,
        "scan_seconds_group8": grouped_total,
        "scan_group8_forward_equivalents": grouped_total / unit,
        "scan_group8_share_of_mtv_original": grouped_total / mtv_original,
        "scan_group8_share_of_mtv_optimised": grouped_total / mtv_optimised,
    }


def scan_section(bed: Bed, quick: bool) -> dict[str, Any]:
    task, adapter = bed.task, bed.adapter
    n = 8 if quick else 16
    groups = (8,) if quick else (4, 8, 16)
    queries = random.Random(1).sample(bed.pool, n)
    independent = many_shot_prompts(task, queries, bed.pool, PAPER["shots"], random.Random(2))
    variants = {
        "full_batch1": lambda: capture_prompts(adapter, independent, Meter(), 1),
        "full_batched": lambda: capture_prompts(adapter, independent, Meter(), None),
    }
    for g in groups:
        grouped = many_shot_prompts(task, queries, bed.pool, PAPER["shots"], random.Random(2), group_size=g)
        variants[f"group_{g}"] = lambda p=grouped, g=g: capture_grouped(adapter, p, Meter(), None, g)
    times = alternate(variants, 1 if quick else 2)
    per_query = {name: seconds / n for name, seconds in times.items()}
    tokens = int(adapter.encode(independent[:1])["attention_mask"].sum())
    return {
        "shots": PAPER["shots"],
        "prompt_tokens": tokens,
        "queries": n,
        "seconds_per_query": per_query,
        "x_vs_batch1": {name: per_query["full_batch1"] / s for name, s in per_query.items()},
        "x_vs_batched": {name: per_query["full_batched"] / s for name, s in per_query.items()},
    }


def overhead_section(bed: Bed, quick: bool) -> dict[str, Any]:
    import overhead  # benchmarks/overhead.py

    prompts = [bed.task.build_prompt(q) for q in bed.pool[:4]]
    return overhead.measure(bed.adapter, prompts, 5 if quick else 15)


def wide_heads_adapter() -> ModelAdapter:
    """Random Llama with an 8B model's heads per layer (32 of 128) on 16 layers and a narrow
    residual, so activation bookkeeping (L x H x D per query) is 8B-like while forwards stay cheap."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from stvcli.models.registry import adapter_for
    from stvcli.testing.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=2048,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    return adapter_for(LlamaForCausalLM(config).eval(), tokenizer, "wide-heads")


def memory_section(quick: bool) -> dict[str, Any]:
    from stvcli.stages.bank import cluster_locations

    adapter = wide_heads_adapter()
    task = get_task("text")
    words = "red green blue cat dog bird fish apple banana one two three hot cold big small".split()
    pool = [Item(uid=str(i), question=f"{words[i % 16]} {words[(i * 5) % 16]} {i}", answers=(words[(i * 3) % 16],))
            for i in range(400)]
    per_query_mb = adapter.n_layers * adapter.n_heads * adapter.head_dim * 4 / 2**20
    BATCH = 2  # small batches: the forward's own transient memory would hide the state otherwise

    def streamed(nq: int, shots: int, k: int, t: int) -> None:
        rng = random.Random(0)
        queries = rng.sample(pool, nq)
        zero = [task.build_prompt(q) for q in queries]
        many = many_shot_prompts(task, queries, pool, shots, rng)
        swept = scan_pass(adapter, zero, many, Meter(), BATCH, keep=t)
        locations = top_locations(swept.query_scores["l2"].mean(0), k)
        kept = swept.kept[:, locations[:, 0], locations[:, 1]].contiguous()
        del swept
        cluster_locations(kept, 8, 0, niter=5)

    def held(nq: int, shots: int, k: int, t: int) -> None:
        """The previous scan: every zero- and many-shot activation [N, L, H, D] held."""
        rng = random.Random(0)
        queries = rng.sample(pool, nq)
        zero = capture_prompts(adapter, [task.build_prompt(q) for q in queries], Meter(), BATCH)
        many = capture_prompts(adapter, many_shot_prompts(task, queries, pool, shots, rng), Meter(), BATCH)
        scores = sensitivity_scores(zero, many).mean(0)
        locations = top_locations(scores, k)
        kept = many[:t, locations[:, 0], locations[:, 1]].contiguous()
        cluster_locations(kept, 8, 0, niter=5)

    k_default = max(1, round(DEFAULT_TOP_FRAC * adapter.n_layers * adapter.n_heads))
    points = [("queries", nq, 4, k_default, 16) for nq in ((16, 64, 128) if quick else (16, 64, 128, 256))]
    points += [("shots", 16, s, k_default, 16) for s in ((4, 16) if quick else (4, 8, 16))]
    if not quick:
        points += [("K", 32, 4, k, 16) for k in (32, 150, 512)]
        points += [("T", 64, 4, k_default, t) for t in (16, 64)]
    for warm_up in (streamed, held):  # allocator, k-means and kernel first-use costs
        warm_up(16, 4, k_default, 16)
    repeats = 1 if quick else 2
    rows = []
    for axis, nq, shots, k, t in points:
        def measure(variant: Callable[..., None]) -> float | None:
            values = [peak_delta_mb(lambda: variant(nq, shots, k, t)) for _ in range(repeats)]
            return None if None in values else min(v for v in values if v is not None)

        row = {"axis": axis, "queries": nq, "shots": shots, "K": k, "T": t, "streamed_mb": measure(streamed)}
        if axis == "queries":
            row["held_mb"] = measure(held)
        row["held_state_mb"] = 2 * nq * per_query_mb  # what the previous scan kept in memory
        row["streamed_state_mb"] = (t + 2 * BATCH) * per_query_mb  # kept rows + one chunk
        rows.append(row)
    return {"model": f"random Llama, {adapter.n_layers} layers x {adapter.n_heads} heads x {adapter.head_dim}",
            "batch_size": BATCH,
            "per_query_activation_mb": per_query_mb, "points": rows}


# --------------------------------------------------------------------- stages
def stage_inputs(bed: Bed, root: Path) -> tuple[Any, Any]:
    """Model options (a directory the stages load) and a synthetic data set for ``bed``."""
    from stvcli.config import ModelOptions
    from stvcli.data.options import DataOptions
    from stvcli.data.synthetic import write_text_jsonl, write_vqa_jsonl
    from stvcli.testing.tiny import save_tiny_model

    if bed.path is None:
        model = ModelOptions(model=str(save_tiny_model("llava", root / "model")), dtype="float32", device="cpu")
    else:
        model = ModelOptions(model=bed.path, dtype="float32", device="cpu")
    if bed.task.kind == "text":
        pairs = [(item.question or "", item.answer) for item in bed.pool[:160]]
        return model, DataOptions(task="text", data=str(write_text_jsonl(root / "data", pairs)), seed=0, eval_limit=16)
    return model, DataOptions(task="vqa", data=str(write_vqa_jsonl(root / "data", n=160, seed=3)), seed=0,
                              eval_limit=16)


def stages_section(bed: Bed, quick: bool) -> dict[str, Any]:
    """Every stage run for real (the model loaded from disk, synthetic data): model-forward
    share of each stage's wall time, from the stages' own Meter records."""
    from stvcli.stages.bank import run_bank
    from stvcli.stages.config import BankConfig, EvalConfig, MTVConfig, ScanConfig, SearchConfig
    from stvcli.stages.evaluate import run_eval
    from stvcli.stages.scan import run_scan
    from stvcli.stages.search import run_search

    root = Path(tempfile.mkdtemp(prefix="stv-bench-"))
    model, data = stage_inputs(bed, root)
    shots = PAPER["shots"] if bed.task.kind != "text" else 8
    out: dict[str, Any] = {}
    for group in (1, 8):
        workspace = root / f"ws{group}"
        scan = run_scan(ScanConfig(model=model, data=data, workspace=workspace, shots=shots, queries=8 if quick else 32,
                                   keep_contexts=8, group_size=group, quiet=True))
        out[f"scan (group {group})"] = scan.stats
    workspace = root / "ws1"
    out["bank"] = run_bank(BankConfig(workspace=workspace, clusters=8, contexts=12, quiet=True)).stats
    out["search"] = run_search(SearchConfig(workspace=workspace, iterations=3 if quick else 20, samples=32,
                                            quiet=True)).stats
    report = run_eval(EvalConfig(workspace=workspace, methods=["zero-shot", "stv", "mtv"], limit=4 if quick else 16,
                                 quiet=True, output_path=root / "out",
                                 mtv=MTVConfig(iterations=3 if quick else 20, holdout=4, best_of=4)))
    out["mtv search"] = report["stages"].get("mtv_search", {})
    for method, stats in report["stages"]["eval"].items():
        out[f"eval {method}"] = stats
    for stats in out.values():
        if stats.get("seconds"):
            stats["model_share"] = stats["model_seconds"] / stats["seconds"]
    return out


# --------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    import transformers
    from machine_info import cpu_name

    cpu = cpu_name()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def markdown(results: dict[str, Any]) -> str:
    parts = [f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, torch threads "
             f"{results['machine']['torch_threads']}, GPU: {results['machine']['gpu'] or 'none'}; "
             f"torch {results['machine']['torch']}, transformers {results['machine']['transformers']}; "
             f"{results['machine']['date']}; mode: {'quick' if results['quick'] else 'full'}."]
    for bed in results["beds"]:
        name = bed["name"]
        s = bed["search"]
        parts.append(f"\n### {name}\n\nSearch reward throughput (candidates/s, S = 32, one query; shared prefix: "
                     f"{s['shared_prefix']}):\n")
        parts.append(table(
            ["candidates", "straightforward, batch 1", "full forwards, batch 8", "optimised", "x vs batch 1",
             "x vs batch 8"],
            [[kind, s[kind]["candidates_per_s"]["batch1"], s[kind]["candidates_per_s"]["batched"],
              s[kind]["candidates_per_s"]["optimised"], s[kind]["x_vs_batch1"], s[kind]["x_vs_batched"]]
             for kind in ("stv", "mtv")]))
        loc = bed["location"]
        parts.append(f"\nLocation search at the paper's defaults (scan measured on {loc['measured_scan_queries']} "
                     "queries, MTV on single iterations; both extrapolated linearly):\n")
        parts.append(table(
            ["", "forwards", "seconds", "zero-shot forward equivalents", "scan (group 1) / this"],
            [["STV scan (Nq = 100, 16 shots)", loc["scan_forwards"], loc["scan_seconds"],
              loc["scan_forward_equivalents"], 1.0],
             ["STV scan, group size 8", loc["scan_forwards"], loc["scan_seconds_group8"],
              loc["scan_group8_forward_equivalents"], loc["scan_seconds"] / loc["scan_seconds_group8"]],
             ["MTV search as its code runs (batch 1)", loc["mtv_forwards"], loc["mtv_seconds_original"],
              loc["mtv_forward_equivalents_original"], loc["scan_share_of_mtv_original"]],
             ["MTV search, optimised here", loc["mtv_forwards"], loc["mtv_seconds_optimised"],
              loc["mtv_forward_equivalents_optimised"], loc["scan_share_of_mtv_optimised"]]]))
        sc = bed["scan"]
        parts.append(f"\nMany-shot passes of the scan, {sc['shots']} shots (~{sc['prompt_tokens']} tokens), "
                     f"{sc['queries']} queries:\n")
        parts.append(table(["variant", "ms / query", "x vs batch 1", "x vs batched"],
                           [[name, 1e3 * sec, sc["x_vs_batch1"][name], sc["x_vs_batched"][name]]
                            for name, sec in sc["seconds_per_query"].items()]))
        st = bed.get("stages")
        if st:
            parts.append("\nShare of each stage's wall time in model forwards (the stages run for real, Meter "
                         "records; forwards = rows run):\n")
            parts.append(table(["stage", "forwards", "seconds", "model seconds", "model share"],
                               [[name, s.get("forwards", "-"), s.get("seconds", "-"), s.get("model_seconds", "-"),
                                 s.get("model_share", "-")] for name, s in st.items()]))
        ov = bed["overhead"]
        parts.append(f"\nHook overhead (batch 4, {ov['seq']} tokens, plain {ov['plain_ms']:.1f} ms): capture of all "
                     f"{ov['heads']} heads x{ov['capture_ratio_min']:.3f}, insertion at {ov['inserted']} heads "
                     f"x{ov['insert_ratio_min']:.3f} (min over repeats; medians x{ov['capture_ratio']:.3f} / "
                     f"x{ov['insert_ratio']:.3f}).")
    mem = results.get("memory")
    if mem:
        parts.append(f"\n### Peak memory of scan + bank ({mem['model']}; {mem['per_query_activation_mb']:.2f} MB of "
                     "activations per forward)\n")
        parts.append(table(
            ["varied", "queries", "shots", "K", "T", "peak MB, streamed", "peak MB, holding all",
             "state MB, streamed", "state MB, holding all"],
            [[p["axis"], p["queries"], p["shots"], p["K"], p["T"], p["streamed_mb"], p.get("held_mb", "-"),
              p["streamed_state_mb"], p["held_state_mb"]] for p in mem["points"]]))
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and points (about 3 minutes on 2 cores)")
    # One thread: on a shared 2-core box intra-op threads thrash (a forward was 12x slower at 2).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-real", action="store_true", help="skip the shapes / SmolLM2 model")
    parser.add_argument("--sections", default="search,location,scan,overhead,memory,stages")
    parser.add_argument("--json", help="write all numbers to this file")
    parser.add_argument("--markdown", help="write the tables to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    sections = set(args.sections.split(","))
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "beds": []}
    say(f"stv benchmark ({'quick' if args.quick else 'full'}), {results['machine']['cpu']}, "
        f"{args.threads} thread(s), GPU: {results['machine']['gpu'] or 'none (GPU section skipped)'}")
    beds = [tiny_bed()]
    if not args.no_real:
        real = real_bed()
        if real is None:
            say("no shapes model or SmolLM2 backbone in the stv cache: tiny model only")
        else:
            beds.append(real)
    for bed in beds:
        say(f"\n== {bed.name}: K = {bed.k} of {bed.adapter.n_layers * bed.adapter.n_heads} heads")
        row: dict[str, Any] = {"name": bed.name}
        if {"search", "location"} & sections:
            row["search"] = search_section(bed, args.quick)
            for kind in ("stv", "mtv"):
                r = row["search"][kind]
                say(f"search ({kind} candidates): optimised {r['candidates_per_s']['optimised']:.1f}/s, "
                    f"full batch 8 {r['candidates_per_s']['batched']:.1f}/s, batch 1 "
                    f"{r['candidates_per_s']['batch1']:.1f}/s -> x{r['x_vs_batch1']:.1f} vs batch 1 "
                    f"(target >= 10), x{r['x_vs_batched']:.1f} vs batch 8")
        if "location" in sections:
            loc = row["location"] = location_section(bed, row["search"], args.quick)
            say(f"location search: STV scan {loc['scan_seconds']:.1f} s ({loc['scan_forwards']} forwards, "
                f"{loc['scan_forward_equivalents']:.0f} zero-shot forward equivalents) vs MTV "
                f"{loc['mtv_seconds_original']:.0f} s as its code runs ({loc['mtv_forwards']} forwards, "
                f"{loc['mtv_forward_equivalents_original']:.0f} equivalents): "
                f"{100 * loc['scan_share_of_mtv_original']:.2f}% (target < 2%); vs MTV optimised here "
                f"{loc['mtv_seconds_optimised']:.0f} s: {100 * loc['scan_share_of_mtv_optimised']:.1f}%; "
                f"scan with group size 8: {loc['scan_seconds_group8']:.1f} s, "
                f"{100 * loc['scan_group8_share_of_mtv_original']:.2f}% / "
                f"{100 * loc['scan_group8_share_of_mtv_optimised']:.1f}%")
        if "scan" in sections:
            sc = row["scan"] = scan_section(bed, args.quick)
            say(f"scan many-shot passes ({sc['shots']} shots, ~{sc['prompt_tokens']} tokens): " + ", ".join(
                f"{name} {1e3 * s:.0f} ms/query (x{sc['x_vs_batch1'][name]:.1f} vs batch 1)"
                for name, s in sc["seconds_per_query"].items()) + " (target: group >= 3x)")
        if "overhead" in sections:
            ov = row["overhead"] = overhead_section(bed, args.quick)
            say(f"hooks: capture x{ov['capture_ratio_min']:.3f}, insert x{ov['insert_ratio_min']:.3f} of a plain "
                f"forward (min; medians x{ov['capture_ratio']:.3f} / x{ov['insert_ratio']:.3f}; target < 1.05)")
        if "stages" in sections:
            st = row["stages"] = stages_section(bed, args.quick)
            say("stages, share of wall time in model forwards: " + ", ".join(
                f"{name} {100 * s['model_share']:.0f}% of {s['seconds']:.2f} s" for name, s in st.items()
                if s.get("seconds")))
        results["beds"].append(row)
    if "memory" in sections:
        say("\n== memory of scan + bank")
        mem = results["memory"] = memory_section(args.quick)
        for p in mem["points"]:
            held = f", holding all {p['held_mb']:.1f} MB" if p.get("held_mb") is not None else ""
            streamed = "n/a" if p["streamed_mb"] is None else f"{p['streamed_mb']:.1f} MB"
            say(f"{p['axis']:>8}: Nq {p['queries']:>3} shots {p['shots']:>2} K {p['K']:>3} T {p['T']:>3}: peak "
                f"streamed {streamed}{held} (state {p['streamed_state_mb']:.1f} vs {p['held_state_mb']:.1f} MB)")
    results["seconds"] = time.perf_counter() - started
    say(f"\ndone in {results['seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    if args.markdown:
        Path(args.markdown).write_text(markdown(results))


if __name__ == "__main__":
    main()
