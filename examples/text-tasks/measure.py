"""Measure zero-shot and ICL accuracy of a model on the text tasks (train = support, test = evaluation).

    .venv/bin/python examples/text-tasks/measure.py --model /root/.cache/stv/backbones/gemma3 \
        --methods zero-shot,icl:4,icl:16 --limit 60 plural past-tense ...

Runs ``stvcli.stages.evaluate.run_eval`` (the code behind ``stv eval``) with
``DataOptions(task="text", data=<task>/train.jsonl, eval_data=<task>/test.jsonl)``:
``stv eval`` itself takes only ``--data`` and wants a workspace or a vectors file even for
zero-shot / ICL. Writes ``<out>/<task>/results.json`` (and samples) and prints one JSON
line per task: method -> accuracy, n, 95% Wilson interval.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from stvcli.config import ModelOptions
from stvcli.data.options import DataOptions
from stvcli.stages.config import EvalConfig
from stvcli.stages.evaluate import run_eval

HERE = Path(__file__).resolve().parent


def measure(model: str, task_dir: Path, methods: list[str], limit: int | None, out: Path, seed: int = 0) -> dict:
    data = DataOptions(task="text", data=str(task_dir / "train.jsonl"), eval_data=str(task_dir / "test.jsonl"), seed=seed)
    # model_construct: EvalConfig's validator asks for a workspace or vectors, which zero-shot / ICL do not use.
    config = EvalConfig.model_construct(
        workspace=None, vectors=None, methods=methods, limit=limit, output_path=out, log_samples=True,
        insert=None, metric_variant="standard", seed=seed, model=ModelOptions(model=model), data=data,
        batch_size=None, force=True, quiet=True,
    )
    report = run_eval(config)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--methods", default="zero-shot,icl:4,icl:16")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--data", type=Path, default=HERE, help="folder holding <task>/train.jsonl, test.jsonl")
    parser.add_argument("--out", type=Path, default=Path("/tmp/text-tasks"))
    parser.add_argument("tasks", nargs="+")
    args = parser.parse_args()
    for name in args.tasks:
        start = time.time()
        report = measure(args.model, args.data / name, args.methods.split(","), args.limit, args.out / name)
        print(json.dumps({"task": name, "seconds": round(time.time() - start), "results": _summary(report)}), flush=True)


def _summary(report: dict) -> dict:
    """method -> "acc [low, high] n" for the one task in the report."""
    (results,) = report["results"].values()
    return {m: f"{s['accuracy']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] n={s['n']}" for m, s in results.items()}


if __name__ == "__main__":
    main()
