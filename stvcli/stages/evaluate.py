"""Stage 4, evaluation: every method on identical held-out items.

The methods are registered builders (``stvcli.stages.methods``): ``zero-shot``,
``icl:N`` (N real demonstrations), ``stv``, ``stv+icl:N``, ``mtv`` (built on first
use) and the ablations ``random-locations``, ``mean-at-stv`` and ``mean-all-heads``.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stvcli import distributed as dist
from stvcli.artifacts import KINDS, Artifact, check_fingerprint, load_artifact, versions, write_text_atomic
from stvcli.config import ModelOptions
from stvcli.console import progress, say
from stvcli.data.context import check_icl_fits
from stvcli.data.loading import load_task_data
from stvcli.data.options import DataOptions
from stvcli.data.sampling import demonstrations_for
from stvcli.data.tasks import TemplateTask
from stvcli.data.types import Item, TaskData
from stvcli.engine import Intervention
from stvcli.errors import StvError
from stvcli.metrics import paired_difference, summarize
from stvcli.models.base import ModelAdapter
from stvcli.stages.accuracy import generate_and_score, generate_and_score_each
from stvcli.stages.common import Meter, check_inputs, get_adapter
from stvcli.stages.config import EvalConfig
from stvcli.stages.methods import Method, MethodContext, build_intervention, parse_methods, workspace_methods
from stvcli.vectors import TaskVectors
from stvcli.workspace import Workspace, check_writable

__all__ = ["Method", "parse_methods", "run_eval", "markdown_table", "token_counter", "evaluate_methods"]


@dataclass
class MethodResult:
    method: str
    summary: dict[str, Any]  # accuracy, ci_low, ci_high, n
    samples: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


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
    return evaluate_methods(adapter, task_data, items, [(method, intervention)], config)[0]


def evaluate_methods(
    adapter: ModelAdapter,
    task_data: TaskData,
    items: list[Item],
    group: list[tuple[Method, Intervention | None]],
    config: EvalConfig,
) -> list[MethodResult]:
    """Methods that see the same prompts (the same number of shots), evaluated together:
    each batch is encoded once and its prompt prefix computed once for all of them
    (``scoring.generate_each``); the generations are those of one ``generate`` per method.
    Each method's meter counts its own generations and model time; the batch's other
    time (encoding, scoring) is split evenly among the methods."""
    task = task_data.task
    shots = group[0][0].shots
    assert all(method.shots == shots for method, _ in group)
    prompts = [task.build_prompt(item, demonstrations_for(task_data, item, shots, config.seed) if shots else ())
               for item in items]
    if shots:
        check_icl_fits(token_counter(adapter), task, task_data.support, shots, adapter.context_length,
                       config.seed, label=group[0][0].name)
    meters = [Meter() for _ in group]
    interventions = [intervention for _, intervention in group]
    started = time.perf_counter()
    with progress(config.quiet) as bar:
        job = bar.add_task(f"eval {', '.join(method.name for method, _ in group)}", total=len(prompts))
        advance = lambda n: bar.advance(job, n)  # noqa: E731
        if len(group) == 1:
            generated = [generate_and_score(adapter, task, items, prompts, interventions[0], meters[0],
                                            config.batch_size, advance)]
        else:
            generated = generate_and_score_each(adapter, task, items, prompts, interventions, meters,
                                                config.batch_size, advance)
    other = time.perf_counter() - started - sum(meter.model_seconds for meter in meters)
    results = []
    for (method, _), meter, done in zip(group, meters, generated, strict=True):
        samples = [{"id": item.uid, "method": method.name, "prediction": prediction, "generation": generation,
                    "target": list(item.answers) if len(item.answers) > 1 else item.answer, "score": score}
                   for item, generation, prediction, score in zip(items, done.generations, done.predictions,
                                                                  done.scores, strict=True)]
        stats = meter.summary()
        if len(group) > 1:  # the meters ran side by side: each method's own model time, the rest shared
            stats["seconds"] = round(meter.model_seconds + max(0.0, other) / len(group), 3)
        results.append(MethodResult(method.name, summarize(done.scores), samples, stats))
    return results


def resolve_inputs(config: EvalConfig) -> tuple[ModelOptions, DataOptions, Artifact | None]:
    """Model and data options from the workspace (or the vectors file), with overrides."""
    vectors_path = config.vectors
    if vectors_path is None and config.workspace is not None:
        candidate = Workspace(config.workspace).path("vectors")
        vectors_path = candidate if candidate.exists() else None
    settings: dict[str, Any] = {}
    artifact = None
    if vectors_path is not None:
        artifact = load_artifact(vectors_path, "vectors")
        settings = artifact.settings
    elif config.workspace is not None:
        settings = Workspace(config.workspace).load("scan").settings
    model = config.model or (ModelOptions(**settings["model"]) if "model" in settings else None)
    data = config.data or (DataOptions(**settings["data"]) if "data" in settings else None)
    if model is None or data is None:
        raise StvError("cannot tell which model and data to evaluate; pass --model and --data/--task")
    return model, data, artifact


def run_eval(config: EvalConfig) -> dict[str, Any]:
    """Evaluate every method, merge this run into results.json (and samples), return
    this run's results.

    Under torchrun each rank generates for its contiguous share of the items; the
    samples are gathered (item order) and rank 0 writes the results.
    """
    dist.init()
    methods = parse_methods(config.methods)
    if config.workspace is None and workspace_methods(methods):
        names = ", ".join(m.name for m in workspace_methods(methods))
        raise StvError(f"{names} need the workspace's artifacts; pass --workspace")
    output = Path(config.output_path or config.workspace or Path("results"))
    check_writable(output, "--output-path" if config.output_path or not config.workspace else "--workspace")
    if config.workspace is not None and workspace_methods(methods):
        Workspace(config.workspace).check_writable()
    previous = read_results(output / "results.json", fix="pass another --output-path")
    model_options, data_options, vectors_artifact = resolve_inputs(config)
    task_data = load_task_data(data_options)
    check_same_source(previous, task_data.task.name, model_options, data_options, output / "results.json")
    items = task_data.evaluation[: config.limit] if config.limit else task_data.evaluation
    if not items:
        raise StvError("no evaluation items; check --data and --limit")
    adapter = get_adapter(model_options)
    check_inputs(adapter, task_data.task, items, task_data.support, stage="eval",
                 reserve=task_data.task.max_new_tokens)
    vectors = None
    if vectors_artifact is not None:
        check_fingerprint(vectors_artifact, adapter.fingerprint())
        vectors = TaskVectors.from_artifact(vectors_artifact)
    workspace = None if config.workspace is None else Workspace(config.workspace, config.force, config.quiet)
    context = MethodContext(config, adapter, task_data, vectors, workspace)
    if isinstance(task_data.task, TemplateTask):
        task_data.task = replace(task_data.task, variant=config.metric_variant)
    task = task_data.task
    build_stats: dict[str, Any] = {}
    built = []
    for method in methods:  # every intervention first (MTV's search included): then methods share prompts
        intervention, stats = build_intervention(context, method)
        build_stats.update({f"{method.base}_{k}": v for k, v in stats.items() if k != "forwards"})
        built.append((method, intervention, stats))
    by_shots: dict[int, list[tuple[Method, Intervention | None]]] = {}
    for method, intervention, _ in built:
        by_shots.setdefault(method.shots, []).append((method, intervention))
    evaluated: dict[str, MethodResult] = {}
    for group in by_shots.values():
        for result in _evaluate_shared(adapter, task_data, items, group, config):
            evaluated[result.method] = result
    results: list[MethodResult] = []
    for method, _, stats in built:
        result = evaluated[method.name]
        result.summary.update(build_forwards=stats.get("forwards"), eval_forwards=result.stats.get("forwards"))
        results.append(result)
        say(f"eval: {method.name}: {result.summary['accuracy']:.3f} (n={result.summary['n']})", config.quiet)
    report = build_report(config, model_options, data_options, task.name, results, build_stats)
    report["paired"] = {task.name: paired_comparisons(results, config.seed)}
    if dist.is_main():
        write_results(output, merge_results(previous, report), results if config.log_samples else [], task.name)
    dist.barrier()
    return report


def read_results(path: Path, fix: str) -> dict[str, Any]:
    """An existing results.json ({} when there is none); a one-line error, naming ``fix``,
    when it cannot be read, so that nothing overwrites what it holds."""
    if not path.exists():
        return {}
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StvError(f"{path} is not a readable results file ({error}); move it away or {fix}") from None
    if not isinstance(report, dict) or not isinstance(report.get("results", {}), dict):
        raise StvError(f"{path} is not an stv results file; move it away or {fix}")
    return report


def check_same_source(previous: dict[str, Any], task_name: str, model: ModelOptions, data: DataOptions,
                      path: Path) -> None:
    """Refuse to mix a task's results from two models or data sets in one results.json."""
    if task_name not in previous.get("results", {}):
        return
    before = previous.get("sources", {}).get(task_name) or previous.get("config", {})
    for key, now in (("model", model.model), ("data", data.data)):
        then = (before.get(key) or {}).get(key)
        if then is not None and then != now:
            raise StvError(f"{path} holds {task_name} results for {key} {then}, not {now}; "
                           "pass another --output-path")


def merge_results(previous: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with every task and method of ``previous`` it does not redo: a rerun
    of some methods never drops the others' results."""
    merged = dict(report)
    for key in ("results", "paired", "sources"):
        combined = {task: dict(values) for task, values in previous.get(key, {}).items()}
        for task, values in report.get(key, {}).items():
            combined.setdefault(task, {}).update(values)
        merged[key] = combined
    merged["stages"] = {**previous.get("stages", {}), **report.get("stages", {})}
    return merged


def _evaluate_shared(adapter, task_data, items, group, config) -> list[MethodResult]:
    """``evaluate_methods`` over every item; under torchrun each rank runs its contiguous
    share and every rank gets the merged results (samples in item order)."""
    if not dist.active():
        return evaluate_methods(adapter, task_data, items, group, config)
    mine = dist.shard(items)
    part = evaluate_methods(adapter, task_data, mine, group, config) if mine else None
    parts = [p for p in dist.all_gather_object(part) if p is not None]
    merged = []
    for index, (method, _) in enumerate(group):
        samples = [sample for p in parts for sample in p[index].samples]
        merged.append(MethodResult(method.name, summarize([s["score"] for s in samples]), samples,
                                   dist.merge_stats([p[index].stats for p in parts])))
    return merged


def paired_comparisons(results: list[MethodResult], seed: int = 0) -> dict[str, Any]:
    """STV against every other method on the same items: the paired difference of the
    scores with its 95% interval and p-value (``metrics.paired_difference``), and both
    methods' build forwards. Empty when ``stv`` was not evaluated."""
    by_name = {r.method: r for r in results}
    if "stv" not in by_name:
        return {}
    stv = by_name["stv"]
    stv_scores = [sample["score"] for sample in stv.samples]
    comparisons = {}
    for other in results:
        if other.method == "stv":
            continue
        comparison = paired_difference(stv_scores, [sample["score"] for sample in other.samples], seed=seed)
        budgets = (stv.summary.get("build_forwards"), other.summary.get("build_forwards"))
        comparison.update(build_forwards={"stv": budgets[0], other.method: budgets[1]},
                          equal_budget=budgets[0] == budgets[1])
        comparisons[f"stv - {other.method}"] = comparison
    return comparisons


def stage_stats(workspace: Path | None) -> dict[str, Any]:
    """Forward passes, seconds and peak memory recorded by each upstream stage."""
    if workspace is None:
        return {}
    stats = {}
    for kind in ("scan", "bank", "vectors", "mtv"):
        path = Workspace(workspace).path(kind)
        if path.exists():
            stats[KINDS[kind].stage] = load_artifact(path, kind).meta.get("extra", {}).get("stats", {})
    return stats


def build_report(config, model_options, data_options, task_name, results, build_stats) -> dict[str, Any]:
    return {
        "results": {task_name: {r.method: r.summary for r in results}},
        "sources": {task_name: {"model": model_options.model_dump(), "data": data_options.model_dump()}},
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
    path = directory / "results.json"
    write_text_atomic(path, json.dumps(report, indent=2, default=str))
    if results:
        samples_path = directory / f"samples_{task_name}.jsonl"
        redone = {r.method for r in results}
        kept = [line for line in _lines(samples_path) if json.loads(line).get("method") not in redone]
        lines = kept + [json.dumps(sample) for r in results for sample in r.samples]
        write_text_atomic(samples_path, "\n".join(lines) + "\n")
    return path


def _lines(path: Path) -> list[str]:
    """The JSON lines of an earlier samples file (unreadable lines are dropped)."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            if isinstance(json.loads(line), dict):
                lines.append(line)
        except json.JSONDecodeError:
            continue
    return lines


def markdown_table(report: dict[str, Any]) -> str:
    """The results table (accuracy, 95% interval, n, forwards to build and to evaluate),
    then STV against MTV and against the best ICL, paired, when those were evaluated."""
    rows = ["| task | method | accuracy | 95% CI | n | build forwards | eval forwards |",
            "|---|---|---|---|---|---|---|"]
    for task_name, methods in report["results"].items():
        for method, s in methods.items():
            rows.append(f"| {task_name} | {method} | {100 * s['accuracy']:.1f} | "
                        f"[{100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}] | {s['n']} | "
                        f"{_count(s.get('build_forwards'))} | {_count(s.get('eval_forwards'))} |")
    lines = [line for task_name, methods in report["results"].items()
             for line in _headline(methods, report.get("paired", {}).get(task_name, {}))]
    return "\n".join(rows + ([""] + lines if lines else []))


def _headline(methods: dict[str, Any], paired: dict[str, Any]) -> list[str]:
    """"STV - MTV: +3.3 points [-1.7, 8.3], p = 0.38 (McNemar, n = 60)" lines."""
    icl = [name for name in methods if name.startswith("icl:")]
    best_icl = max(icl, key=lambda name: methods[name]["accuracy"]) if icl else None
    lines = []
    for other in ("mtv", best_icl):
        comparison = paired.get(f"stv - {other}") if other else None
        if comparison is None:
            continue
        test = "McNemar" if comparison["test"] == "mcnemar-exact" else "paired bootstrap"
        label = f"best ICL ({other})" if other == best_icl else other.upper()
        line = (f"STV - {label}: {100 * comparison['difference']:+.1f} points "
                f"[{100 * comparison['ci_low']:+.1f}, {100 * comparison['ci_high']:+.1f}], "
                f"p = {comparison['p_value']:.3g} ({test}, n = {comparison['n']})")
        budgets = comparison.get("build_forwards", {})
        if not comparison.get("equal_budget") and None not in budgets.values():
            line += " at unequal budgets: " + ", ".join(f"{k} {v:,} build forwards" for k, v in budgets.items())
        lines.append(line)
    return lines


def _count(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def _git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
