"""Does a likelihood reward over the whole answer fix STV (chosen)? (issue 13)

The first-token reward (the paper's) cannot tell "walk" from "walked": on past-tense the
chosen search's pick beat the mean vector on the hold-out first-token reward (-0.29 vs
-0.33) yet scored 8% against mean-at-stv's 45%. For each task already in the STV-vs-MTV
sweep this reruns only the chosen search with ``--reward answer`` on a copy of its
workspace (same scan, bank, queries, sizes and seed; see benchmarks/stv_vs_mtv.py) and
evaluates STV on the same items, paired against the first-token STV and against MTV.
``--reward answer``: log p(answer tokens); ``--reward complete``: log p(answer tokens,
then the newline that ends an answer), which also rewards stopping: zero-shot STV
generations often repeat ("came to came to ...") where ICL stops after "came".

    .venv/bin/python benchmarks/reward_answer.py --reward answer --tasks past-tense french antonym capital plural \
        --out benchmarks/results/reward_answer_text.json
    .venv/bin/python benchmarks/reward_answer.py --reward complete --tasks past-tense french antonym capital plural \
        --out benchmarks/results/reward_complete_text.json
    .venv/bin/python benchmarks/reward_answer.py --table --out benchmarks/results/reward_complete_text.json

``--reward auto``: what ``search --auto`` does now: one search per reward in
``--auto-rewards`` (first-token and complete); of their picks and the mean start, each
written at every token or at the last prompt token only (``--auto-write-at``), the one
whose generations answer most held-out support queries is kept (docs/method.md §4.8).
``--previous ROOT`` pairs this STV with another run's (e.g. before a change) on the same items.

    .venv/bin/python benchmarks/reward_answer.py --reward auto --out benchmarks/results/auto_reward_text.json \
        --tasks antonym capital comparative continent digits-to-words first-letter french gerund past-tense plural successor
    .venv/bin/python benchmarks/reward_answer.py --reward auto --sweep benchmarks/results/stv_vs_mtv_shapes.json \
        --sweep-root runs/stv_vs_mtv/shapes --out benchmarks/results/auto_reward_shapes.json --tasks shapes-color ...

In the results, ``stv(answer)`` is STV searched with the run's ``--reward`` (answer,
complete or auto, as the file name says).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from stv_vs_mtv import accuracy_cell as cell, paired_cell
from stvcli.metrics import paired_difference
from stvcli.stages.config import EvalConfig, SearchConfig
from stvcli.stages.evaluate import run_eval
from stvcli.stages.search import run_search
from stvcli.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
KEEP = ("scan.safetensors", "activations.safetensors", "bank.safetensors")


def scores(samples: Path, method: str) -> dict[str, float]:
    rows = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    return {row["id"]: row["score"] for row in rows if row["method"] == method}


def seed_finished_search(workspace: Path, config: SearchConfig, reward: str, recorded: Path) -> bool:
    """Put the search already recorded in ``recorded`` (a vectors file made with exactly
    this config's training settings and this reward, on the same scan and bank; its
    insertion is recorded, and a search --auto that chose another one starts afresh) into
    ``workspace`` as the finished checkpoint of ``search --auto``'s ``reward`` loop:
    its final logits and history at the last iteration, with the loop's forwards. The
    search then resumes there (``stvcli.stages.reinforce``) and runs everything after
    the loop (best-of, the judge, the diagnostics) for real. The searches are
    deterministic (same seed, draws and queries), so this is the run's own result
    (checked on past-tense: the choices of both searches equal the recorded ones)."""
    from stvcli.artifacts import load_artifact
    from stvcli.workspace import Provenance

    if not recorded.exists():
        return False
    vectors = load_artifact(recorded, "vectors")
    space = Workspace(workspace)
    start = space.begin("vectors", config.settings(), upstream="bank")
    logits = vectors["searched_logits"]
    loop_forwards = config.iterations * config.samples * config.queries_per_iteration
    space.save(f"search-state-{reward}",
               {"logits": logits, "exp_avg": torch.zeros_like(logits), "exp_avg_sq": torch.zeros_like(logits)},
               settings={**start.settings, "reward": reward, "insert": vectors.meta["extra"]["insert"]},
               provenance=Provenance.of(start.upstream),
               extra={"iteration": config.iterations, "adam_step": float(config.iterations),
                      "history": vectors.meta["extra"]["history"], "forwards": loop_forwards})
    return True


def run_task(name: str, sweep_root: Path, root: Path, sweep: dict, reward: str,
             replay: dict[str, Path] | None = None, iterations: int | None = None,
             previous: Path | None = None) -> dict:
    row = sweep[name]
    sizes, task = row["sizes"], next(iter(row["paper"]["results"]))
    source, workspace = sweep_root / name / "chosen", root / name
    workspace.mkdir(parents=True, exist_ok=True)
    for file in KEEP:
        if not (workspace / file).exists():
            shutil.copy2(source / file, workspace / file)
    started = time.perf_counter()
    config = SearchConfig(workspace=workspace, iterations=iterations or sizes["iterations"], samples=sizes["samples"],
                          queries_per_iteration=sizes["queries_per_iteration"], seed=sweep["meta"]["seed"],
                          auto=True, auto_rewards=["first-token", "complete"] if reward == "auto" else [reward],
                          quiet=True)
    replayed = [r for r, path in (replay or {}).items() if r in config.auto_rewards and not
                (workspace / "vectors.safetensors").exists() and seed_finished_search(workspace, config, r, path)]
    run_search(config)
    report = run_eval(EvalConfig(workspace=workspace, methods=["stv"], log_samples=True, seed=sweep["meta"]["seed"],
                                 quiet=True))
    answer = scores(workspace / f"samples_{task}.jsonl", "stv")
    first = scores(source / f"samples_{task}.jsonl", "stv")
    others = {"stv(first-token)": first, "mean-at-stv": scores(source / f"samples_{task}.jsonl", "mean-at-stv"),
              "mtv": scores(sweep_root / name / "paper" / f"samples_{task}.jsonl", "mtv")}
    if previous is not None and (previous / name / f"samples_{task}.jsonl").exists():
        others["previous"] = scores(previous / name / f"samples_{task}.jsonl", "stv")
    ids = sorted(answer)
    vectors = Workspace(workspace).load("vectors").meta["extra"]
    return {
        "stv(answer)": report["results"][task]["stv"],
        "stv(first-token)": row["chosen"]["results"][task]["stv"],
        "paired": {f"stv(answer) - {k}": paired_difference([answer[i] for i in ids], [v[i] for i in ids])
                   for k, v in others.items() if set(v) == set(ids)},
        "insert": vectors.get("auto", {}).get("insert"),
        "kept": vectors.get("auto", {}).get("judged", {}).get("kept"),
        "write_at": vectors.get("write_at", "every"),
        "holdout_accuracy": vectors.get("auto", {}).get("judged", {}).get("holdout_accuracy"),
        "search_forwards": vectors.get("stats", {}).get("forwards"),
        "diagnostics": vectors.get("diagnostics"),
        "seconds": round(time.perf_counter() - started, 1),
        "replayed": replayed,
    }


def table(results: dict, sweep: dict) -> str:
    """Accuracy % [95% CI] against 16-shot ICL, MTV, mean-at-stv and first-token STV (same items)."""
    lines = ["| task | n | icl:16 | MTV (faithful) | mean-at-stv | STV chosen, first-token | STV chosen, this reward | "
             "this - first-token | this - MTV | this / icl:16 |", "|" + "---|" * 10]
    for name, row in results.items():
        task = next(iter(sweep[name]["paper"]["results"]))
        paper, chosen = sweep[name]["paper"]["results"][task], sweep[name]["chosen"]["results"][task]
        icl = next(v for k, v in paper.items() if k.startswith("icl:") and k != "icl:4")
        mine, paired = row["stv(answer)"], row["paired"]
        lines.append(f"| {name} | {mine['n']} | {cell(icl)} | {cell(paper['mtv'])} | {cell(chosen['mean-at-stv'])} | "
                     f"{cell(chosen['stv'])} | {cell(mine)} | {paired_cell(paired['stv(answer) - stv(first-token)'])} | "
                     f"{paired_cell(paired['stv(answer) - mtv'])} | {mine['accuracy'] / icl['accuracy']:.2f} |")
    return "\n".join(lines)


def full_table(results: dict, sweep: dict) -> str:
    """The issue's table, one row per task of the sweep: every method of the sweep with
    STV (auto) from this run; a task this run did not reach shows the sweep's chosen
    STV (first-token reward only) and says so in the "kept" column."""
    lines = ["| task | n | zero-shot | icl:4 | icl:max | MTV (faithful) | STV (paper) | STV (auto) | mean-at-stv | "
             "kept | STV (auto) - MTV [95% CI], p | STV (auto) / icl:max | build forwards MTV / STV paper / STV auto |",
             "|" + "---|" * 13]
    for name, row in sweep.items():
        if name == "meta":
            continue
        task = next(iter(row["paper"]["results"]))
        paper, chosen = row["paper"]["results"][task], row["chosen"]["results"][task]
        icl = next(v for k, v in paper.items() if k.startswith("icl:") and k != "icl:4")
        if name in results:
            mine, diff, kept = (results[name]["stv(answer)"], results[name]["paired"]["stv(answer) - mtv"],
                                results[name].get("kept", "-"))
            if "write_at" in results[name]:
                kept = f"{kept} @ {results[name]['write_at']}"
        else:
            mine, diff, kept = chosen["stv"], row["paired_chosen"]["stv(chosen) - mtv"], "first-token (not rerun)"
        ratio = f"{mine['accuracy'] / icl['accuracy']:.2f}" if icl["accuracy"] else "-"
        budget = " / ".join(str(x.get("build_forwards", "-")) for x in (paper["mtv"], paper["stv"], mine))
        lines.append(
            f"| {name} | {mine['n']} | {cell(paper['zero-shot'])} | {cell(paper['icl:4'])} | {cell(icl)} | "
            f"{cell(paper['mtv'])} | {cell(paper['stv'])} | {cell(mine)} | {cell(chosen['mean-at-stv'])} | "
            f"{kept} | {paired_cell(diff)} | {ratio} | {budget} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=[])
    parser.add_argument("--table", action="store_true", help="print the table of --out and stop")
    parser.add_argument("--full-table", action="store_true",
                        help="print every method of the sweep with this run's STV (for --reward auto) and stop")
    parser.add_argument("--reward", choices=("answer", "complete", "auto"), default="answer")
    parser.add_argument("--sweep", type=Path, default=ROOT / "benchmarks" / "results" / "stv_vs_mtv_text.json")
    parser.add_argument("--sweep-root", type=Path, default=ROOT / "runs" / "stv_vs_mtv" / "text")
    parser.add_argument("--root", type=Path, default=None, help="default: runs/reward_<reward>")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=None, help="search iterations (default: the sweep's)")
    parser.add_argument("--previous", type=Path, default=None,
                        help="another run's root: pair this STV with its STV on the same items (stv(answer) - previous)")
    parser.add_argument("--replay", nargs="*", default=[], metavar="REWARD=ROOT",
                        help="with --reward auto: resume that reward's search from the one recorded in "
                             "ROOT/<task>/vectors.safetensors (first-token=chosen: the sweep's chosen workspace)")
    args = parser.parse_args()
    root = args.root or ROOT / "runs" / f"reward_{args.reward}"
    sweep = json.loads(args.sweep.read_text())
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.table or args.full_table:
        print(full_table(results, sweep) if args.full_table else table(results, sweep))
        return
    for name in args.tasks:
        if name in results or name not in sweep:
            continue
        replay = {}
        for spec in args.replay:
            key, _, folder = spec.partition("=")
            replay[key] = (args.sweep_root / name / "chosen" if folder == "chosen" else Path(folder) / name) \
                / "vectors.safetensors"
        results[name] = run_task(name, args.sweep_root, root, sweep, args.reward, replay, args.iterations,
                                 args.previous)
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
        row = results[name]
        diff = row["paired"].get("stv(answer) - stv(first-token)", {})
        print(f"{name}: answer {100 * row['stv(answer)']['accuracy']:.1f} vs first-token "
              f"{100 * row['stv(first-token)']['accuracy']:.1f} (diff {100 * diff.get('difference', float('nan')):+.1f}, "
              f"p={diff.get('p_value', float('nan')):.2g})", flush=True)


if __name__ == "__main__":
    main()
