"""STV against the faithful MTV baseline, per task (issue 13): one table row per task.

For each task two workspaces run on the same model, data and evaluation items:

- ``paper``: the paper's settings (L2 sensitivity, K = 300/1024 of the heads, replace,
  argmax) scaled to CPU budgets; its eval runs zero-shot, icl:4, icl:max, MTV (the
  paper's rule: replacement, Bernoulli search, best of 10) , STV and mean-at-stv.
- ``chosen``: ``scan --auto`` and ``search --auto`` (sensitivity, K and insertion
  chosen on support queries; mean and keep choices); its eval runs STV and mean-at-stv.

Paired differences (exact McNemar for 0/1 scores, paired bootstrap for VQA accuracy)
come from the per-item samples of both evals. Rows land in --out after every task;
tasks already there are skipped, so an interrupted sweep resumes.

    .venv/bin/python benchmarks/stv_vs_mtv.py --suite shapes --out benchmarks/results/stv_vs_mtv_shapes.json
    .venv/bin/python benchmarks/stv_vs_mtv.py --suite text --out benchmarks/results/stv_vs_mtv_text.json
    .venv/bin/python benchmarks/stv_vs_mtv.py --suite text --backbone smollm2 --out benchmarks/results/stv_vs_mtv_smollm2.json
    .venv/bin/python benchmarks/stv_vs_mtv.py --out benchmarks/results/stv_vs_mtv_shapes.json --table
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TEXT_TASKS = ROOT / "examples" / "text-tasks"


@dataclass(frozen=True)
class Sizes:
    shots: int = 8
    queries: int = 32
    clusters: int = 16
    iterations: int = 40
    samples: int = 16
    queries_per_iteration: int = 4
    mtv_iterations: int = 100
    mtv_samples: int = 16
    eval_items: int = 60
    max_icl_shots: int = 16


def task_specs(suite: str, names: list[str] | None, text_tasks: Path = TEXT_TASKS,
               backbone: str = "gemma3") -> list[dict]:
    """(name, task, data, model) of every task in the suite."""
    if suite == "shapes":
        from stvcli.shapes.build import ensure_shapes_model
        from stvcli.shapes.tasks import shapes_tasks

        model = str(ensure_shapes_model("gemma3", quiet=True))
        specs = [{"name": t.name, "task": t.name, "data": f"shapes:{t.name}", "model": model} for t in shapes_tasks()]
    else:
        from stvcli.shapes.backbones import ensure_backbone

        model = str(ensure_backbone(backbone, quiet=True))
        specs = [{"name": folder.name, "task": "text", "data": str(folder / "train.jsonl"),
                  "eval_data": str(folder / "test.jsonl"), "model": model}
                 for folder in sorted(text_tasks.iterdir()) if (folder / "train.jsonl").exists()]
    if not names:
        return specs
    by_name = {spec["name"]: spec for spec in specs}
    return [by_name[name] for name in names if name in by_name]  # in the order asked


def run_task(spec: dict, root: Path, sizes: Sizes, seed: int) -> dict:
    from stvcli.config import ModelOptions
    from stvcli.data.options import DataOptions
    from stvcli.stages.bank import run_bank
    from stvcli.stages.config import BankConfig, EvalConfig, MTVConfig, ScanConfig, SearchConfig
    from stvcli.stages.evaluate import run_eval
    from stvcli.stages.scan import run_scan
    from stvcli.stages.search import run_search

    model = ModelOptions(model=spec["model"], dtype="float32")
    data = DataOptions(data=spec["data"], eval_data=spec.get("eval_data"), task=spec["task"], seed=seed,
                       eval_limit=sizes.eval_items)
    out: dict = {"sizes": sizes.__dict__, "seconds": {}}
    for variant in ("paper", "chosen"):
        started = time.perf_counter()
        workspace = root / spec["name"] / variant
        auto = variant == "chosen"
        run_scan(ScanConfig(model=model, data=data, workspace=workspace, shots=sizes.shots, queries=sizes.queries,
                            keep_contexts=sizes.queries, seed=seed, auto=auto, quiet=True))
        run_bank(BankConfig(workspace=workspace, clusters=sizes.clusters, seed=seed, quiet=True))
        run_search(SearchConfig(workspace=workspace, iterations=sizes.iterations, samples=sizes.samples,
                                queries_per_iteration=sizes.queries_per_iteration, seed=seed, auto=auto, quiet=True))
        methods = (["zero-shot", "icl:4", f"icl:{sizes.max_icl_shots}", "mtv", "stv", "mean-at-stv"]
                   if variant == "paper" else ["stv", "mean-at-stv"])
        report = run_eval(EvalConfig(workspace=workspace, methods=methods, log_samples=True, seed=seed, quiet=True,
                                     mtv=MTVConfig(iterations=sizes.mtv_iterations, samples=sizes.mtv_samples,
                                                   seed=seed)))
        out[variant] = {"results": report["results"], "paired": report.get("paired"), "stages": report["stages"]}
        out["seconds"][variant] = round(time.perf_counter() - started, 1)
        if auto:
            from stvcli.workspace import Workspace

            space = Workspace(workspace)
            out["chosen"]["auto"] = {"scan": space.load("scan").meta["extra"].get("auto", {}).get("chosen"),
                                     "search": space.load("vectors").meta["extra"].get("auto", {}).get("insert")}
            out["chosen"]["diagnostics"] = space.load("vectors").meta["extra"].get("diagnostics")
    out["paper"]["diagnostics"] = _diagnostics(root / spec["name"] / "paper")
    out["paired_chosen"] = _paired(root / spec["name"], spec["task"], seed)
    return out


def _diagnostics(workspace: Path) -> dict | None:
    from stvcli.workspace import Workspace

    return Workspace(workspace).load("vectors").meta["extra"].get("diagnostics")


def _paired(task_root: Path, task: str, seed: int) -> dict:
    """STV (chosen) against every paper-workspace method on the same items."""
    from stvcli.metrics import paired_difference

    def scores(variant: str) -> dict[str, dict[str, float]]:
        by_method: dict[str, dict[str, float]] = {}
        for line in (task_root / variant / f"samples_{task}.jsonl").read_text().splitlines():
            sample = json.loads(line)
            by_method.setdefault(sample["method"], {})[sample["id"]] = sample["score"]
        return by_method

    paper, chosen = scores("paper"), scores("chosen")
    stv = chosen["stv"]
    ids = sorted(stv)
    return {f"stv(chosen) - {method}": paired_difference([stv[i] for i in ids], [values[i] for i in ids], seed=seed)
            for method, values in paper.items() if set(values) == set(ids)}


def sweep(suite: str, names: list[str] | None, root: Path, out: Path, sizes: Sizes, seed: int,
          text_tasks: Path = TEXT_TASKS, backbone: str = "gemma3") -> dict:
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("meta", {}).update(suite=suite, threads=torch.get_num_threads(), seed=seed,
                                          sizes=sizes.__dict__, **({"backbone": backbone} if suite == "text" else {}))
    for spec in task_specs(suite, names, text_tasks, backbone):
        if spec["name"] in results:
            continue
        results[spec["name"]] = run_task(spec, root, sizes, seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(table({spec["name"]: results[spec["name"]]}), flush=True)
    return results


def table(results: dict) -> str:
    """Accuracy % [95% CI] per method, forwards to build, and the paired STV - MTV."""
    header = ("| task | n | zero-shot | icl:4 | icl:max | MTV (faithful) | STV (paper) | STV (chosen) | "
              "mean-at-stv | STV(chosen) - MTV [95% CI], p | build forwards MTV / STV paper / STV chosen |")
    lines = [header, "|" + "---|" * 11]
    for name, row in results.items():
        if name == "meta":
            continue
        task = next(iter(row["paper"]["results"]))
        paper, chosen = row["paper"]["results"][task], row["chosen"]["results"][task]
        icl_max = next(m for m in paper if m.startswith("icl:") and m != "icl:4")
        cells = [accuracy_cell(x) for x in (paper["zero-shot"], paper["icl:4"], paper[icl_max], paper["mtv"],
                                            paper["stv"], chosen["stv"], chosen["mean-at-stv"])]
        diff = row["paired_chosen"].get("stv(chosen) - mtv")
        budget = " / ".join(str(m.get("build_forwards", "-")) for m in (paper["mtv"], paper["stv"], chosen["stv"]))
        lines.append(f"| {name} | {paper['zero-shot']['n']} | " + " | ".join(cells)
                     + f" | {paired_cell(diff)} | {budget} |")
    return "\n".join(lines)


def diagnostics_table(results: dict) -> str:
    """The searches' diagnostics (docs/method.md §4.7): hold-out reward of the final pick
    against random picks, the mean vector and no edit; the policy's entropy start -> end."""
    lines = ["| task | variant | chosen setting | none | random (best) | mean | final | entropy start -> end |",
             "|" + "---|" * 8]
    for name, row in results.items():
        if name == "meta":
            continue
        for variant in ("paper", "chosen"):
            diag = row[variant].get("diagnostics") or {}
            reward = diag.get("reward", {})
            setting = "l2, replace, argmax"
            if variant == "chosen":
                auto = row["chosen"].get("auto") or {}
                scan = auto.get("scan") or {}
                setting = f"{scan.get('sensitivity')} K={scan.get('top_k')}, {auto.get('search')}, mean+keep"
            entropy = diag.get("entropy") or []
            cells = [f"{reward[k]:.2f}" if k in reward else "-" for k in ("none",)]
            cells.append(f"{reward['random']:.2f} ({reward['random_best']:.2f})" if "random" in reward else "-")
            cells += [f"{reward[k]:.2f}" if k in reward else "-" for k in ("mean", "final")]
            cells.append(" -> ".join(f"{e:.2f}" for e in entropy) or "-")
            lines.append(f"| {name} | {variant} | {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_cell(diff: dict | None) -> str:
    """A paired difference in points with its 95% interval and p-value ("-" when absent)."""
    if not diff:
        return "-"
    return (f"{100 * diff['difference']:+.1f} [{100 * diff['ci_low']:+.1f}, {100 * diff['ci_high']:+.1f}], "
            f"p={diff['p_value']:.2g}")


def accuracy_cell(summary: dict) -> str:
    return f"{100 * summary['accuracy']:.0f} [{100 * summary['ci_low']:.0f}, {100 * summary['ci_high']:.0f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("shapes", "text"), default="shapes")
    parser.add_argument("--tasks", nargs="*", help="only these task names")
    parser.add_argument("--root", type=Path, default=ROOT / "runs" / "stv_vs_mtv")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-tasks", type=Path, default=TEXT_TASKS, help="folders with train.jsonl and test.jsonl")
    parser.add_argument("--backbone", choices=("gemma3", "smollm2"), default="gemma3",
                        help="the text model of --suite text (the shapes suite runs the demo's Gemma-3 VLM)")
    parser.add_argument("--table", action="store_true", help="print the table of --out and stop")
    args = parser.parse_args()
    if args.table:
        results = json.loads(args.out.read_text())
        print(table(results) + "\n\n" + diagnostics_table(results))
        return
    from transformers.utils import logging as hf_logging

    import stvcli.stages.auto  # noqa: F401  every stage module now, so a long sweep runs one version of the code
    import stvcli.stages.methods  # noqa: F401
    import stvcli.stages.mtv  # noqa: F401

    hf_logging.disable_progress_bar()
    folder = args.suite if args.backbone == "gemma3" or args.suite != "text" else f"text-{args.backbone}"
    sweep(args.suite, args.tasks, args.root / folder, args.out, Sizes(), args.seed, args.text_tasks, args.backbone)


if __name__ == "__main__":
    main()
