"""Stage 1, the sensitivity scan ("where").

For each of Nq support queries: a0 = last-token head activations of the zero-shot
prompt, a1 = those of a many-shot prompt (S demonstrations, then the query), both
[L, H, D]. score[l, h] = mean over queries of ||a1 - a0||_2 (``l2``), or of that
norm divided by ||a0|| (``relative``). Locations = the top-K heads, best first.
Cost: 2 * Nq forwards. The many-shot activations at the chosen heads are kept
(``activations.safetensors``) so the bank can reuse them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from stvcli import distributed as dist
from stvcli.console import progress, say
from stvcli.data.loading import load_task_data
from stvcli.data.types import Item, Task, TaskData
from stvcli.engine import capturing
from stvcli.errors import StvError
from stvcli.models.base import ModelAdapter
from stvcli.scoring import default_batch_size, model_kwargs
from stvcli.stages.common import AutoBatch, Meter, check_inputs, get_adapter, run_batched
from stvcli.stages.config import ScanConfig
from stvcli.workspace import Provenance, Shares, Workspace

# The paper's K = 300 on 32 x 32-head models, as a fraction of all heads.
DEFAULT_TOP_FRAC = 300 / 1024


@dataclass
class ScanResult:
    scores: torch.Tensor  # [L, H]
    locations: torch.Tensor  # [K, 2]
    reused: bool
    stats: dict[str, Any]


def resolve_top_k(config: ScanConfig, n_layers: int, n_heads: int) -> int:
    total = n_layers * n_heads
    if config.top_k is not None:
        if config.top_k > total:
            raise StvError(f"--top-k {config.top_k} exceeds the model's {total} heads; use at most {total}")
        return config.top_k
    frac = config.top_frac if config.top_frac is not None else DEFAULT_TOP_FRAC
    return max(1, min(total, round(frac * total)))


def sensitivity_scores(zero: torch.Tensor, many: torch.Tensor, mode: str = "l2") -> torch.Tensor:
    """Per-query sensitivity of every head.

    zero, many: [N, L, H, D] activations of the zero-shot and many-shot prompts.
    Returns [N, L, H]: ||many - zero|| (l2), ||many - zero|| / ||zero|| (relative), or
    ||many - zero|| over its layer's mean of that over heads (layer: every layer's
    heads compete among themselves, so no layer dominates by scale).
    """
    delta = torch.linalg.vector_norm(many - zero, dim=-1)
    if mode == "relative":
        return delta / torch.linalg.vector_norm(zero, dim=-1).clamp_min(1e-6)
    if mode == "layer":
        return delta / delta.mean(-1, keepdim=True).clamp_min(1e-6)
    if mode != "l2":
        raise ValueError(f"unknown sensitivity {mode!r}")
    return delta


SENSITIVITIES = ("l2", "relative", "layer")


def top_locations(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k highest-scoring (layer, head) pairs, best first: [k, 2] int64.

    Ties break toward the lower flat index (stable sort), so results are reproducible.
    """
    n_heads = scores.shape[1]
    order = torch.sort(scores.flatten(), descending=True, stable=True).indices[:k]
    return torch.stack([order // n_heads, order % n_heads], dim=1).long()


def many_shot_prompts(
    task: Task, queries: list[Item], pool: list[Item], shots: int, rng: random.Random, group_size: int = 1
):
    """One many-shot prompt per query: ``shots`` demonstrations sampled from ``pool``.

    ``group_size`` G > 1: each run of G consecutive queries shares one sample (drawn
    without any of the G), so its demonstration prefix can be encoded once
    (``scan_pass``). G = 1 is the paper's independent sampling (and the same draws as
    always for a given rng).
    """
    if group_size <= 1:
        return [task.build_prompt(q, task.sample_demonstrations(pool, shots, rng, exclude=q)) for q in queries]
    prompts = []
    for start in range(0, len(queries), group_size):
        group = queries[start : start + group_size]
        uids = {q.uid for q in group}
        demonstrations = task.sample_demonstrations([item for item in pool if item.uid not in uids], shots, rng)
        prompts += [task.build_prompt(q, demonstrations) for q in group]
    return prompts


def capture_prompts(adapter: ModelAdapter, prompts, meter: Meter, batch_size, locations=None, on_batch=None,
                    learned: AutoBatch | None = None):
    """Last-token activations of ``prompts``: [N, L, H, D] (or [N, K, D] at locations), on CPU.
    ``learned``: the auto batch size carried over from earlier calls (``run_batched``)."""

    def run(chunk):
        inputs = adapter.encode(chunk)
        with meter.forward(len(chunk)), capturing(adapter, locations) as capture, torch.inference_mode():
            adapter.model(**inputs, **model_kwargs(adapter.model, keep=1))
        return list(capture.result().cpu())

    return torch.stack(run_batched(run, prompts, batch_size, on_batch, learned=learned))


def capture_grouped(
    adapter: ModelAdapter, prompts, meter: Meter, batch_size, group_size: int, locations=None, on_batch=None,
    first_index: int = 0, learned: AutoBatch | None = None,
) -> torch.Tensor:
    """``capture_prompts`` for many-shot prompts sampled in groups (``many_shot_prompts``):
    each group's shared demonstration prefix runs once and its queries run over its KV
    cache (``stvcli.prefix.capture_shared``, exact). Groups are the runs of ``group_size``
    counted from ``first_index`` (the position of ``prompts[0]`` among all the queries).
    Falls back to full forwards for a group that cannot share (G = 1, a family without
    the capability, a tokenization that differs across the boundary)."""
    from stvcli.prefix import can_share_prefix, capture_shared, shared_text_prefix

    if group_size <= 1 or not can_share_prefix(adapter):
        return capture_prompts(adapter, prompts, meter, batch_size, locations, on_batch, learned)
    out = []
    start = 0
    while start < len(prompts):
        stop = min(len(prompts), start + group_size - (first_index + start) % group_size)
        group = list(prompts[start:stop])
        prefix = shared_text_prefix(group) if len(group) > 1 else None
        result = None
        if prefix is not None:
            result = capture_shared(adapter, group, prefix, locations, timer=meter.forward)
        if result is None:
            result = capture_prompts(adapter, group, meter, batch_size, locations, learned=learned)
        elif on_batch is not None:
            on_batch(len(group))
        out.append(result.cpu())
        start = stop
    return torch.cat(out)


@dataclass
class ScanPass:
    """What the scan keeps of its forwards (never all [N, L, H, D] activations)."""

    query_scores: dict[str, torch.Tensor]  # sensitivity -> [N, L, H] per-query scores
    zero_sum: torch.Tensor  # [L, H, D] sum of the zero-shot activations
    many_sum: torch.Tensor  # [L, H, D] sum of the many-shot activations
    kept: torch.Tensor  # [min(N, keep), L, H, D] many-shot rows of the first ``keep`` queries

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**{f"scores_{mode}": scores for mode, scores in self.query_scores.items()},
                "zero_sum": self.zero_sum, "many_sum": self.many_sum, "kept": self.kept}


def scan_pass(
    adapter: ModelAdapter, zero_prompts, many_prompts, meter: Meter, batch_size, keep: int,
    group_size: int = 1, on_batch=None, first_index: int = 0,
) -> ScanPass:
    """Zero- and many-shot forwards of every query, streamed: a chunk of queries at a time
    (the batch size, rounded to whole groups), folded into running sums and per-query
    scores under every sensitivity, so memory holds one chunk plus ``keep`` many-shot
    rows, whatever N is."""
    n = len(zero_prompts)
    shape = (adapter.n_layers, adapter.n_heads, adapter.head_dim)
    chunk = batch_size or default_batch_size()
    if group_size > 1:
        chunk = max(group_size, chunk // group_size * group_size)
    scores: dict[str, list[torch.Tensor]] = {mode: [] for mode in SENSITIVITIES}
    kept = []
    zero_sum, many_sum = torch.zeros(shape), torch.zeros(shape)
    zero_batch, many_batch = AutoBatch(), AutoBatch()  # what auto learns carries over chunks, per kind of prompt
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        zero = capture_prompts(adapter, zero_prompts[start:stop], meter, batch_size, on_batch=on_batch,
                               learned=zero_batch)
        many = capture_grouped(adapter, many_prompts[start:stop], meter, batch_size, group_size, on_batch=on_batch,
                               first_index=first_index + start, learned=many_batch)
        for mode in SENSITIVITIES:
            scores[mode].append(sensitivity_scores(zero, many, mode))
        zero_sum += zero.sum(0)
        many_sum += many.sum(0)
        if start < keep:
            kept.append(many[: keep - start].clone())
        del zero, many
    return ScanPass(
        {mode: torch.cat(parts) if parts else torch.zeros(0, *shape[:2]) for mode, parts in scores.items()},
        zero_sum,
        many_sum,
        torch.cat(kept) if kept else torch.zeros(0, *shape),
    )


def scan_settings(config: ScanConfig, shots: int, k: int) -> dict[str, Any]:
    """The scan's settings with the shots and K it resolved; ``group_size`` only when it
    changes the draws, so artifacts of the default stay reusable."""
    settings = {**config.settings(), "task": config.data.task, "shots": shots, "top_k": k}
    settings.pop("top_frac")
    if config.group_size == 1:
        settings.pop("group_size")
    return settings


def run_scan(config: ScanConfig, task_data: TaskData | None = None) -> ScanResult:
    """Run (or reuse) the sensitivity scan and write the ``scan`` and ``activations`` artifacts.

    Under torchrun each rank scans its contiguous share of the queries (the same
    streamed pass, prefix sharing included) and rank 0 merges the shares in query order
    into exactly the artifacts one process writes (means up to float summation order).
    """
    dist.init()
    workspace = Workspace(config.workspace, config.force, config.quiet)
    workspace.check_writable()
    task_data = task_data or load_task_data(config.data)
    task = task_data.task
    shots = config.shots if config.shots is not None else task.default_shots
    if shots < 1:
        raise StvError("--shots must be at least 1")
    support = task_data.support
    if len(support) < shots + 1:
        raise StvError(f"the support pool has {len(support)} items; --shots {shots} needs at least {shots + 1}")
    adapter = get_adapter(config.model)
    k = resolve_top_k(config, adapter.n_layers, adapter.n_heads)
    settings = scan_settings(config, shots, k)
    scan = workspace.reuse("scan", settings, why="same settings; --force reruns", fingerprint=adapter.fingerprint())
    if scan is not None:
        return ScanResult(scan["scores"], scan["locations"], True, scan.meta["extra"].get("stats", {}))

    rng = random.Random(config.seed)
    n_queries = min(config.queries, len(support))
    if n_queries < config.queries:
        say(f"scan: the support pool has {len(support)} items; scanning {n_queries} queries", config.quiet)
    queries = rng.sample(support, n_queries)
    check_inputs(adapter, task, queries, support, shots, stage="scan")  # before any prompt is built or run
    zero_prompts = [task.build_prompt(q) for q in queries]
    many_prompts = many_shot_prompts(task, queries, support, shots, rng, config.group_size)

    def share(start: int, stop: int):
        meter = Meter()
        label = "scan" if dist.world_size() == 1 else f"scan (rank {dist.rank()})"
        with progress(config.quiet) as bar:
            job = bar.add_task(label, total=2 * (stop - start))
            swept = scan_pass(adapter, zero_prompts[start:stop], many_prompts[start:stop], meter, config.batch_size,
                              max(0, min(stop, config.keep_contexts) - start), config.group_size,
                              on_batch=lambda n: bar.advance(job, n), first_index=start)
        return swept.tensors(), meter.summary()

    shares = workspace.sharded("scan", settings, n_queries, share, unit="queries")
    result = None
    if shares is not None:  # rank 0 (or the only process) merges and writes
        result = _write_scan(workspace, config, adapter, task_data, settings, queries, k, shares)
    return dist.broadcast_object(result)  # after rank 0 wrote the artifacts


def _write_scan(workspace: Workspace, config: ScanConfig, adapter: ModelAdapter, task_data: TaskData,
                settings: dict[str, Any], queries: list[Item], k: int, shares: Shares) -> ScanResult:
    """Merge the shares (query order) into the ``scan`` and ``activations`` artifacts."""
    n = len(queries)
    zero_mean, many_mean = shares.sum("zero_sum") / n, shares.sum("many_sum") / n  # [L, H, D]
    by_mode = {mode: shares.cat(f"scores_{mode}") for mode in SENSITIVITIES}  # [N, L, H] each
    auto = None
    sensitivity = config.sensitivity
    stats = shares.stats
    if config.auto:
        from stvcli.stages.auto import choose_locations

        auto = choose_locations(adapter, task_data, {m: v.mean(0) for m, v in by_mode.items()}, zero_mean, many_mean,
                                k, {q.uid for q in queries}, config)
        sensitivity, k = auto["chosen"]["sensitivity"], auto["chosen"]["top_k"]
        causal = auto.pop("causal_scores")
        # the candidates' checks are part of what the scan cost (build budgets compare methods by forwards)
        stats = {**stats, "forwards": int(stats.get("forwards", 0)) + auto["forwards"], "auto_forwards": auto["forwards"]}
    per_query = by_mode.get(sensitivity, by_mode["l2"])  # causal has no per-query scores
    scores = causal if sensitivity == "causal" else per_query.mean(0)
    locations = top_locations(scores, k)
    kept = shares.cat("kept")[:, locations[:, 0], locations[:, 1]]  # [T, K, D]
    provenance = Provenance(config.model.model, adapter.fingerprint(), task_data.source)
    workspace.save("activations", {"activations": kept, "locations": locations}, settings=settings,
                   provenance=provenance, seed=config.seed,
                   extra={"query_uids": [q.uid for q in queries[: config.keep_contexts]]})
    workspace.save(
        "scan",
        {
            "scores": scores,
            "locations": locations,
            "zero_mean": zero_mean,
            "many_mean": many_mean,
            "query_scores": per_query,
        },
        settings=settings,
        provenance=provenance,
        seed=config.seed,
        extra={"stats": stats, "n_queries": n, "query_uids": [q.uid for q in queries],
               "sensitivity": sensitivity, "top_k": k, **({"auto": auto} if auto else {})},
    )
    ranks = f" on {dist.world_size()} ranks" if dist.world_size() > 1 else ""
    chosen = f" ({sensitivity}, chosen by --auto: {auto['why']})" if auto else ""
    say(f"scan: {n} queries x 2 forwards{ranks}, top {k} of {scores.numel()} heads{chosen} -> "
        f"{workspace.path('scan')}", config.quiet)
    return ScanResult(scores, locations, False, stats)
