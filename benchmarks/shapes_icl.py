"""Greedy ICL accuracy of the shapes model on held-out items, per task and shot count.

Goes through the same code paths as ``stv eval``: the model loads with
``load_model`` (AutoModelForImageTextToText + AutoProcessor on the cached directory),
items come from ``load_task_data`` (``shapes:`` source), demonstrations from
``sampling.demonstrations_for`` (as in the eval stage), generation from ``scoring.generate``.

    .venv/bin/python benchmarks/shapes_icl.py --backbone smollm2 --n 100 \
        --out benchmarks/results/shapes_icl_smollm2.json

Results are written after every (task, k) cell, and cells already in ``--out`` are
skipped, so an interrupted run resumes. ``--table`` prints a markdown table of a file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from stvcli.shapes.tasks import shapes_tasks

DEFAULT_TASKS = tuple(task.name for task in shapes_tasks())
DEFAULT_SHOTS = (0, 1, 2, 4, 8, 16)
MAX_EPISODE_SHOTS = 8  # an episode demonstration is ~3 lines and 3 images; 16 of them cost ~1,500 tokens


def measure(backbone: str, tasks: list[str], shots: list[int], n: int, seed: int, batch: int, out: Path) -> dict:
    from stvcli.config import ModelOptions
    from stvcli.data.loading import load_task_data
    from stvcli.data.options import DataOptions
    from stvcli.data.sampling import demonstrations_for
    from stvcli.models.loading import load_model
    from stvcli.scoring import generate
    from stvcli.shapes.build import ensure_shapes_model

    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("meta", {}).update(backbone=backbone, n=n, seed=seed, threads=torch.get_num_threads())
    adapter = load_model(ModelOptions(model=str(ensure_shapes_model(backbone)), dtype="float32", device="cpu"))
    for name in tasks:
        data = load_task_data(DataOptions(task=name, seed=seed, eval_limit=n))
        items = data.evaluation[:n]
        for k in shots:
            if name == "shapes-episode" and k > MAX_EPISODE_SHOTS:
                continue
            if str(k) in results.get(name, {}):
                continue
            start = time.perf_counter()
            prompts = [data.task.build_prompt(item, demonstrations_for(data, item, k, seed) if k else ()) for item in items]
            generations: list[str] = []
            for at in range(0, len(prompts), batch):
                generations += generate(adapter, prompts[at : at + batch], data.task.max_new_tokens)
            scores = [data.task.score(data.task.extract(g), item) for g, item in zip(generations, items, strict=True)]
            accuracy = sum(scores) / len(scores)
            results.setdefault(name, {})[str(k)] = {
                "accuracy": round(accuracy, 4),
                "n": len(scores),
                "seconds": round(time.perf_counter() - start, 1),
                "examples": [g.strip()[:20] for g in generations[:5]],
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1) + "\n")
            print(f"{backbone} {name} k={k}: {accuracy:.3f} (n={len(scores)}, {time.perf_counter() - start:.0f} s) "
                  f"e.g. {results[name][str(k)]['examples'][:3]}", flush=True)
    return results


def table(results: dict, shots: list[int]) -> str:
    """A markdown table: one row per task, one column per shot count."""
    header = "| task | " + " | ".join(f"k={k}" for k in shots) + " |"
    lines = [header, "|" + "---|" * (len(shots) + 1)]
    for name, cells in results.items():
        if name == "meta":
            continue
        row = [f"{cells[str(k)]['accuracy']:.2f}" if str(k) in cells else "-" for k in shots]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="smollm2")
    parser.add_argument("--tasks", nargs="*", default=list(DEFAULT_TASKS))
    parser.add_argument("--shots", nargs="*", type=int, default=list(DEFAULT_SHOTS))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(f"benchmarks/results/shapes_icl_{args.backbone}.json")
    if not args.table:
        measure(args.backbone, args.tasks, args.shots, args.n, args.seed, args.batch, out)
    print(table(json.loads(out.read_text()), args.shots))


if __name__ == "__main__":
    main()
