"""Stage 4, evaluation: every method on identical held-out items.

Methods: ``zero-shot``; ``icl:N`` (N real demonstrations); ``stv`` (the searched
vectors in a zero-shot prompt); ``stv+icl:N``; ``mtv`` (built on first use);
ablations ``random-locations`` (the many-shot mean at K random heads),
``mean-at-stv`` (the bank's cluster-weighted mean at STV's locations instead of the
RL choice) and ``mean-all-heads`` (the many-shot mean at every head).
"""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from stvcli import distributed as dist
from stvcli.artifacts import compare_fingerprints, load_artifact, versions
from stvcli.config import ModelOptions
from stvcli.data.context import check_icl_fits
from stvcli.data.loading import load_task_data
from stvcli.data.options import DataOptions
from stvcli.data.types import Item, TaskData
from stvcli.engine import Intervention, all_locations
from stvcli.errors import StvError
from stvcli.metrics import summarize
from stvcli.models.base import ModelAdapter
from stvcli.scoring import generate
from stvcli.stages.common import Meter, artifact_path, get_adapter, progress, run_batched, say
from stvcli.stages.config import EvalConfig
from stvcli.vectors import TaskVectors, make_intervention

WORKSPACE_METHODS = {"mtv", "random-locations", "mean-at-stv", "mean-all-heads"}
KNOWN = {"zero-shot", "stv", *WORKSPACE_METHODS}


@dataclass(frozen=True)
class Method:
    name: str  # as written by the user, e.g. "stv+icl:4"
    base: str  # zero-shot | stv | mtv | random-locations | mean-at-stv | mean-all-heads
    shots: int = 0


def parse_methods(specs: list[str]) -> list[Method]:
    """``["zero-shot", "icl:4", "stv+icl:2"]`` -> methods; a clear error for unknown names."""
    methods = []
    for raw in specs:
        spec = raw.strip()
        base, _, icl = spec.partition("+")
        shots = 0
        if base.startswith("icl:"):
            base, icl = "zero-shot", base
        if icl:
            if not icl.startswith("icl:") or not icl[4:].isdigit() or int(icl[4:]) < 1:
                raise StvError(f"unknown method {spec!r}: write icl:N with N >= 1, e.g. icl:4 or stv+icl:4")
            shots = int(icl[4:])
        if base not in KNOWN:
            raise StvError(f"unknown method {spec!r}; choose from zero-shot, icl:N, stv, stv+icl:N, "
                           f"{', '.join(sorted(WORKSPACE_METHODS))}")
        methods.append(Method(spec, base, shots))
    if len({m.name for m in methods}) != len(methods):
        raise StvError("a method is listed twice in --methods")
    return methods


@dataclass
class MethodResult:
    method: str
    summary: dict[str, Any]  # accuracy, ci_low, ci_high, n
    samples: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def demonstrations_for(task_data: TaskData, item: Item, shots: int, seed: int) -> list[Item]:
    """The same N demonstrations for an item in every method that uses N shots."""
    rng = random.Random(f"{seed}:{item.uid}:{shots}")
    return task_data.task.sample_demonstrations(task_data.support, shots, rng, exclude=item)


def token_counter(adapter: ModelAdapter):
    """Prompt -> its token count under this model (image tokens included)."""
    return lambda prompt: int(adapter.encode([prompt])["attention_mask"].sum())


def evaluate_method(
    adapter: ModelAdapter,
    task_data: TaskData,
    items: list[Item],
    method: Method,
    intervention: Intervention | None,
    config: EvalConfig,
) -> MethodResult:
    task = task_data.task
    prompts = [task.build_prompt(item, demonstrations_for(task_data, item, method.shots, config.seed)
                                 if method.shots else ()) for item in items]
    if method.shots:
        check_icl_fits(token_counter(adapter), task, task_data.support, method.shots, adapter.context_length,
                       config.seed, label=method.name)
    meter = Meter()

    def run(chunk):
        with meter.forward(len(chunk)):
            return generate(adapter, chunk, task.max_new_tokens, intervention)

    with progress(config.quiet) as bar:
        job = bar.add_task(f"eval {method.name}", total=len(prompts))
        generations = run_batched(run, prompts, config.batch_size, lambda n: bar.advance(job, n))
    samples, scores = [], []
    for item, generation in zip(items, generations, strict=True):
        prediction = task.extract(generation)
        score = float(task.score(prediction, item))
        scores.append(score)
        samples.append({"id": item.uid, "method": method.name, "prediction": prediction, "generation": generation,
                        "target": list(item.answers) if len(item.answers) > 1 else item.answer, "score": score})
    return MethodResult(method.name, summarize(scores), samples, meter.summary())


class Interventions:
    """Builds each method's intervention from the workspace artifacts, loading each once."""

    def __init__(self, config: EvalConfig, adapter: ModelAdapter, task_data: TaskData, vectors: TaskVectors | None):
        self.config, self.adapter, self.task_data, self.vectors = config, adapter, task_data, vectors
        self.fingerprint = adapter.fingerprint()

    def mode(self) -> str:
        return self.config.insert or (self.vectors.mode if self.vectors else "replace")

    def _workspace(self) -> Path:
        if self.config.workspace is None:
            raise StvError("this method needs the workspace's artifacts; pass --workspace")
        return self.config.workspace

    def for_method(self, method: Method) -> tuple[Intervention | None, dict[str, Any]]:
        if method.base == "zero-shot":
            return None, {}
        if method.base == "stv":
            if self.vectors is None:
                raise StvError("stv needs vectors: run `stv search` first or pass --vectors")
            return self.vectors.intervention(self.mode()), {}  # type: ignore[arg-type]
        workspace = self._workspace()
        if method.base == "mtv":
            from stvcli.stages.mtv import mtv_intervention, run_mtv

            mtv_config = self.config.mtv.model_copy(update={"insert": self.mode()})
            result = run_mtv(workspace, self.adapter, self.task_data, mtv_config, self.config.batch_size,
                             self.config.quiet, self.config.force)
            artifact = load_artifact(artifact_path(workspace, "mtv"), "mtv", fingerprint=self.fingerprint)
            return mtv_intervention(artifact, self.mode()), {"search": result.stats}
        scan = load_artifact(artifact_path(workspace, "scan"), "scan", fingerprint=self.fingerprint)
        many, zero = scan["many_mean"], scan["zero_mean"]
        if method.base == "mean-all-heads":
            locations = all_locations(*many.shape[:2])
        elif method.base == "random-locations":
            k = len(scan["locations"])
            generator = torch.Generator().manual_seed(self.config.seed)
            order = torch.randperm(many.shape[0] * many.shape[1], generator=generator)[:k]
            locations = torch.stack([order // many.shape[1], order % many.shape[1]], 1)
        else:  # mean-at-stv
            bank = load_artifact(artifact_path(workspace, "bank"), "bank", fingerprint=self.fingerprint)
            weights = bank["counts"].float().unsqueeze(-1)  # [K, M, 1]
            means = (bank["bank"] * weights).sum(1) / weights.sum(1)
            return make_intervention(bank["locations"], means, bank["baseline"], self.mode()), {}  # type: ignore
        vectors = many[locations[:, 0], locations[:, 1]]
        baseline = zero[locations[:, 0], locations[:, 1]]
        return make_intervention(locations, vectors, baseline, self.mode()), {}  # type: ignore[arg-type]


def resolve_inputs(config: EvalConfig) -> tuple[ModelOptions, DataOptions, TaskVectors | None]:
    """Model and data options from the workspace (or the vectors file), with overrides."""
    vectors_path = config.vectors
    if vectors_path is None and config.workspace is not None:
        candidate = artifact_path(config.workspace, "vectors")
        vectors_path = candidate if candidate.exists() else None
    settings: dict[str, Any] = {}
    vectors = None
    if vectors_path is not None:
        artifact = load_artifact(vectors_path, "vectors")
        vectors = TaskVectors.from_artifact(artifact)
        settings = artifact.settings
    elif config.workspace is not None:
        settings = load_artifact(artifact_path(config.workspace, "scan"), "scan").settings
    model = config.model or (ModelOptions(**settings["model"]) if "model" in settings else None)
    data = config.data or (DataOptions(**settings["data"]) if "data" in settings else None)
    if model is None or data is None:
        raise StvError("cannot tell which model and data to evaluate; pass --model and --data/--task")
    return model, data, vectors


def run_eval(config: EvalConfig) -> dict[str, Any]:
    """Evaluate every method, write results.json (and samples), return the results dict.

    Under torchrun each rank generates for its contiguous share of the items; the
    samples are gathered (item order) and rank 0 writes the results.
    """
    dist.init()
    methods = parse_methods(config.methods)
    if config.workspace is None and any(m.base in WORKSPACE_METHODS for m in methods):
        names = ", ".join(m.name for m in methods if m.base in WORKSPACE_METHODS)
        raise StvError(f"{names} need the workspace's artifacts; pass --workspace")
    model_options, data_options, vectors = resolve_inputs(config)
    task_data = load_task_data(data_options)
    items = task_data.evaluation[: config.limit] if config.limit else task_data.evaluation
    if not items:
        raise StvError("no evaluation items; check --data and --limit")
    adapter = get_adapter(model_options)
    if vectors is not None:
        compare_fingerprints(vectors.fingerprint, adapter.fingerprint(), "the vectors file", vectors.model)
    builder = Interventions(config, adapter, task_data, vectors)
    if hasattr(task_data.task, "variant"):
        task_data.task = dataclasses.replace(task_data.task, variant=config.metric_variant)  # type: ignore
    task = task_data.task
    results: list[MethodResult] = []
    build_stats: dict[str, Any] = {}
    for method in methods:
        intervention, stats = builder.for_method(method)
        build_stats.update({f"{method.base}_{k}": v for k, v in stats.items()})
        results.append(_evaluate_shared(adapter, task_data, items, method, intervention, config))
        say(f"eval: {method.name}: {results[-1].summary['accuracy']:.3f} (n={results[-1].summary['n']})",
            config.quiet)
    report = build_report(config, model_options, data_options, task.name, results, build_stats)
    output = config.output_path or config.workspace or Path("results")
    if dist.is_main():
        write_results(Path(output), report, results if config.log_samples else [], task.name)
    dist.barrier()
    return report


def _evaluate_shared(adapter, task_data, items, method, intervention, config) -> MethodResult:
    """``evaluate_method`` over every item; under torchrun each rank runs its contiguous
    share and every rank gets the merged result (samples in item order)."""
    if not dist.active():
        return evaluate_method(adapter, task_data, items, method, intervention, config)
    mine = dist.shard(items)
    part = evaluate_method(adapter, task_data, mine, method, intervention, config) if mine else None
    parts = [p for p in dist.all_gather_object(part) if p is not None]
    samples = [sample for p in parts for sample in p.samples]
    return MethodResult(method.name, summarize([s["score"] for s in samples]), samples,
                        dist.merge_stats([p.stats for p in parts]))


def stage_stats(workspace: Path | None) -> dict[str, Any]:
    """Forward passes, seconds and peak memory recorded by each upstream stage."""
    if workspace is None:
        return {}
    stats = {}
    for stage, kind in (("scan", "scan"), ("bank", "bank"), ("search", "vectors"), ("mtv", "mtv")):
        path = artifact_path(workspace, kind)
        if path.exists():
            stats[stage] = load_artifact(path, kind).meta.get("extra", {}).get("stats", {})
    return stats


def build_report(config, model_options, data_options, task_name, results, build_stats) -> dict[str, Any]:
    return {
        "results": {task_name: {r.method: r.summary for r in results}},
        "config": {
            "model": model_options.model_dump(),
            "data": data_options.model_dump(),
            "methods": config.methods,
            "limit": config.limit,
            "seed": config.seed,
            "insert": config.insert,
            "metric_variant": config.metric_variant,
            "workspace": str(config.workspace) if config.workspace else None,
            "vectors": str(config.vectors) if config.vectors else None,
        },
        "stages": {**stage_stats(config.workspace), "eval": {r.method: r.stats for r in results}, **build_stats},
        "versions": versions(),
        "git_hash": _git_hash(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_results(directory: Path, report: dict[str, Any], results: list[MethodResult], task_name: str) -> Path:
    """results.json (and samples_<task>.jsonl when samples are given), written atomically."""
    from stvcli.stages.common import write_text_atomic

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "results.json"
    write_text_atomic(path, json.dumps(report, indent=2, default=str))
    if results:
        lines = [json.dumps(sample) for r in results for sample in r.samples]
        write_text_atomic(directory / f"samples_{task_name}.jsonl", "\n".join(lines) + "\n")
    return path


def markdown_table(report: dict[str, Any]) -> str:
    rows = ["| task | method | accuracy | 95% CI | n |", "|---|---|---|---|---|"]
    for task_name, methods in report["results"].items():
        for method, s in methods.items():
            rows.append(f"| {task_name} | {method} | {100 * s['accuracy']:.1f} | "
                        f"[{100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}] | {s['n']} |")
    return "\n".join(rows)


def _git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
