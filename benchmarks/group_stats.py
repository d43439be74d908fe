"""Does sharing one demonstration sample among G scan queries change WHERE the scan looks?

    .venv/bin/python benchmarks/group_stats.py [--queries 48] [--groups 1,4,8] [--seeds 3] [--json out.json]

For each group size G and seed, the scan's per-head sensitivity scores (mean over Nq
queries of ||a_many - a_zero||) on the shapes model (else the tiny LLaVA). Reported:
the top-K overlap (|A and B| / K) and the Spearman correlation of the scores between
scans with DIFFERENT seeds, within G = 1 (the paper's independent sampling: the
seed-to-seed noise floor) and between G = 1 and G > 1. If G > 1 agrees with G = 1 as
well as G = 1 agrees with itself, the grouping costs no accuracy in the locations.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from run import PAPER, real_bed, tiny_bed  # noqa: E402
from stvcli.stages.common import Meter  # noqa: E402
from stvcli.stages.scan import many_shot_prompts, scan_pass, top_locations  # noqa: E402


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.flatten().argsort().argsort().float()
    rb = b.flatten().argsort().argsort().float()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    top_a = {tuple(x) for x in top_locations(a, k).tolist()}
    top_b = {tuple(x) for x in top_locations(b, k).tolist()}
    return len(top_a & top_b) / k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=48)
    parser.add_argument("--groups", default="1,8")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shots", type=int, default=PAPER["shots"])
    parser.add_argument("--json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    bed = real_bed() or tiny_bed()
    groups = [int(g) for g in args.groups.split(",")]
    print(f"{bed.name}: Nq {args.queries}, {args.shots} shots, K {bed.k}, seeds {args.seeds}, groups {groups}")
    scores: dict[tuple[int, int], torch.Tensor] = {}
    for g in groups:
        for seed in range(args.seeds):
            start = time.perf_counter()
            rng = random.Random(seed)
            queries = rng.sample(bed.pool, args.queries)
            zero = [bed.task.build_prompt(q) for q in queries]
            many = many_shot_prompts(bed.task, queries, bed.pool, args.shots, rng, group_size=g)
            swept = scan_pass(bed.adapter, zero, many, Meter(), None, keep=0, group_size=g)
            scores[(g, seed)] = swept.query_scores["l2"].mean(0)
            print(f"  G {g} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for g in groups:
        pairs = [(a, b) for a, b in itertools.permutations(range(args.seeds), 2) if a < b or g != 1]
        overlaps = [overlap(scores[(1, a)], scores[(g, b)], bed.k) for a, b in pairs]
        rhos = [spearman(scores[(1, a)], scores[(g, b)]) for a, b in pairs]
        rows.append({"group": g, "pairs": len(pairs), "topk_overlap": statistics.mean(overlaps),
                     "topk_overlap_min": min(overlaps), "spearman": statistics.mean(rhos)})
        print(f"G=1 vs G={g} (different seeds, {len(pairs)} pairs): top-{bed.k} overlap "
              f"{statistics.mean(overlaps):.3f} (min {min(overlaps):.3f}), Spearman {statistics.mean(rhos):.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": bed.name, "queries": args.queries, "shots": args.shots,
                                               "k": bed.k, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
