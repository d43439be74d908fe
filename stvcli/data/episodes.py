"""Classification episodes as in MTV: N-way (2 in MTV), k support images per class (1 in MTV).

An episode Item holds the query image in ``images`` and, in ``fields``:
``choices`` (class names in option-letter order), ``support`` ((image, letter) pairs in
letter order: A's images, then B's, ...), ``label`` (the positive class), ``target``
(the positive class's letter) and ``image_keys`` (the query image's identity).

Letters are assigned per episode from the seed and the episode's uid (a coin flip for
2-way), so an episode reads the same whether it is a query or a demonstration.
Episodes come from MTV's own files (``EpisodeFileSource``) or are drawn from labelled
images (``build_episodes``).
"""

from __future__ import annotations

import string
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stvcli.data.images import FileImage, check_files_exist, image_keys, resolve_path
from stvcli.data.sampling import seeded_rng
from stvcli.data.sources import RecordFileSource
from stvcli.data.types import ImageRef, Item, TaskKind
from stvcli.errors import DataError

LETTERS = string.ascii_uppercase


def letter_order(seed: int, uid: str, n_classes: int) -> list[int]:
    """A permutation: entry i = which class (0 = the positive) gets letter i."""
    order = list(range(n_classes))
    seeded_rng(seed, "letters", uid).shuffle(order)
    return order


def make_episode(
    uid: str,
    query: ImageRef,
    query_key: str | None,
    positive: str,
    classes: Sequence[tuple[str, Sequence[ImageRef]]],
    seed: int,
) -> Item:
    """An episode Item; ``classes[0]`` is the positive class with its support images."""
    order = letter_order(seed, uid, len(classes))
    choices = tuple(classes[i][0] for i in order)
    support = tuple((ref, LETTERS[slot]) for slot, i in enumerate(order) for ref in classes[i][1])
    letter = LETTERS[order.index(0)]
    fields: dict[str, Any] = {
        "choices": choices,
        "support": support,
        "label": positive,
        "target": letter,
        "image_keys": (query_key,) if query_key is not None else None,
    }
    return Item(uid=uid, question=None, answers=(letter,), images=(query,), fields=fields)


@dataclass
class EpisodeFileSource(RecordFileSource):
    """MTV's episode files: a JSON list of {pos, neg, query, pos_label, neg_label} with
    image paths relative to --image-root (default: the file's folder)."""

    holds_episodes: bool = True

    def items(self, split: str | None, kind: TaskKind) -> list[Item]:
        if kind != "episode":
            raise DataError(f"{self.label} holds MTV episodes; use an episode task (flowers, cub, dtd or episode)")
        items, paths = [], []
        for index, record in enumerate(self.records):
            missing = [key for key in ("pos", "neg", "query", "pos_label", "neg_label") if key not in record]
            if missing:
                where = self.where[index] if self.where else f"{self.label}: episode {index + 1}"
                raise DataError(f"{where} lacks {', '.join(missing)}; each episode needs pos, neg, query, pos_label, neg_label")
            pos, neg, query = (FileImage(resolve_path(str(record[key]), self.base)) for key in ("pos", "neg", "query"))
            paths += [pos.path, neg.path, query.path]
            classes = [(str(record["pos_label"]), [pos]), (str(record["neg_label"]), [neg])]
            uid = f"{self.label}/{index}"
            items.append(make_episode(uid, query, query.key, str(record["pos_label"]), classes, self.options.seed))
        check_files_exist(paths, self.label)
        return items


def split_classes(classes: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """Seeded partition of class names: (support positives, evaluation positives).

    The evaluation side gets half (rounded down, at least one), the support side the rest.
    """
    ordered = sorted(set(classes))
    if len(ordered) < 2:
        raise DataError(f"episodes need at least 2 classes with disjoint support/evaluation positives; found {len(ordered)}")
    seeded_rng(seed, "classes").shuffle(ordered)
    n_eval = max(1, len(ordered) // 2)
    return sorted(ordered[n_eval:]), sorted(ordered[:n_eval])


def build_episodes(
    pool: Sequence[Item],
    positives: Sequence[str],
    seed: int,
    ways: int = 2,
    shots: int = 1,
    tag: str = "",
) -> list[Item]:
    """One episode per image of a positive class in ``pool`` (labelled classification items).

    Support images of the positive class exclude the query; negative classes are drawn
    from every other class of the pool with at least ``shots`` images. Classes with too
    few images for a query plus ``shots`` supports give no episodes.
    """
    by_class: dict[str, list[Item]] = defaultdict(list)
    for item in pool:
        by_class[item.fields["label"]].append(item)
    rng = seeded_rng(seed, "episodes", tag)
    episodes = []
    for positive in sorted(set(positives)):
        members = by_class.get(positive, [])
        negatives = sorted(c for c, its in by_class.items() if c != positive and len(its) >= shots)
        if len(members) < shots + 1 or len(negatives) < ways - 1:
            continue
        for query in members:
            others = [m for m in members if not _same_image(m, query)]
            if len(others) < shots:
                continue
            classes = [(positive, [m.images[0] for m in rng.sample(others, shots)])]
            for negative in rng.sample(negatives, ways - 1):
                classes.append((negative, [m.images[0] for m in rng.sample(by_class[negative], shots)]))
            keys = image_keys(query)
            episodes.append(make_episode(f"ep/{query.uid}", query.images[0], keys[0] if keys else None, positive, classes, seed))
    return episodes


def _same_image(a: Item, b: Item) -> bool:
    keys_a, keys_b = image_keys(a), image_keys(b)
    if keys_a is not None and keys_b is not None:
        return keys_a == keys_b
    return a.uid == b.uid
