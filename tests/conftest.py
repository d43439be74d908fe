"""Shared fixtures. Keep this small; put suite-specific fixtures next to their tests.

- ``tiny``: ``tiny(family, seed=0)`` -> a session-cached tiny adapter (see
  ``stvcli.testing.tiny``). Tests must not mutate its weights; build a fresh one with
  ``stvcli.testing.tiny.tiny_adapter`` when they need to.
- One torch thread (override with STV_TEST_THREADS): the tiny models are far faster
  single-threaded, and intra-op threads thrash on a busy 2-core CI machine (~10x).
- ``tiny_prompts``: ``tiny_prompts(family)`` -> 3 prompts of different lengths (with 1, 0
  and 2 images for vision families, so batches are left padded and mix image counts).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

torch.set_num_threads(int(os.environ.get("STV_TEST_THREADS", "1")))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@pytest.fixture(scope="session")
def tiny() -> Callable[..., object]:
    from stvcli.testing.tiny import tiny_adapter

    cache: dict[tuple[str, int], object] = {}

    def get(family: str, seed: int = 0):
        if (family, seed) not in cache:
            cache[(family, seed)] = tiny_adapter(family, seed)
        return cache[(family, seed)]

    return get


@pytest.fixture(scope="session")
def tiny_prompts() -> Callable[[str], list]:
    from stvcli.prompt import Prompt
    from stvcli.testing.tiny import VISION_FAMILIES, tiny_image

    def make(family: str) -> list[Prompt]:
        if family in VISION_FAMILIES:
            return [
                Prompt("Question: what colour is <image>? Answer:", (tiny_image(1),)),
                Prompt("Input: hot Output:"),
                Prompt("<image> the cat and <image> the dog are one two three. Answer:", (tiny_image(2), tiny_image(3, (40, 24)))),
            ]
        return [
            Prompt("Question: what colour is the fox? Answer:"),
            Prompt("Input: hot Output:"),
            Prompt("the cat and the dog are one two three four five six seven. Answer:"),
        ]

    return make
