"""``load_task_data``: a task's support pool and evaluation items, disjoint and checked.

Split rule (docs/data.md):

1. ``--eval-data`` given: support from ``--data``, evaluation from ``--eval-data``.
   Otherwise both come from ``--data``.
2. Splits: ``--support-split`` / ``--eval-split``, else the spec's ``:split`` (for both
   roles when there is no ``--eval-data``), else the preset's, else ``train`` for
   support and the first of validation, val, valid, dev, test, testing for evaluation
   (never the split named for the other role while another exists).
3. Both roles on the same split of the same source (or a source without splits): a
   seeded split of it. Evaluation takes ``--eval-limit`` items (at most half) or half;
   support takes the rest. Duplicates (same image and question) stay on one side.
   Episode tasks split MTV episode files by positive class, and labelled images 50/50
   before drawing episodes.
4. Episode tasks drawn from labelled images: positive classes are partitioned by the
   seed (evaluation gets half), so support and evaluation episodes never share one.
5. Disjointness is enforced on the final sets by uid and by image/question identity:
   when EVERY evaluation (or support) item is also on the other side, that is a
   DataError; a partial overlap is dropped from the support pool and recorded.
6. ``--support-limit`` / ``--eval-limit`` then take seeded samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stvcli.data.episodes import build_episodes, split_classes
from stvcli.data.images import check_readable, image_keys
from stvcli.data.options import DataOptions, SourceSpec, parse_spec
from stvcli.data.sampling import seeded_rng
from stvcli.data.sources import Source, get_source_loader, open_source, source_prefixes
from stvcli.data.tasks import get_task
from stvcli.data.types import Item, Task, TaskData
from stvcli.errors import DataError

SUPPORT_SPLITS = ("train", "training")
EVAL_SPLITS = ("validation", "val", "valid", "dev", "test", "testing")


def load_task_data(options: DataOptions) -> TaskData:
    """Resolve, load, split and check a task's data; every problem is a one-line DataError."""
    task = get_task(options.task)
    data = options.data or getattr(task, "default_data", None)
    if not data:
        raise DataError(f"task {task.name} has no default data set; give one with --data (see docs/data.md)")
    spec = parse_spec(data, source_prefixes(), options.revision)
    if spec.kind == "plugin":
        loader = get_source_loader(spec.prefix or "")
        support, evaluation = (list(items) for items in loader(options))
        meta: dict[str, Any] = {"rule": "plugin", "support": {"source": spec.raw}, "evaluation": {"source": spec.raw}}
    else:
        support, evaluation, meta = _from_sources(task, spec, options)
    support, dropped = enforce_disjoint(support, evaluation, task.kind)
    support = subsample(support, options.support_limit, options.seed, "support")
    evaluation = subsample(evaluation, options.eval_limit, options.seed, "evaluation")
    if not support:
        raise DataError(f"no support items for task {task.name} in {_where(meta['support'])}; give more data with --data")
    if not evaluation:
        raise DataError(f"no evaluation items for task {task.name} in {_where(meta['evaluation'])}; give --eval-data")
    check_readable(support[:1] + evaluation[:1])
    meta["support"]["n"], meta["evaluation"]["n"] = len(support), len(evaluation)
    meta.update(
        data=spec.raw,
        eval_data=options.eval_data,
        task=task.name,
        kind=task.kind,
        seed=options.seed,
        dropped_overlap=dropped,
        variant=getattr(task, "variant", None) if task.metric == "vqa_accuracy" else None,
    )
    return TaskData(task=task, support=support, evaluation=evaluation, source=meta)


def _where(side: dict[str, Any]) -> str:
    where = side["source"] + (f":{side['split']}" if side.get("split") else "")
    skipped = side.get("skipped")
    return where + (f" ({skipped} rows without answers or a label were skipped)" if skipped else "")


def check_support_size(data: TaskData, shots: int, queries_from_support: bool = True) -> None:
    """Fail early when the support pool cannot give ``shots`` demonstrations per query."""
    need = shots + 1 if queries_from_support else shots
    if len(data.support) < need:
        raise DataError(
            f"the support pool has {len(data.support)} items; {shots} shots need at least {need} "
            "(lower --shots or give more support data)"
        )


# ----------------------------------------------------------------------------- sources and splits


def _from_sources(task: Task, spec: SourceSpec, options: DataOptions) -> tuple[list[Item], list[Item], dict[str, Any]]:
    support_source = open_source(spec, options)
    if options.eval_data:
        eval_spec = parse_spec(options.eval_data, source_prefixes(), options.revision)
        if eval_spec.kind == "plugin":
            raise DataError(f"--eval-data {eval_spec.raw}: a registered source gives both sets; pass it as --data")
        same = (eval_spec.kind, eval_spec.location, eval_spec.revision) == (spec.kind, spec.location, spec.revision)
        eval_source = support_source if same else open_source(eval_spec, options)
        want_support, want_eval = options.support_split or spec.split, options.eval_split or eval_spec.split
    else:
        eval_source, same = support_source, True
        want_support, want_eval = options.support_split or spec.split, options.eval_split or spec.split
    avoid = want_support if same else None
    eval_split = _pick_split(eval_source, want_eval, EVAL_SPLITS, eval_source.default_eval_split, avoid=avoid)
    if same:
        support_split = _pick_split(
            support_source,
            want_support,
            SUPPORT_SPLITS,
            support_source.default_support_split,
            avoid=want_eval,
            fallback=None if want_eval else eval_split,
        )
    else:
        support_split = _pick_split(support_source, want_support, SUPPORT_SPLITS + EVAL_SPLITS, support_source.default_support_split)
    meta: dict[str, Any] = {
        "support": {"source": support_source.label, "split": support_split},
        "evaluation": {"source": eval_source.label, "split": eval_split},
    }
    if same and support_split == eval_split:
        meta["rule"] = "seeded split"
        items = support_source.items(eval_split, task.kind)
        support, evaluation = _split_one(task, items, support_source.holds_episodes, options)
    else:
        meta["rule"] = "splits"
        support = support_source.items(support_split, task.kind)
        evaluation = eval_source.items(eval_split, task.kind)
        if task.kind == "episode":
            support, evaluation = _episode_sets(
                task, support, evaluation, support_source.holds_episodes, eval_source.holds_episodes, options.seed
            )
    meta["support"]["skipped"] = support_source.skipped.get(support_split, 0)
    meta["evaluation"]["skipped"] = eval_source.skipped.get(eval_split, 0)
    return support, evaluation, meta


def _pick_split(
    source: Source,
    wanted: str | None,
    preferred: Sequence[str],
    default: str | None,
    avoid: str | None = None,
    fallback: str | None = None,
) -> str | None:
    """The wanted split (checked), else the preset's, else the first preferred one present.

    ``avoid`` (the other role's wanted split) is skipped while another candidate exists;
    with no candidate: ``fallback``, else any split, training splits and ``avoid`` last.
    """
    available = source.splits()
    if not available:
        if wanted:
            raise DataError(f"{source.label} has no splits; drop ':{wanted}' / the split option (or give --eval-data)")
        return None
    if wanted:
        if wanted not in available:
            raise DataError(f"{source.label} has no split '{wanted}' (splits: {', '.join(available)}); choose one of those")
        return wanted
    for name in [default, *preferred]:
        if name in available and name != avoid:
            return name
    if fallback:
        return fallback
    return min(available, key=lambda name: (name == avoid, name in SUPPORT_SPLITS))


def _split_one(task: Task, items: list[Item], holds_episodes: bool, options: DataOptions) -> tuple[list[Item], list[Item]]:
    """Seeded disjoint split of one source's items."""
    if task.kind != "episode":
        return split_items(items, options.seed, options.eval_limit)
    if holds_episodes:
        keep = set(split_classes([item.fields["label"] for item in items], options.seed)[1])
        return [i for i in items if i.fields["label"] not in keep], [i for i in items if i.fields["label"] in keep]
    support_pool, eval_pool = split_items(items, options.seed, None)
    return _episode_sets(task, support_pool, eval_pool, False, False, options.seed)


def split_items(items: list[Item], seed: int, eval_limit: int | None) -> tuple[list[Item], list[Item]]:
    """(support, evaluation): evaluation gets ``eval_limit`` items (at most half) or half.

    Items with the same identity (image and question) are kept together; both lists
    keep the source's order.
    """
    groups: dict[Any, list[int]] = {}
    for index, item in enumerate(items):
        key = identity(item)
        groups.setdefault(key if key is not None else ("uid", item.uid), []).append(index)
    order = list(groups.values())
    seeded_rng(seed, "split").shuffle(order)
    n_eval = len(items) // 2 if eval_limit is None else min(eval_limit, len(items) // 2)
    chosen: set[int] = set()
    for group in order:
        if len(chosen) >= n_eval:
            break
        chosen.update(group)
    support = [item for i, item in enumerate(items) if i not in chosen]
    evaluation = [item for i, item in enumerate(items) if i in chosen]
    return support, evaluation


def _episode_sets(
    task: Task, support: list[Item], evaluation: list[Item], support_ready: bool, eval_ready: bool, seed: int
) -> tuple[list[Item], list[Item]]:
    """Draw episodes for the side(s) that hold labelled images, with disjoint positive classes."""
    ways, shots = getattr(task, "ways", 2), getattr(task, "support_per_class", 1)
    support_labels = {item.fields["label"] for item in support}
    eval_labels = {item.fields["label"] for item in evaluation}
    if not support_ready and not eval_ready:
        support_pos, eval_pos = split_classes(sorted(support_labels | eval_labels), seed)
    elif support_ready:
        support_pos, eval_pos = sorted(support_labels), sorted(eval_labels - support_labels)
    else:
        support_pos, eval_pos = sorted(support_labels - eval_labels), sorted(eval_labels)
    if not support_ready:
        support = build_episodes(support, support_pos, seed, ways, shots, tag="support")
    if not eval_ready:
        evaluation = build_episodes(evaluation, eval_pos, seed, ways, shots, tag="evaluation")
    return support, evaluation


# ----------------------------------------------------------------------------- disjointness and limits


def identity(item: Item) -> tuple[str, tuple[str, ...]] | None:
    """(question, image keys) of an item, or None when its images have no known identity."""
    question = (item.question or "").strip().lower()
    keys = image_keys(item)
    if item.images and keys is None:
        return None
    if not item.images and not question:
        return None
    return question, keys or ()


def enforce_disjoint(support: list[Item], evaluation: list[Item], kind: str) -> tuple[list[Item], int]:
    """Drop support items that are also evaluation items; fail when the two are the same data."""
    if kind == "episode":
        shared = {i.fields.get("label") for i in support} & {i.fields.get("label") for i in evaluation} - {None}
        if shared:
            example = ", ".join(sorted(map(str, shared))[:3])
            raise DataError(
                f"support and evaluation episodes share {len(shared)} positive classes (e.g. {example}); "
                "give episode files with disjoint classes"
            )
    support_ids = [identity(item) for item in support]
    eval_ids = [identity(item) for item in evaluation]
    support_hits = _hits(support, support_ids, evaluation, eval_ids)
    eval_hits = _hits(evaluation, eval_ids, support, support_ids)
    if support and evaluation and (len(eval_hits) == len(evaluation) or len(support_hits) == len(support)):
        example = evaluation[eval_hits[0]].uid if eval_hits else support[support_hits[0]].uid
        raise DataError(
            f"the support pool and the evaluation items are the same data ({len(eval_hits)} of {len(evaluation)} "
            f"evaluation items are also support items, e.g. {example}); point --eval-data or --eval-split "
            "at other items, or give one source to split it (see docs/data.md)"
        )
    dropped = set(support_hits)
    return [item for i, item in enumerate(support) if i not in dropped], len(dropped)


def _hits(items: list[Item], ids: list[Any], others: list[Item], other_ids: list[Any]) -> list[int]:
    """Indices of ``items`` that are also in ``others``: same identity, or same uid where an identity is unknown."""
    keys = set(other_ids) - {None}
    unknown_uids = {item.uid for item, key in zip(others, other_ids) if key is None}
    all_uids = {item.uid for item in others}
    return [
        i
        for i, (item, key) in enumerate(zip(items, ids))
        if (key is not None and key in keys) or item.uid in unknown_uids or (key is None and item.uid in all_uids)
    ]


def subsample(items: list[Item], limit: int | None, seed: int, tag: str) -> list[Item]:
    """A seeded sample of at most ``limit`` items, in the original order."""
    if limit is None or len(items) <= limit:
        return items
    chosen = set(seeded_rng(seed, "limit", tag).sample(range(len(items)), limit))
    return [item for i, item in enumerate(items) if i in chosen]
