"""Episode construction: letters, support images, class partition."""

from collections import Counter

import pytest
from PIL import Image

from stvcli.data.episodes import build_episodes, letter_order, make_episode, split_classes
from stvcli.data.types import Item
from stvcli.errors import DataError


def labelled(n_classes: int = 4, per_class: int = 3) -> list[Item]:
    items = []
    for c in range(n_classes):
        for k in range(per_class):
            uid = f"c{c}/{k}"
            items.append(Item(uid, None, (f"class{c}",), (Image.new("RGB", (2, 2), (c, k, 0)),), {"label": f"class{c}", "image_keys": (uid,)}))
    return items


def test_coin_flip_is_seeded_per_episode_and_balanced():
    letters = [letter_order(0, f"ep{i}", 2).index(0) for i in range(400)]
    assert letters == [letter_order(0, f"ep{i}", 2).index(0) for i in range(400)]
    assert 160 < letters.count(0) < 240
    assert letters != [letter_order(1, f"ep{i}", 2).index(0) for i in range(400)]


def test_make_episode_orders_support_by_letter():
    a, b = Image.new("RGB", (2, 2), "red"), Image.new("RGB", (2, 2), "blue")
    flips = set()
    for i in range(20):
        ep = make_episode(f"e{i}", a, "q", "rose", [("rose", [a]), ("tulip", [b])], seed=0)
        letter = ep.answer
        flips.add(letter)
        assert ep.fields["choices"][ord(letter) - 65] == "rose"
        assert [l for _, l in ep.fields["support"]] == ["A", "B"]
        support_for_letter = dict((l, ref) for ref, l in ep.fields["support"])
        assert support_for_letter[letter] is a  # the positive's support image sits at its letter
    assert flips == {"A", "B"}


def test_split_classes_is_a_seeded_partition():
    classes = [f"c{i}" for i in range(7)]
    support, evaluation = split_classes(classes, seed=0)
    assert set(support) | set(evaluation) == set(classes) and not set(support) & set(evaluation)
    assert len(evaluation) == 3
    assert split_classes(classes, seed=0) == (support, evaluation)
    assert split_classes(classes, seed=1) != (support, evaluation)
    with pytest.raises(DataError, match="at least 2 classes"):
        split_classes(["only"], seed=0)


def test_build_episodes_one_per_positive_image():
    pool = labelled(4, 3)
    episodes = build_episodes(pool, ["class0", "class1"], seed=0)
    assert len(episodes) == 6
    by_uid = {item.uid: item for item in pool}
    for ep in episodes:
        query = by_uid[ep.uid.removeprefix("ep/")]
        positive = ep.fields["label"]
        assert positive in ("class0", "class1") and positive in ep.fields["choices"]
        assert ep.fields["choices"][ord(ep.answer) - 65] == positive
        pos_ref = dict((l, r) for r, l in ep.fields["support"])[ep.answer]
        assert pos_ref is not query.images[0]  # the support image of the positive is never the query
        assert ep.images == query.images
        assert ep.fields["image_keys"] == (query.uid,)
    assert [e.answer for e in build_episodes(pool, ["class0", "class1"], seed=0)] == [e.answer for e in episodes]


def test_build_episodes_n_way_k_shot_and_small_classes():
    pool = labelled(4, 3)
    episodes = build_episodes(pool, ["class0"], seed=0, ways=3, shots=2)
    assert len(episodes) == 3
    assert all(len(ep.fields["choices"]) == 3 and len(ep.fields["support"]) == 6 for ep in episodes)
    assert Counter(l for _, l in episodes[0].fields["support"]) == {"A": 2, "B": 2, "C": 2}
    # a class with one image cannot give a query plus a support image
    assert build_episodes(labelled(2, 1), ["class0"], seed=0) == []
