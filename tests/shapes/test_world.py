"""The shapes world's scenes and drawings: deterministic, and showing what they say."""

from __future__ import annotations

import numpy as np
import pytest

from stvcli.shapes.world import (
    COLOURS,
    DESCRIPTION_WORDS,
    IMAGE_SIZE,
    Scene,
    draw,
    sample_scene,
    scenes,
    split_rng,
)

ALL_COUNTS = (0, 1, 1, 1, 2, 3)


def _object_mask(image: np.ndarray) -> np.ndarray:
    """Pixels that are not background: far from the (light, near-uniform) border colour."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(float)
    background = np.median(border, axis=0)
    return np.abs(image.astype(float) - background).sum(-1) > 90


def _components(mask: np.ndarray) -> int:
    """Number of 4-connected components of a boolean mask."""
    seen = np.zeros_like(mask)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        stack = [start]
        seen[start] = True
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return count


def test_drawing_is_deterministic() -> None:
    first = [np.asarray(draw(s)) for s in scenes(3, "support", 20, counts=ALL_COUNTS)]
    again = [np.asarray(draw(s)) for s in scenes(3, "support", 20, counts=ALL_COUNTS)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) for image in first)


def test_different_seeds_give_different_scenes() -> None:
    a = list(scenes(0, "support", 10, counts=ALL_COUNTS))
    b = list(scenes(1, "support", 10, counts=ALL_COUNTS))
    assert a != b


def test_noise_makes_equal_attributes_differ() -> None:
    scene = Scene(1, "red", "circle", "big", "top", seed=1)
    other = Scene(1, "red", "circle", "big", "top", seed=2)
    assert not np.array_equal(np.asarray(draw(scene)), np.asarray(draw(other)))


_CHECKED = list(scenes(7, "check", 120, counts=ALL_COUNTS))


@pytest.mark.parametrize("index", range(120))
def test_pixels_show_the_scene(index: int) -> None:
    scene = _CHECKED[index]
    image = np.asarray(draw(scene))
    mask = _object_mask(image)
    if scene.empty:
        assert mask.sum() == 0
        return
    # colour: the mean object colour is nearest to the scene's colour
    mean = image[mask].astype(float).mean(0)
    nearest = min(COLOURS, key=lambda name: np.abs(np.array(COLOURS[name]) - mean).sum())
    assert nearest == scene.colour
    assert _components(mask) == scene.count
    if scene.count == 1:
        ys, xs = np.nonzero(mask)
        cy, cx = ys.mean(), xs.mean()
        expected = {"top": cy < 13, "bottom": cy > 18, "left": cx < 13, "right": cx > 18}
        assert expected[scene.position], (scene, cy, cx)
        extent = max(np.ptp(ys), np.ptp(xs)) + 1
        assert (extent >= 12) if scene.size == "big" else (extent <= 11), (scene, extent)


def test_words_are_description_words() -> None:
    for scene in scenes(0, "support", 200, counts=ALL_COUNTS):
        words = scene.words()
        assert len(words) == 4 and set(words) <= set(DESCRIPTION_WORDS)
        if scene.count == 1:
            assert words == (scene.colour, scene.shape, scene.size, scene.position)


def test_scene_validation() -> None:
    with pytest.raises(ValueError):
        Scene(0, colour="red")
    with pytest.raises(ValueError):
        Scene(2, "red", "circle", "big", None)
    with pytest.raises(ValueError):
        Scene(1, "red", "circle", "big", None)
    with pytest.raises(ValueError):
        Scene(1, "magenta", "circle", "big", "top")


def test_sampling_covers_every_value() -> None:
    rng = split_rng(0, "coverage")
    drawn = [sample_scene(rng, counts=ALL_COUNTS) for _ in range(600)]
    assert {s.colour for s in drawn if s.colour} == set(COLOURS)
    assert {s.count for s in drawn} == {0, 1, 2, 3}
    assert {s.position for s in drawn if s.position} == {"top", "bottom", "left", "right"}
