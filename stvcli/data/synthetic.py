"""Small synthetic data sets written to disk (JSONL + PNG, image folders, MTV episodes).

Deterministic from a seed; used by the tests so every loader, sampler and metric runs
offline, and handy for trying the CLI without downloads. Images are tiny coloured
squares with seeded noise, so no two images are identical.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 220, 40),
    "purple": (140, 50, 170),
    "orange": (240, 140, 30),
}
IMAGE_SIZE = 16


def draw_image(colour: str, seed: int, size: int = IMAGE_SIZE) -> Image.Image:
    """A square of one colour with seeded pixel noise (unique per seed)."""
    base = np.array(COLOURS.get(colour, _colour_of(colour)), dtype=np.int16)
    noise = np.random.default_rng(seed).integers(-25, 26, size=(size, size, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def _colour_of(name: str) -> tuple[int, int, int]:
    rng = random.Random(name)
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _write_jsonl(path: Path, records: Iterable[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path


def write_vqa_jsonl(directory: str | Path, n: int = 20, seed: int = 0, name: str = "vqa.jsonl") -> Path:
    """``n`` colour questions with 10 answers each (7-10 say the colour); images under ``images/``."""
    directory = Path(directory)
    rng = random.Random(seed)
    records = []
    for i in range(n):
        colour = rng.choice(sorted(COLOURS))
        relative = f"images/vqa_{seed}_{i:04d}.png"
        _save(draw_image(colour, seed * 100_003 + i), directory / relative)
        agreeing = rng.randint(7, 10)
        answers = [colour] * agreeing + [f"dark {colour}"] * (10 - agreeing)
        rng.shuffle(answers)
        records.append({"question_id": i, "image": relative, "question": "What colour is the picture?", "answers": answers})
    return _write_jsonl(directory / name, records)


def write_classification_imagefolder(
    directory: str | Path,
    classes: Sequence[str] = ("red", "green", "blue"),
    per_class: int = 4,
    seed: int = 0,
    splits: Sequence[str] | None = None,
) -> Path:
    """``directory/[split/]class/img_K.png``; every split gets ``per_class`` images per class."""
    directory = Path(directory)
    for s, split in enumerate(splits or [None]):
        root = directory / split if split else directory
        for c, label in enumerate(classes):
            for k in range(per_class):
                _save(draw_image(label, seed * 1_000_003 + s * 10_007 + c * 101 + k), root / label / f"img_{k}.png")
    return directory


def write_classification_jsonl(
    directory: str | Path,
    classes: Sequence[str] = ("red", "green", "blue"),
    per_class: int = 4,
    seed: int = 0,
    name: str = "classes.jsonl",
) -> Path:
    """Records ``{image, label}`` with images under ``images/``."""
    directory = Path(directory)
    records = []
    for c, label in enumerate(classes):
        for k in range(per_class):
            relative = f"images/{label}_{seed}_{k}.png"
            _save(draw_image(label, seed * 1_000_003 + c * 101 + k), directory / relative)
            records.append({"image": relative, "label": label})
    return _write_jsonl(directory / name, records)


def write_episodes(
    directory: str | Path,
    classes: Sequence[str] = ("red", "green", "blue", "yellow"),
    per_class: int = 3,
    seed: int = 0,
    name: str = "episodes.json",
) -> Path:
    """MTV-format episodes: one per image of every class, ``{pos, neg, query, pos_label, neg_label}``
    with ``./images/...`` paths relative to ``directory``."""
    directory = Path(directory)
    rng = random.Random(seed)
    paths = {label: [f"./images/{label}_{seed}_{k}.png" for k in range(per_class)] for label in classes}
    for c, label in enumerate(classes):
        for k, relative in enumerate(paths[label]):
            _save(draw_image(label, seed * 1_000_003 + c * 101 + k + 50), directory / relative)
    episodes = []
    for label in classes:
        for query in paths[label]:
            negative = rng.choice([other for other in classes if other != label])
            episodes.append(
                {
                    "pos": rng.choice([p for p in paths[label] if p != query]),
                    "neg": rng.choice(paths[negative]),
                    "query": query,
                    "pos_label": label,
                    "neg_label": negative,
                }
            )
    path = directory / name
    path.write_text(json.dumps(episodes), encoding="utf-8")
    return path


def write_text_jsonl(directory: str | Path, pairs: Sequence[tuple[str, str]], name: str = "text.jsonl") -> Path:
    """Text-only records ``{question, answers: [answer]}``."""
    records = [{"question_id": i, "question": q, "answers": [a]} for i, (q, a) in enumerate(pairs)]
    return _write_jsonl(Path(directory) / name, records)


ANTONYMS: tuple[tuple[str, str], ...] = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("light", "dark"),
    ("happy", "sad"), ("early", "late"), ("open", "closed"), ("full", "empty"), ("high", "low"),
    ("old", "new"), ("rich", "poor"), ("strong", "weak"), ("wet", "dry"), ("hard", "soft"), ("loud", "quiet"),
)  # fmt: skip
