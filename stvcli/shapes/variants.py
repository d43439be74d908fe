"""Items of the shapes tasks, generated in memory from the shapes world.

Four families of variants, all deterministic in (seed, split, index):

- attribute naming (``color``, ``shape``, ``size``, ``position``, ``count``): the answer
  is the attribute's own word; prompts carry no instruction, so only the
  demonstrations say WHICH attribute is asked;
- relabelled naming (``color-swap``, ``fruit``, ``animal``, ``fruit-noisy``): a fixed,
  deliberately unnatural map from attribute values to label words (red -> " lemon"),
  which only demonstrations reveal; ``fruit-noisy`` also flips a quarter of the
  SUPPORT labels, so a few shots mislead and many shots average the noise out;
- distractor-noisy naming (``shape-noisy``, ``position-noisy``): 40% of the SUPPORT
  demonstrations answer the scene's COLOUR instead, so a few shots leave it open
  which attribute is asked and only the majority over many shots settles it;
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
from dataclasses import dataclass, field
from functools import partial

from stvcli.data.episodes import make_episode
from stvcli.data.types import Item
from stvcli.shapes.world import (
    ATTRIBUTE_VALUES,
    COLOURS,
    COUNT_WORDS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    draw,
    sample_scene,
    scene_key,
    scenes,
    split_rng,
)

SPLITS = ("support", "test")


# ---------------------------------------------------------------------- naming variants
@dataclass(frozen=True)
class Variant:
    """A naming task: which attribute, which scenes, which label words, how noisy."""

    name: str
    attribute: str
    counts: tuple[int, ...] = (1,)
    relabel: dict[str, str] | None = field(default=None, hash=False)
    support_noise: float = 0.0  # fraction of support labels replaced by a wrong label
    # where wrong support labels come from: None = another label of this attribute;
    # an attribute name = the scene's own word for THAT attribute (a demonstration that
    # answers the wrong question, so few shots leave the asked attribute ambiguous)
    noise_attribute: str | None = None

    def values(self) -> tuple[str, ...]:
        """The attribute's possible values in these scenes."""
        if self.attribute == "count":
            return tuple(COUNT_WORDS[c] for c in sorted(set(self.counts)))
        return ATTRIBUTE_VALUES[self.attribute]

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
        Variant("color", "colour", counts=(1, 1, 2, 3)),
        Variant("shape", "shape", counts=(1, 1, 2, 3)),
        Variant("size", "size"),
        Variant("position", "position"),
        Variant("count", "count", counts=(1, 2, 3)),
        Variant("color-swap", "colour", counts=(1, 1, 2, 3), relabel=SWAPPED_COLOUR),
        Variant("fruit", "colour", counts=(1, 1, 2, 3), relabel=FRUIT_OF_COLOUR),
        Variant("fruit-noisy", "colour", counts=(1, 1, 2, 3), relabel=FRUIT_OF_COLOUR, support_noise=0.25),
        Variant("animal", "shape", counts=(1, 1, 2, 3), relabel=ANIMAL_OF_SHAPE),
        Variant("shape-noisy", "shape", counts=(1, 1, 2, 3), support_noise=0.4, noise_attribute="colour"),
        Variant("position-noisy", "position", support_noise=0.4, noise_attribute="colour"),
    )
}


def single_token_labels() -> tuple[str, ...]:
    """Every word a shapes task must answer with in ONE token (naming labels, letters)."""
    labels = {label for variant in VARIANTS.values() for label in variant.labels()}
    return (*sorted(labels), "A", "B")


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
            if variant.noise_attribute:
                label = scene.attribute(variant.noise_attribute) or clean
            else:
                label = noise_rng.choice([other for other in labels if other != clean])
        items.append(
            Item(
                uid=f"shapes-{variant.name}-{seed}-{split}-{index}",
                answers=(label,),
                images=(partial(draw, scene),),
                fields={
                    "scene": scene,
                    "attribute": variant.attribute,
                    "clean_answer": clean,
                    "image_keys": (scene_key(scene),),
                },
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
                fields={
                    "scene": scene,
                    "attribute": asked,
                    "question_id": f"{split}-{index}",
                    "image_keys": (scene_key(scene),),
                },
            )
        )
    return items


def _askable(scene: Scene) -> list[str]:
    if scene.count == 1:
        return list(QUESTIONS)
    if scene.empty:
        return ["colour", "shape", "position"]  # unanswerable: there is no shape
    return ["colour", "shape", "count"]  # several shapes have no one position


def _annotate(scene: Scene, attribute: str, rng: random.Random) -> tuple[str, ...]:
    """Ten answers, canonical first: the majority answer is always the true one."""
    if scene.empty:
        return (UNANSWERABLE,) * _ANNOTATORS
    truth = scene.attribute(attribute)
    assert truth is not None
    alternatives = [v for v in ATTRIBUTE_VALUES[attribute] if v != truth]
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


# ---------------------------------------------------------------------- episodes
EPISODE_SUBJECT = "shape"  # "What is the type of shape in the image? A.red circle B.blue cross"


def episode_classes(split: str) -> list[str]:
    """Positive classes ("red circle") of ``split``'s episodes: a checkerboard over
    colour x shape, so the splits share no positive class but every colour and shape."""
    _check_split(split)
    parity = 0 if split == "support" else 1
    return [
        f"{colour} {shape}"
        for ci, colour in enumerate(COLOURS)
        for si, shape in enumerate(SHAPES)
        if (ci + si) % 2 == parity
    ]


def all_classes() -> list[str]:
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def episode_items(split: str, n: int, seed: int = 0) -> list[Item]:
    """``n`` MTV-style 2-way 1-shot episodes (``stvcli.data.episodes.make_episode``
    fields): the positive class is one of ``split``'s, the negative any other class;
    one support image per class, then a query of the positive class."""
    rng = split_rng(seed, f"episode:{split}")
    positives, everything = episode_classes(split), all_classes()
    items = []
    for index in range(n):
        positive = rng.choice(positives)
        negative = rng.choice([name for name in everything if name != positive])
        pos_scene, neg_scene, query = (_class_scene(name, rng) for name in (positive, negative, positive))
        episode = make_episode(
            uid=f"shapes-episode-{seed}-{split}-{index}",
            query=partial(draw, query),
            query_key=scene_key(query),
            positive=positive,
            classes=[(positive, [partial(draw, pos_scene)]), (negative, [partial(draw, neg_scene)])],
            seed=seed,
        )
        episode.fields["scene"] = query
        items.append(episode)
    return items


def _class_scene(name: str, rng: random.Random) -> Scene:
    colour, shape = name.split()
    return Scene(1, colour, shape, rng.choice(SIZES), rng.choice(POSITIONS), rng.getrandbits(32))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

