"""The demo's full table for every shapes task (issue 5): zero-shot, ICL at 1/2/4/max
shots, MTV, STV and mean-at-stv, with n and 95% intervals, on held-out items.

Each task is one `stv demo --task TASK` run (same code, same sizes) in its own
workspace under --root; the rows land in --out after every task, and tasks already
there are skipped, so an interrupted sweep resumes.

    .venv/bin/python benchmarks/shapes_tasks.py --backbone gemma3 \
        --out benchmarks/results/tasks_gemma3.json
    .venv/bin/python benchmarks/shapes_tasks.py --out benchmarks/results/tasks_gemma3.json --table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from stvcli.shapes.tasks import shapes_tasks

DEFAULT_TASKS = tuple(task.name for task in shapes_tasks())


def sweep(backbone: str, tasks: list[str], root: Path, out: Path, mtv_iterations: int | None) -> dict:
    from stvcli.demo import DemoConfig, run_demo

    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("meta", {}).update(backbone=backbone, threads=torch.get_num_threads(),
                                          mtv_iterations=mtv_iterations)
    for task in tasks:
        if task in results:
            continue
        started = time.perf_counter()
        report = run_demo(DemoConfig(task=task, backbone=backbone, workspace=root / f"{backbone}-{task}",
                                     quiet=True, mtv_iterations=mtv_iterations))
        results[task] = {"seconds": round(time.perf_counter() - started, 1), "results": report["results"],
                         "stages": report["stages"]}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{task}: {results[task]['seconds']:.0f} s", flush=True)
        print(table({task: results[task]}), flush=True)
    return results


def table(results: dict) -> str:
    """One row per task: accuracy (%) with its 95% interval per method, and n."""
    rows = {name: cell["results"][name] for name, cell in results.items() if name != "meta"}
    columns = list(dict.fromkeys(_column(m) for methods in rows.values() for m in methods))
    lines = ["| task | n | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 2)]
    for name, methods in rows.items():
        by_column = {_column(m): (m, r) for m, r in methods.items()}
        n = max(r["n"] for r in methods.values())
        row = [_cell(*by_column[c], c) if c in by_column else "-" for c in columns]
        lines.append(f"| {name} | {n} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def options_table(directory: Path) -> str:
    """STV / mean-at-stv / random-locations per task under each (sensitivity, insert) of
    ``benchmarks/shapes_methods.py`` runs saved as ``directory/<task>.json``."""
    grid: dict[str, dict[str, dict]] = {}
    for path in sorted(directory.glob("*.json")):
        for row in json.loads(path.read_text()):
            setting = f"{row['sensitivity']} {row['insert']}"
            grid.setdefault(row["task"], {})[setting] = row["results"][row["task"]]
    settings = list(dict.fromkeys(s for cells in grid.values() for s in cells))
    lines = ["| task | " + " | ".join(f"STV, {s}" for s in settings) + " |", "|" + "---|" * (len(settings) + 1)]
    for task, cells in grid.items():
        row = []
        for setting in settings:
            methods = cells.get(setting)
            if methods is None:
                row.append("-")
                continue
            stv = _cell("stv", methods["stv"], "stv")
            others = ", ".join(f"{100 * methods[m]['accuracy']:.0f}" for m in ("mean-at-stv", "random-locations")
                               if m in methods)
            row.append(f"{stv} ({others})")
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _column(method: str) -> str:
    """``icl:N`` above 4 shots is the task's "icl:max" column."""
    if method.startswith("icl:") and int(method.split(":")[1]) > 4:
        return "icl:max"
    return method


def _cell(method: str, row: dict, column: str) -> str:
    shots = f" ({method.split(':')[1]} shots)" if column == "icl:max" else ""
    return f"{100 * row['accuracy']:.1f} [{100 * row['ci_low']:.0f}, {100 * row['ci_high']:.0f}]{shots}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="gemma3")
    parser.add_argument("--tasks", nargs="*", default=list(DEFAULT_TASKS))
    parser.add_argument("--root", type=Path, default=Path("runs/shapes-tasks"))
    parser.add_argument("--mtv-iterations", type=int, default=None, help="default: the demo's")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    parser.add_argument("--options", type=Path, default=None,
                        help="only print the STV options table of a directory of shapes_methods.py outputs")
    args = parser.parse_args()
    if args.options:
        print(options_table(args.options))
        return
    out = args.out or Path(f"benchmarks/results/tasks_{args.backbone}.json")
    if not args.table:
        sweep(args.backbone, args.tasks, args.root, out, args.mtv_iterations)
    print(table(json.loads(out.read_text())))


if __name__ == "__main__":
    main()
