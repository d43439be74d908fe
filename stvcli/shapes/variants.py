"""Items of the shapes tasks, generated in memory from the shapes world.

Four families of variants, all deterministic in (seed, split, index):

- attribute naming (``colour``, ``shape``, ``size``, ``position``, ``count``): the answer
  is the attribute's own word; prompts carry no instruction, so only the
  demonstrations say WHICH attribute is asked;
- relabelled naming (``colour-swap``, ``fruit``, ``animal``, ``fruit-noisy``): a fixed,
  deliberately unnatural map from attribute values to label words (red -> " lemon"),
  which only demonstrations reveal; ``fruit-noisy`` also flips a quarter of the
  SUPPORT labels, so a few shots mislead and many shots average the noise out;
- VQA: a question per image with 10 simulated annotator answers (mostly the true
  value, some synonyms and mistakes); every question about an empty image is
  "unanswerable";
- episodes (MTV style, 2-way 1-shot): a positive and a negative class (colour + shape,
  "red circle"), one support image of each, a query of the positive class, option
  letters by coin flip; support and test episodes use disjoint positive classes.

Support and test splits come from different random streams (``world.split_rng``).
Support labels may be noisy; test labels never are.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from stvcli.data.types import Item
from stvcli.shapes.world import COLOURS, POSITIONS, SHAPES, SIZES, Scene, draw, sample_scene, scenes, split_rng

SPLITS = ("support", "test")


# ---------------------------------------------------------------------- naming variants
@dataclass(frozen=True)
class Variant:
    """A naming task: which attribute, which scenes, which label words, how noisy."""

    name: str
    attribute: str
    counts: tuple[int, ...] = (1,)
    relabel: dict[str, str] | None = field(default=None, hash=False)
    support_noise: float = 0.0  # fraction of support labels replaced by another label

    def values(self) -> tuple[str, ...]:
        """The attribute's possible values in these scenes."""
        if self.attribute == "count":
            from stvcli.shapes.world import COUNT_WORDS

            return tuple(COUNT_WORDS[c] for c in sorted(set(self.counts)))
        return {"colour": tuple(COLOURS), "shape": SHAPES, "size": SIZES, "position": POSITIONS}[self.attribute]

    def labels(self) -> tuple[str, ...]:
        """Every label word this variant answers with (each must be one token)."""
        return tuple(self.label_of(v) for v in self.values())

    def label_of(self, value: str) -> str:
        return self.relabel[value] if self.relabel else value


# Unnatural on purpose: no label is the value's usual association.
FRUIT_OF_COLOUR = {"red": "lemon", "green": "plum", "blue": "cherry", "yellow": "grape", "purple": "banana", "orange": "apple"}
ANIMAL_OF_SHAPE = {"circle": "dog", "square": "fish", "triangle": "cat", "cross": "bird"}
SWAPPED_COLOUR = {"red": "green", "green": "blue", "blue": "yellow", "yellow": "purple", "purple": "orange", "orange": "red"}

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("colour", "colour", counts=(1, 1, 2, 3)),
        Variant("shape", "shape", counts=(1, 1, 2, 3)),
        Variant("size", "size"),
        Variant("position", "position"),
        Variant("count", "count", counts=(1, 2, 3)),
        Variant("colour-swap", "colour", counts=(1, 1, 2, 3), relabel=SWAPPED_COLOUR),
        Variant("fruit", "colour", counts=(1, 1, 2, 3), relabel=FRUIT_OF_COLOUR),
        Variant("fruit-noisy", "colour", counts=(1, 1, 2, 3), relabel=FRUIT_OF_COLOUR, support_noise=0.25),
        Variant("animal", "shape", counts=(1, 1, 2, 3), relabel=ANIMAL_OF_SHAPE),
    )
}


def naming_items(variant: Variant, split: str, n: int, seed: int = 0) -> list[Item]:
    """``n`` items of a naming variant: one image each, the label as the only answer."""
    _check_split(split)
    noise_rng = split_rng(seed, f"{variant.name}:{split}:noise")
    labels = variant.labels()
    items = []
    for index, scene in enumerate(scenes(seed, f"naming:{split}", n, counts=variant.counts)):
        value = scene.attribute(variant.attribute)
        assert value is not None
        clean = variant.label_of(value)
        label = clean
        if split == "support" and noise_rng.random() < variant.support_noise:
            label = noise_rng.choice([other for other in labels if other != clean])
        items.append(
            Item(
                uid=f"shapes-{variant.name}-{seed}-{split}-{index}",
                answers=(label,),
                images=(partial(draw, scene),),
                fields={"scene": scene, "attribute": variant.attribute, "clean_answer": clean},
            )
        )
    return items


# ---------------------------------------------------------------------- VQA
UNANSWERABLE = "unanswerable"
QUESTIONS: dict[str, str] = {
    "colour": "What color is the shape?",
    "shape": "What shape is it?",
    "size": "Is the shape small or big?",
    "position": "Where is the shape?",
    "count": "How many shapes are there?",
}
# answers some annotators give instead of the canonical word
_SYNONYMS = {"purple": "violet", "big": "large", "circle": "round", "square": "box", "cross": "plus", "two": "2", "three": "3", "one": "1"}
_ANNOTATORS = 10
_P_CANONICAL = 0.8
_P_SYNONYM = 0.12  # the rest are mistakes (another value of the same attribute)


def vqa_items(split: str, n: int, seed: int = 0) -> list[Item]:
    """``n`` VQA items; about one image in six is empty (all answers "unanswerable")."""
    _check_split(split)
    rng = split_rng(seed, f"vqa:{split}")
    items = []
    for index in range(n):
        scene = sample_scene(rng, counts=(0, 1, 1, 1, 2, 3))
        asked = rng.choice(_askable(scene))
        answers = _annotate(scene, asked, rng)
        items.append(
            Item(
                uid=f"shapes-vqa-{seed}-{split}-{index}",
                question=QUESTIONS[asked],
                answers=answers,
                images=(partial(draw, scene),),
                fields={"scene": scene, "attribute": asked, "question_id": f"{split}-{index}"},
            )
        )
    return items


def _askable(scene: Scene) -> list[str]:
    if scene.count == 1:
        return list(QUESTIONS)
    return ["colour", "shape", "count"]  # an empty image may be asked anything of these


def _annotate(scene: Scene, attribute: str, rng: random.Random) -> tuple[str, ...]:
    """Ten answers, canonical first: the majority answer is always the true one."""
    if scene.empty:
        return (UNANSWERABLE,) * _ANNOTATORS
    truth = scene.attribute(attribute)
    assert truth is not None
    alternatives = [v for v in _attribute_values(attribute) if v != truth]
    others = []
    for _ in range(_ANNOTATORS - 1):
        draw_ = rng.random()
        if draw_ < _P_CANONICAL or (draw_ < _P_CANONICAL + _P_SYNONYM and truth not in _SYNONYMS):
            others.append(truth)
        elif draw_ < _P_CANONICAL + _P_SYNONYM:
            others.append(_SYNONYMS[truth])
        else:
            others.append(rng.choice(alternatives))
    return (truth, *others)


def _attribute_values(attribute: str) -> Sequence[str]:
    return {"colour": list(COLOURS), "shape": SHAPES, "size": SIZES, "position": POSITIONS, "count": ["one", "two", "three"]}[
        attribute
    ]


# ---------------------------------------------------------------------- episodes
EPISODE_QUESTION = "What is the type of shape in the image?"
LETTERS = ("A", "B")


def episode_classes(split: str) -> list[str]:
    """Class names ("red circle") whose episodes belong to ``split``: a checkerboard
    over colour x shape, so every colour and every shape occurs in both splits."""
    _check_split(split)
    parity = 0 if split == "support" else 1
    return [
        f"{colour} {shape}"
        for ci, colour in enumerate(COLOURS)
        for si, shape in enumerate(SHAPES)
        if (ci + si) % 2 == parity
    ]


def episode_items(split: str, n: int, seed: int = 0) -> list[Item]:
    """``n`` 2-way 1-shot episodes; the positive class is the query's.

    Fields: ``pos_label``, ``neg_label``, ``pos_image``, ``neg_image`` (lazy images),
    ``options`` (the class names as options A and B) and ``target`` (the letter).
    The query image is the item's only image.
    """
    rng = split_rng(seed, f"episode:{split}")
    classes = episode_classes(split)
    items = []
    for index in range(n):
        positive, negative = rng.sample(classes, 2)
        pos_image, neg_image, query = (_class_scene(name, rng) for name in (positive, negative, positive))
        options = (positive, negative) if rng.random() < 0.5 else (negative, positive)
        letter = LETTERS[options.index(positive)]
        items.append(
            Item(
                uid=f"shapes-episode-{seed}-{split}-{index}",
                question=EPISODE_QUESTION,
                answers=(positive,),
                images=(partial(draw, query),),
                fields={
                    "pos_label": positive,
                    "neg_label": negative,
                    "pos_image": partial(draw, pos_image),
                    "neg_image": partial(draw, neg_image),
                    "options": options,
                    "target": letter,
                    "scene": query,
                },
            )
        )
    return items


def _class_scene(name: str, rng: random.Random) -> Scene:
    colour, shape = name.split()
    return Scene(1, colour, shape, rng.choice(SIZES), rng.choice(POSITIONS), rng.getrandbits(32))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

