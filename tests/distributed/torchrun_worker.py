"""The pipeline on the tiny LLaVA bed, as one process or as one rank under torchrun.

``python torchrun_worker.py MODEL_DIR DATA_JSONL WORKSPACE OUT_DIR`` (or the same under
``torchrun --nproc_per_node N``) runs scan (through the CLI, as a user would), bank
(with extra contexts beyond the scan's, so the bank's own sharding runs), search
(best-of selection) and eval (zero-shot, icl, stv, mtv), then writes what this rank
holds to ``OUT_DIR/rank-<r>.pt``. The test imports the same settings for its
single-process reference, so the two runs differ only in the number of ranks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch


def scan_args(model_dir: str, data: str, workspace: str | Path) -> list[str]:
    return ["scan", "--model", model_dir, "--workspace", str(workspace), "--data", data, "--task", "vqa",
            "--eval-limit", "12", "--shots", "3", "--queries", "8", "--top-k", "5", "--seed", "1",
            "--batch-size", "4", "--device", "cpu", "--dtype", "float32"]


def run_pipeline(model_dir: str, data: str, workspace: Path) -> dict:
    from stvcli.cli import app
    from stvcli.stages.bank import run_bank
    from stvcli.stages.config import BankConfig, EvalConfig, MTVConfig, SearchConfig
    from stvcli.stages.evaluate import run_eval
    from stvcli.stages.search import run_search

    code = app(scan_args(model_dir, data, workspace), standalone_mode=False)
    if code not in (None, 0):
        raise SystemExit(code)
    bank = run_bank(BankConfig(workspace=workspace, clusters=4, contexts=11, batch_size=2, quiet=True))
    search = run_search(SearchConfig(workspace=workspace, iterations=4, samples=5, queries_per_iteration=2,
                                     select="best-of", best_of=3, holdout=4, checkpoint_every=2, batch_size=1,
                                     quiet=True))
    report = run_eval(EvalConfig(workspace=workspace, methods=["zero-shot", "icl:1", "stv", "mtv"], limit=5,
                                 batch_size=1, log_samples=True, quiet=True, output_path=workspace / "eval",
                                 mtv=MTVConfig(iterations=2, samples=5, holdout=3, best_of=3)))
    return {"bank": bank.bank, "counts": bank.counts, "choices": search.choices, "logits": search.logits,
            "rewards": search.rewards, "results": report["results"]}


def main() -> None:
    torch.set_num_threads(1)
    model_dir, data, workspace, out = sys.argv[1:5]
    held = run_pipeline(model_dir, data, Path(workspace))
    rank = int(os.environ.get("RANK", "0"))
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save(held, Path(out) / f"rank-{rank}.pt")


if __name__ == "__main__":
    main()
