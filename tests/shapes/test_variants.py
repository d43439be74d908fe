"""Items of the shapes tasks: labels, splits, noise, VQA answers and episodes."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from stvcli.data.types import load_image
from stvcli.shapes.variants import (
    ANIMAL_OF_SHAPE,
    FRUIT_OF_COLOUR,
    SWAPPED_COLOUR,
    UNANSWERABLE,
    VARIANTS,
    episode_classes,
    episode_items,
    naming_items,
    vqa_items,
)
from stvcli.shapes.world import ATTRIBUTE_VALUES


def _pixels(item) -> str:
    return hashlib.sha1(np.asarray(load_image(item.images[0])).tobytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_naming_labels_follow_the_scene(name: str) -> None:
    variant = VARIANTS[name]
    for item in naming_items(variant, "test", 150):
        value = item.fields["scene"].attribute(variant.attribute)
        assert item.answers == (variant.label_of(value),) == (item.fields["clean_answer"],)


@pytest.mark.parametrize("name", ["color", "fruit", "vqa", "episode"])
def test_support_and_test_are_disjoint(name: str) -> None:
    from stvcli.shapes.tasks import shapes_items

    support, test = shapes_items(name, "support", 300), shapes_items(name, "test", 300)
    assert not {i.uid for i in support} & {i.uid for i in test}
    assert not {i.fields["image_keys"][0] for i in support} & {i.fields["image_keys"][0] for i in test}
    assert not {_pixels(i) for i in support} & {_pixels(i) for i in test}


def test_items_are_deterministic() -> None:
    a = naming_items(VARIANTS["fruit-noisy"], "support", 50, seed=4)
    b = naming_items(VARIANTS["fruit-noisy"], "support", 50, seed=4)
    assert [(i.uid, i.answers) for i in a] == [(i.uid, i.answers) for i in b]
    assert [_pixels(i) for i in a] == [_pixels(i) for i in b]
    c = naming_items(VARIANTS["fruit-noisy"], "support", 50, seed=5)
    assert [_pixels(i) for i in a] != [_pixels(i) for i in c]


@pytest.mark.parametrize("mapping", [FRUIT_OF_COLOUR, ANIMAL_OF_SHAPE, SWAPPED_COLOUR])
def test_relabellings_are_bijections_without_fixed_points(mapping: dict[str, str]) -> None:
    assert len(set(mapping.values())) == len(mapping)
    assert all(key != value for key, value in mapping.items())


def test_fruit_labels_are_one_fixed_permutation() -> None:
    seen: dict[str, set[str]] = {}
    for item in naming_items(VARIANTS["fruit"], "support", 300) + naming_items(VARIANTS["fruit"], "test", 300):
        seen.setdefault(item.fields["scene"].colour, set()).add(item.answer)
    assert seen == {colour: {fruit} for colour, fruit in FRUIT_OF_COLOUR.items()}


def test_label_noise_only_in_support() -> None:
    variant = VARIANTS["fruit-noisy"]
    support = naming_items(variant, "support", 800)
    wrong = [i for i in support if i.answer != i.fields["clean_answer"]]
    assert 0.18 < len(wrong) / len(support) < 0.32
    assert all(i.answer in variant.labels() for i in wrong)
    test = naming_items(variant, "test", 300)
    assert all(i.answer == i.fields["clean_answer"] for i in test)


@pytest.mark.parametrize("name", ["shape-noisy", "position-noisy"])
def test_distractor_noise_answers_the_colour_in_support_only(name: str) -> None:
    variant = VARIANTS[name]
    support = naming_items(variant, "support", 800)
    wrong = [i for i in support if i.answer != i.fields["clean_answer"]]
    assert 0.33 < len(wrong) / len(support) < 0.47
    assert all(i.answer == i.fields["scene"].colour for i in wrong)
    clean = [i for i in support if i not in wrong]
    assert all(i.answer == i.fields["scene"].attribute(variant.attribute) for i in clean)
    test = naming_items(variant, "test", 300)
    assert all(i.answer == i.fields["scene"].attribute(variant.attribute) for i in test)


def test_vqa_has_ten_answers_and_unanswerable_for_empty_images() -> None:
    items = vqa_items("test", 400)
    assert all(len(i.answers) == 10 for i in items)
    empty = [i for i in items if i.fields["scene"].empty]
    assert 30 < len(empty) < 110
    assert all(set(i.answers) == {UNANSWERABLE} for i in empty)
    for item in items:
        if item.fields["scene"].empty:
            continue
        truth = item.fields["scene"].attribute(item.fields["attribute"])
        assert item.answers[0] == truth
        assert Counter(item.answers).most_common(1)[0][0] == truth
        assert UNANSWERABLE not in item.answers
    assert {i.question for i in items} >= {"What color is the shape?", "How many shapes are there?"}


def test_vqa_annotators_disagree_sometimes() -> None:
    items = [i for i in vqa_items("support", 300) if not i.fields["scene"].empty]
    assert any(len(set(i.answers)) > 1 for i in items)


def test_episodes_have_disjoint_positive_classes() -> None:
    support, test = episode_classes("support"), episode_classes("test")
    assert len(support) == len(test) == 12 and not set(support) & set(test)
    for split, classes in (("support", support), ("test", test)):
        for episode in episode_items(split, 100):
            fields = episode.fields
            assert fields["label"] in classes
            assert fields["choices"][ord(episode.answer) - ord("A")] == fields["label"]
            assert [letter for _, letter in fields["support"]] == ["A", "B"]
            query = fields["scene"]
            assert f"{query.colour} {query.shape}" == fields["label"]
    letters = Counter(e.answer for e in episode_items("test", 200))
    assert 60 < letters["A"] < 140


def test_every_value_appears_in_the_test_split() -> None:
    for name, variant in VARIANTS.items():
        labels = {i.answer for i in naming_items(variant, "test", 200)}
        assert labels == set(variant.labels()), name
    assert set(ATTRIBUTE_VALUES) == {"colour", "shape", "size", "position", "count"}
