"""Measure STV and its options on the shapes world (issue 5): one table per setting.

    python benchmarks/shapes_methods.py --backbone smollm2 --task shapes-color \
        --insert replace add --sensitivity l2 relative --top-k 16 64

Each setting runs scan -> bank -> search -> eval in its own workspace under
runs/shapes-methods/ and prints accuracy with 95% intervals on held-out items.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from stvcli.config import ModelOptions
from stvcli.data.options import DataOptions
from stvcli.shapes.build import ensure_shapes_model
from stvcli.stages.bank import run_bank
from stvcli.stages.config import BankConfig, EvalConfig, MTVConfig, ScanConfig, SearchConfig
from stvcli.stages.evaluate import markdown_table, run_eval
from stvcli.stages.scan import run_scan
from stvcli.stages.search import run_search


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="smollm2")
    parser.add_argument("--task", default="shapes-color")
    parser.add_argument("--insert", nargs="+", default=["replace", "add"])
    parser.add_argument("--sensitivity", nargs="+", default=["l2"])
    parser.add_argument("--top-k", nargs="+", type=int, default=[16])
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--queries", type=int, default=48)
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--eval-items", type=int, default=80)
    parser.add_argument("--methods", default="zero-shot,icl:4,stv,mean-at-stv,random-locations")
    parser.add_argument("--mtv-iterations", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=Path("runs/shapes-methods"))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    model = ModelOptions(model=str(ensure_shapes_model(args.backbone)), dtype="float32")
    data = DataOptions(data=f"shapes:{args.task}", task=args.task, seed=args.seed, eval_limit=args.eval_items)
    rows = []
    for sensitivity, k, insert in itertools.product(args.sensitivity, args.top_k, args.insert):
        workspace = args.root / f"{args.backbone}-{args.task}-{sensitivity}-k{k}"
        common = dict(workspace=workspace, quiet=True)
        started = time.perf_counter()
        run_scan(ScanConfig(model=model, data=data, shots=args.shots, queries=args.queries, top_k=k,
                            sensitivity=sensitivity, seed=args.seed, keep_contexts=args.queries, **common))
        run_bank(BankConfig(clusters=args.clusters, contexts=args.queries, seed=args.seed, **common))
        search_ws = workspace / insert
        if search_ws.exists():
            for name in ("vectors.safetensors", "mtv.safetensors"):
                (search_ws / name).unlink(missing_ok=True)
        search_ws.mkdir(parents=True, exist_ok=True)
        for name in ("scan.safetensors", "bank.safetensors", "activations.safetensors"):
            target = search_ws / name
            target.unlink(missing_ok=True)
            target.symlink_to((workspace / name).resolve())
        run_search(SearchConfig(workspace=search_ws, iterations=args.iterations, samples=args.samples,
                                insert=insert, seed=args.seed, quiet=True))
        report = run_eval(EvalConfig(workspace=search_ws, methods=args.methods.split(","), seed=args.seed,
                                     quiet=True, mtv=MTVConfig(iterations=args.mtv_iterations,
                                                               samples=args.samples, seed=args.seed)))
        seconds = time.perf_counter() - started
        print(f"\n## {args.backbone} {args.task} sensitivity={sensitivity} K={k} insert={insert} "
              f"({seconds:.0f} s)\n" + markdown_table(report), flush=True)
        rows.append({"backbone": args.backbone, "task": args.task, "sensitivity": sensitivity, "top_k": k,
                     "insert": insert, "seconds": round(seconds, 1), "results": report["results"],
                     "stages": report["stages"]})
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
