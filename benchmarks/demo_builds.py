"""How far the demo's numbers move between builds of the shapes model (issue 13).

The shapes model's vision tower is trained on the user's machine (stvcli.shapes.build),
so two machines get two towers. Builds with other training seeds stand in for that:
for each --build-seeds value this builds the model (cached apart), runs the demo as
`stv demo --build-seed N` does (same task, sizes and method seed) and records every
method's accuracy and the paired STV - MTV.

    .venv/bin/python benchmarks/demo_builds.py --build-seeds 0 1 2 --out benchmarks/results/demo_builds.json
    .venv/bin/python benchmarks/demo_builds.py --out benchmarks/results/demo_builds.json --table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from stv_vs_mtv import paired_cell

ROOT = Path(__file__).resolve().parent.parent


def run_build(seed: int, root: Path) -> dict:
    from stvcli.demo import DemoConfig, run_demo
    from stvcli.workspace import Workspace

    started = time.perf_counter()
    workspace = root / f"build-seed-{seed}"
    report = run_demo(DemoConfig(workspace=workspace, build_seed=seed, quiet=True))
    task = next(iter(report["results"]))
    space = Workspace(workspace)
    return {"task": task, "results": report["results"][task], "paired": report["paired"][task],
            "scan_auto": space.load("scan").meta["extra"].get("auto", {}).get("chosen"),
            "search_auto": {key: space.load("vectors").meta["extra"].get("auto", {}).get("judged", {}).get(key)
                            for key in ("kept", "write_at", "holdout_accuracy")},
            "seconds": round(time.perf_counter() - started, 1)}


def table(results: dict) -> str:
    """Accuracy % [95% CI] per method and build, then STV - MTV paired."""
    def cell(x: dict) -> str:
        return f"{100 * x['accuracy']:.1f} [{100 * x['ci_low']:.0f}, {100 * x['ci_high']:.0f}]"

    rows = {seed: row for seed, row in results.items() if seed != "meta"}
    methods = list(next(iter(rows.values()))["results"]) if rows else []
    lines = ["| build seed | " + " | ".join(methods) + " | STV - MTV [95% CI], p | kept |",
             "|" + "---|" * (len(methods) + 3)]
    for seed, row in rows.items():
        diff = row["paired"].get("stv - mtv")
        lines.append(f"| {seed} | " + " | ".join(cell(row["results"][m]) for m in methods)
                     + f" | {paired_cell(diff)} | {row['search_auto'].get('kept')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=ROOT / "runs" / "demo_builds")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table", action="store_true", help="print the table of --out and stop")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.table:
        print(table(results))
        return
    for seed in args.build_seeds:
        if str(seed) in results:
            continue
        results[str(seed)] = run_build(seed, args.root)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(table({str(seed): results[str(seed)]}), flush=True)


if __name__ == "__main__":
    main()
