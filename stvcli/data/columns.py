"""Column resolution and record -> Item conversion, shared by every tabular source.

Canonical fields: ``image``, ``question``, ``answers``, ``question_id``, ``label``. A
source's column for each is found, in order, from the user's ``--columns`` mapping,
the hub preset, the canonical name itself, then a few common aliases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
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
    """Answers as strings: a list of strings (or numbers), a list of {answer: ...} dicts, or one string.

    Raises TypeError for anything else (the converter names the record).
    """
    if value is None:
        return ()
    if _is_scalar(value):
        text = str(value).strip()
        return (text,) if text else ()
    if isinstance(value, Mapping):  # one {answer: ...}, or a hub column of dicts read as a dict of lists
        inner = value.get("answer")
        value = inner if isinstance(inner, (list, tuple)) else [value]
    if isinstance(value, bytes) or not isinstance(value, Iterable):
        raise TypeError(f"a {type(value).__name__}")
    out = []
    for entry in value:
        text = entry.get("answer") if isinstance(entry, Mapping) else entry
        if text is None:
            continue
        if not _is_scalar(text):
            raise TypeError(f"a list holding a {type(text).__name__}")
        if str(text).strip():
            out.append(str(text).strip())
    return tuple(out)


def _is_scalar(value: Any) -> bool:
    """Text, or a number written as text (not a bool, list or object)."""
    return isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool))


@dataclass
class RowConverter:
    """Turns rows (dicts keyed by column) into Items for one task kind.

    ``where(index)`` names a row in messages (``file:line`` for local files). With
    ``local`` (records read from a file, whose keys may differ per record) a record
    without a field the task needs is a DataError rather than a skipped row.
    """

    kind: TaskKind
    columns: dict[str, str]
    origin: str  # uid namespace: split name or file name
    make_image: ImageMaker | None = None
    label_name: Callable[[Any], str] | None = None  # ClassLabel int -> name, preset transforms
    dropped: int = 0  # rows without answers / label
    where: Callable[[int], str] | None = None
    local: bool = False

    def name(self, index: int) -> str:
        return self.where(index) if self.where is not None else f"{self.origin} row {index}"

    def __call__(self, row: Mapping[str, Any], index: int) -> Item | None:
        if self.local:
            self._check_fields(row, index)
        local_id = row.get(self.columns["question_id"]) if "question_id" in self.columns else None
        uid = f"{self.origin}/{local_id if local_id not in (None, '') else index}"
        images, keys = self._images(row, index)
        if self.kind in ("vqa", "text"):
            try:
                answers = answers_of(row.get(self.columns["answers"]))
            except TypeError as exc:
                raise self._bad(index, "answers", f"{exc}; give a string or a list of strings") from exc
            question = row.get(self.columns["question"])
            if question is not None and not _is_scalar(question):
                raise self._bad(index, "question", f"a {type(question).__name__}; give the question as a string")
            if not answers or question is None:
                self.dropped += 1
                return None
            fields = {"target": majority_answer(answers), "image_keys": keys}
            return Item(uid, str(question).strip(), answers, images, fields)
        raw_label = row.get(self.columns["label"])
        if raw_label is None or raw_label == "" or (isinstance(raw_label, int) and raw_label < 0):
            self.dropped += 1
            return None
        if not _is_scalar(raw_label):
            raise self._bad(index, "label", f"a {type(raw_label).__name__}; give the label as a string or a class number")
        label = self.label_name(raw_label) if self.label_name else str(raw_label)
        return Item(uid, None, (label,), images, {"label": label, "image_keys": keys})

    def _bad(self, index: int, field: str, what: str) -> DataError:
        return DataError(f"{self.name(index)}: '{self.columns[field]}' ({field}) is {what}")

    def _check_fields(self, row: Mapping[str, Any], index: int) -> None:
        missing = [name for name in REQUIRED[self.kind] if self.columns[name] not in row]
        if missing:
            fields = ", ".join(f"'{self.columns[name]}'" for name in missing)
            raise DataError(
                f"{self.name(index)} has no {fields} field (needed for {' and '.join(missing)}); "
                "add it to that record or remove the record"
            )

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
