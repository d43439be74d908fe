"""Column resolution and record -> Item conversion, shared by every tabular source.

Canonical fields: ``image``, ``question``, ``answers``, ``question_id``, ``label``. A
source's column for each is found, in order, from the user's ``--columns`` mapping,
the hub preset, the canonical name itself, then a few common aliases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stvcli.data.options import CANONICAL_COLUMNS
from stvcli.data.types import ImageRef, Item, TaskKind
from stvcli.errors import DataError
from stvcli.metrics import majority_answer

REQUIRED: dict[str, tuple[str, ...]] = {
    "vqa": ("question", "answers"),
    "text": ("question", "answers"),
    "classification": ("image", "label"),
    "episode": ("image", "label"),
}
OPTIONAL: dict[str, tuple[str, ...]] = {
    "vqa": ("image", "question_id"),
    "text": ("question_id",),
    "classification": ("question_id",),
    "episode": ("question_id",),
}
ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image", "file_name", "image_path", "img"),
    "question": ("question", "input"),
    "answers": ("answers", "answer", "output"),
    "question_id": ("question_id", "id", "uid"),
    "label": ("label", "class"),
}

# (image value, row index, position in the row's image list) -> (lazy reference, identity key)
ImageMaker = Callable[[Any, int, int | None], tuple[ImageRef, str | None]]


def resolve_columns(
    available: Sequence[str],
    kind: TaskKind,
    source: str,
    mapping: Mapping[str, str] | None = None,
    preset: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """canonical name -> column, for the fields the task kind needs (and optional ones present)."""
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(CANONICAL_COLUMNS))
    if unknown:
        raise DataError(f"--columns key '{unknown[0]}' is not one of {', '.join(CANONICAL_COLUMNS)}")
    columns = list(available)
    shown = ", ".join(columns) or "none"
    resolved: dict[str, str] = {}
    for name in REQUIRED[kind] + OPTIONAL[kind]:
        if name in mapping:
            if mapping[name] not in columns:
                raise DataError(f"--columns {name}={mapping[name]}: {source} has no column '{mapping[name]}' (columns: {shown})")
            resolved[name] = mapping[name]
            continue
        candidates = ([preset[name]] if preset and name in preset else []) + list(ALIASES[name])
        found = next((c for c in candidates if c in columns), None)
        if found is not None:
            resolved[name] = found
    missing = [name for name in REQUIRED[kind] if name not in resolved]
    if missing:
        fix = " ".join(f"{name}=<column>" for name in missing)
        raise DataError(
            f"{source} has no column for {', '.join(repr(m) for m in missing)} needed by a {kind} task "
            f"(columns: {shown}); map them with --columns {fix}"
        )
    return resolved


def answers_of(value: Any) -> tuple[str, ...]:
    """Answers as strings: a list of strings, a list of {answer: ...} dicts, or one string."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value.strip(),) if value.strip() else ()
    out = []
    for entry in value:
        text = entry.get("answer") if isinstance(entry, Mapping) else entry
        if text is not None and str(text).strip():
            out.append(str(text).strip())
    return tuple(out)


@dataclass
class RowConverter:
    """Turns rows (dicts keyed by column) into Items for one task kind."""

    kind: TaskKind
    columns: dict[str, str]
    origin: str  # uid namespace: split name or file name
    make_image: ImageMaker | None = None
    label_name: Callable[[Any], str] | None = None  # ClassLabel int -> name, preset transforms
    dropped: int = 0  # rows without answers / label

    def __call__(self, row: Mapping[str, Any], index: int) -> Item | None:
        local_id = row.get(self.columns["question_id"]) if "question_id" in self.columns else None
        uid = f"{self.origin}/{local_id if local_id not in (None, '') else index}"
        images, keys = self._images(row, index)
        if self.kind in ("vqa", "text"):
            answers = answers_of(row.get(self.columns["answers"]))
            question = row.get(self.columns["question"])
            if not answers or question is None:
                self.dropped += 1
                return None
            fields = {"target": majority_answer(answers), "image_keys": keys}
            return Item(uid, str(question).strip(), answers, images, fields)
        raw_label = row.get(self.columns["label"])
        if raw_label is None or raw_label == "" or (isinstance(raw_label, int) and raw_label < 0):
            self.dropped += 1
            return None
        label = self.label_name(raw_label) if self.label_name else str(raw_label)
        return Item(uid, None, (label,), images, {"label": label, "image_keys": keys})

    def _images(self, row: Mapping[str, Any], index: int) -> tuple[tuple[ImageRef, ...], tuple[str, ...] | None]:
        if "image" not in self.columns or self.kind == "text" or self.make_image is None:
            return (), ()
        value = row.get(self.columns["image"])
        if value is None:
            return (), ()
        if isinstance(value, list):
            made = [self.make_image(v, index, position) for position, v in enumerate(value)]
        else:
            made = [self.make_image(value, index, None)]
        refs = tuple(ref for ref, _ in made)
        keys = tuple(key for _, key in made)
        return refs, (None if any(k is None for k in keys) else keys)  # type: ignore[return-value]


def convert_rows(rows: Sequence[Mapping[str, Any]] | Any, converter: RowConverter) -> list[Item]:
    items = []
    for index, row in enumerate(rows):
        item = converter(row, index)
        if item is not None:
            items.append(item)
    return items
