"""Hook overhead: forward time with capture (all heads) and insertion (25% of heads) vs plain.

    .venv/bin/python benchmarks/overhead.py [--repeats 30] [--threads 1] [--json out.json]

Runs every tiny family (batch 4, short prompts), the tiny Llama at a long sequence, and
a random-weight model with SmolLM2-135M's geometry (30 layers x 9 heads of 64). Timings
on shared CPUs are noisy, so the three variants are interleaved within each repeat and
compared as ratios of medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from stvcli.engine import all_locations, capturing, inserting
from stvcli.models.base import ModelAdapter
from stvcli.models.registry import adapter_for
from stvcli.prompt import Prompt
from stvcli.testing.tiny import TINY_FAMILIES, VISION_FAMILIES, tiny_adapter, tiny_image, tiny_tokenizer

BATCH = 4


def _prompts(family: str, words: int) -> list[Prompt]:
    text = " ".join(["the quick brown fox"] * max(1, words // 4))
    if family in VISION_FAMILIES:
        return [Prompt(f"<image> {text} Answer:", (tiny_image(i),)) for i in range(BATCH)]
    return [Prompt(f"{text} {i} Answer:") for i in range(BATCH)]


def _smollm2_geometry() -> ModelAdapter:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    return adapter_for(LlamaForCausalLM(config).eval(), tokenizer, "smollm2-geometry")


def _time(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(adapter: ModelAdapter, prompts: list[Prompt], repeats: int) -> dict[str, float]:
    """Median seconds per forward: plain, capture of all heads, insertion at 25% of heads."""
    inputs = adapter.encode(prompts)
    locations = all_locations(adapter.n_layers, adapter.n_heads)
    chosen = locations[torch.randperm(len(locations), generator=torch.Generator().manual_seed(0))]
    chosen = chosen[: max(1, len(locations) // 4)]
    vectors = torch.randn(len(chosen), adapter.head_dim)
    variants: dict[str, Callable[[], AbstractContextManager[Any]]] = {
        "plain": nullcontext,
        "capture": lambda: capturing(adapter),
        "insert": lambda: inserting(adapter, chosen, vectors),
    }

    def forward(context: Callable[[], AbstractContextManager[Any]]) -> None:
        with torch.inference_mode(), context():
            adapter.model(**inputs)

    for context in variants.values():  # warm-up
        forward(context)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, context in variants.items():
            samples[name].append(_time(lambda: forward(context)))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    minima = {name: min(values) for name, values in samples.items()}
    return {
        "seq": int(inputs["input_ids"].shape[1]),
        "heads": int(len(locations)),
        "inserted": int(len(chosen)),
        "plain_ms": medians["plain"] * 1e3,
        "capture_ratio": medians["capture"] / medians["plain"],
        "insert_ratio": medians["insert"] / medians["plain"],
        "capture_ratio_min": minima["capture"] / minima["plain"],
        "insert_ratio_min": minima["insert"] / minima["plain"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cases: list[tuple[str, Callable[[], ModelAdapter], list[Prompt], int]] = [
        (family, lambda family=family: tiny_adapter(family), _prompts(family, 8), args.repeats)
        for family in TINY_FAMILIES
    ]
    cases.append(("llama (long)", lambda: tiny_adapter("llama"), _prompts("llama", 200), args.repeats))
    cases.append(("smollm2-geometry", _smollm2_geometry, _prompts("llama", 48), max(3, args.repeats // 3)))

    rows = []
    print(f"batch {BATCH}, {args.threads} thread(s); time ratios vs plain: median (and min) over repeats")
    print(f"{'model':<18} {'seq':>5} {'heads':>6} {'reps':>5} {'plain ms':>9} {'capture x':>15} {'insert 25% x':>15}")
    for name, build, prompts, repeats in cases:
        row = {"model": name, "repeats": repeats, **measure(build(), prompts, repeats)}
        rows.append(row)
        capture = f"{row['capture_ratio']:.3f} ({row['capture_ratio_min']:.3f})"
        insert = f"{row['insert_ratio']:.3f} ({row['insert_ratio_min']:.3f})"
        print(
            f"{name:<18} {row['seq']:>5} {row['heads']:>6} {repeats:>5} {row['plain_ms']:>9.2f} {capture:>15} {insert:>15}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
