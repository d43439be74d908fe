"""The shapes world: procedurally drawn 32x32 scenes, deterministic from a seed.

A scene holds 0 to 3 objects of one colour and one shape. A single object also has a
size (small, big) and a position (near the top, bottom, left or right edge); two or
three objects are small and scattered. Every scene is described by exactly four
words, one per image token of the shapes model (2x2 patches of 16 pixels):

    one object      colour shape size position     " red circle big top"
    2-3 objects     colour shape size count        " red circle small three"
    empty           nothing nothing nothing nothing

Positions are edges rather than quadrants so that every attribute value is ONE
space-prefixed token for the backbones ("top left" would be two). Drawing adds colour
jitter, position jitter, a random light background and pixel noise, all drawn from
the scene's own seed, so an image is a pure function of its scene.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 50),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 30),
    "purple": (135, 45, 175),
    "orange": (245, 135, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SIZES: tuple[str, ...] = ("small", "big")
POSITIONS: tuple[str, ...] = ("top", "bottom", "left", "right")
COUNT_WORDS: dict[int, str] = {0: "zero", 1: "one", 2: "two", 3: "three"}
EMPTY_WORD = "nothing"

#: The values of every attribute, as words.
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "size": SIZES,
    "position": POSITIONS,
    "count": (COUNT_WORDS[1], COUNT_WORDS[2], COUNT_WORDS[3]),
}

#: Every word an image token may stand for (the vision tower's regression targets).
DESCRIPTION_WORDS: tuple[str, ...] = (
    *COLOURS,
    *SHAPES,
    *SIZES,
    *POSITIONS,
    COUNT_WORDS[2],
    COUNT_WORDS[3],
    EMPTY_WORD,
)

_RADIUS = {"small": 4.5, "big": 8.0}
_SCATTERED_RADIUS = 3.5  # two or three objects
_EDGE_CENTRE = {"top": (16.0, 8.5), "bottom": (16.0, 23.5), "left": (8.5, 16.0), "right": (23.5, 16.0)}
_CENTRE_JITTER = 2.0
_COLOUR_JITTER = 18
_PIXEL_NOISE = 6.0


@dataclass(frozen=True)
class Scene:
    """What an image shows; ``seed`` fixes every drawing detail (jitter, noise)."""

    count: int
    colour: str | None = None
    shape: str | None = None
    size: str | None = None  # "small" for 2-3 objects, None when empty
    position: str | None = None  # only for one object
    seed: int = 0

    def __post_init__(self) -> None:
        if self.count == 0:
            if any(v is not None for v in (self.colour, self.shape, self.size, self.position)):
                raise ValueError("an empty scene has no attributes")
            return
        if not 1 <= self.count <= 3:
            raise ValueError(f"count must be 0..3, got {self.count}")
        if self.colour not in COLOURS or self.shape not in SHAPES or self.size not in SIZES:
            raise ValueError(f"bad scene attributes: {self}")
        if self.count == 1 and self.position not in POSITIONS:
            raise ValueError(f"one object needs a position in {POSITIONS}")
        if self.count > 1 and (self.position is not None or self.size != "small"):
            raise ValueError("several objects are small and have no single position")

    @property
    def empty(self) -> bool:
        return self.count == 0

    def attribute(self, name: str) -> str | None:
        """The value of ``colour``, ``shape``, ``size``, ``position`` or ``count`` (a word)."""
        if name == "count":
            return COUNT_WORDS[self.count]
        if name not in ATTRIBUTE_VALUES:
            raise KeyError(f"unknown attribute {name!r}")
        return getattr(self, name)

    def words(self) -> tuple[str, str, str, str]:
        """The four words the image tokens stand for (see the module docstring)."""
        if self.empty:
            return (EMPTY_WORD,) * 4
        assert self.colour and self.shape and self.size
        last = self.position if self.count == 1 else COUNT_WORDS[self.count]
        assert last is not None
        return (self.colour, self.shape, self.size, last)


def scene_key(scene: Scene) -> str:
    """An identity key of the scene's image (equal keys, equal pixels)."""
    return f"shapes:{scene.count}:{scene.colour}:{scene.shape}:{scene.size}:{scene.position}:{scene.seed}"


# ---------------------------------------------------------------------- sampling
def sample_scene(rng: random.Random, counts: tuple[int, ...] = (1,)) -> Scene:
    """A random scene whose object count is drawn uniformly from ``counts``."""
    count = rng.choice(counts)
    seed = rng.getrandbits(32)
    if count == 0:
        return Scene(0, seed=seed)
    colour = rng.choice(list(COLOURS))
    shape = rng.choice(SHAPES)
    if count == 1:
        return Scene(1, colour, shape, rng.choice(SIZES), rng.choice(POSITIONS), seed)
    return Scene(count, colour, shape, "small", None, seed)


def split_rng(seed: int, split: str) -> random.Random:
    """The generator of one split; different splits never share a stream."""
    return random.Random(f"stv-shapes:{seed}:{split}")


def scenes(
    seed: int,
    split: str,
    n: int,
    counts: tuple[int, ...] = (1,),
    keep: Callable[[Scene], bool] | None = None,
) -> Iterator[Scene]:
    """``n`` scenes of ``split`` (deterministic in ``seed`` and ``split``)."""
    rng = split_rng(seed, split)
    made = 0
    while made < n:
        scene = sample_scene(rng, counts)
        if keep is None or keep(scene):
            made += 1
            yield scene


# ---------------------------------------------------------------------- drawing
def draw(scene: Scene) -> Image.Image:
    """The 32x32 RGB image of ``scene`` (a pure function of the scene)."""
    rng = random.Random(scene.seed)
    background = tuple(rng.randint(200, 245) for _ in range(3))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    pen = ImageDraw.Draw(image)
    if not scene.empty:
        assert scene.colour and scene.shape and scene.size
        fill = _jitter_colour(COLOURS[scene.colour], rng)
        radius = _RADIUS[scene.size] if scene.count == 1 else _SCATTERED_RADIUS
        for centre in _centres(scene, rng):
            _draw_shape(pen, scene.shape, centre, radius * rng.uniform(0.9, 1.1), fill)
    pixels = np.asarray(image, dtype=np.float32)
    noise = np.random.default_rng(scene.seed).normal(0.0, _PIXEL_NOISE, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8), "RGB")


def _jitter_colour(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-_COLOUR_JITTER, _COLOUR_JITTER))) for c in rgb)  # type: ignore[return-value]


def _centres(scene: Scene, rng: random.Random) -> list[tuple[float, float]]:
    if scene.count == 1:
        assert scene.position
        x, y = _EDGE_CENTRE[scene.position]
        return [(x + rng.uniform(-_CENTRE_JITTER, _CENTRE_JITTER), y + rng.uniform(-_CENTRE_JITTER, _CENTRE_JITTER))]
    # several small objects: distinct cells of a 3x3 grid, jittered
    cells = rng.sample(range(9), scene.count)
    return [(5.5 + 10.5 * (c % 3) + rng.uniform(-1, 1), 5.5 + 10.5 * (c // 3) + rng.uniform(-1, 1)) for c in cells]


def _draw_shape(
    pen: ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], r: float, fill: tuple[int, int, int]
) -> None:
    x, y = centre
    if shape == "circle":
        pen.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif shape == "square":
        s = r * 0.85
        pen.rectangle((x - s, y - s, x + s, y + s), fill=fill)
    elif shape == "triangle":
        pen.polygon([(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)], fill=fill)
    elif shape == "cross":
        w = max(1.0, r * 0.35)
        pen.rectangle((x - r, y - w, x + r, y + w), fill=fill)
        pen.rectangle((x - w, y - r, x + w, y + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
