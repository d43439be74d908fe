"""Data sources: hub data sets (with presets), JSONL/JSON files, image folders, plugins.

Every tabular source goes through the same column resolution (``columns.py``); MTV
episode files are parsed by ``episodes.py``. A source lists its splits and turns one
split into Items for a task kind. Plugins (``register_source``) hand over ready Items.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stvcli.data.columns import ImageMaker, RowConverter, convert_rows, resolve_columns
from stvcli.data.images import IMAGE_SUFFIXES, FileImage, HubImage, bytes_key, check_files_exist, pil_key, resolve_path
from stvcli.data.options import DataOptions, SourceSpec
from stvcli.data.textfiles import read_json_list, read_jsonl
from stvcli.data.types import Item, TaskKind
from stvcli.errors import DataError
from stvcli.registry import Registry

LOCAL_HINT = "give local files: --data path/to/file.jsonl (see docs/data.md)"
SPLIT_FOLDERS = ("train", "training", "validation", "val", "valid", "dev", "test", "testing")


# ----------------------------------------------------------------------------- plugins

SourceLoader = Callable[[DataOptions], tuple[Sequence[Item], Sequence[Item]]]
SOURCES: Registry[SourceLoader] = Registry("data source", error=DataError)
_PREFIX = re.compile(r"^[a-z][a-z0-9_-]*$")


def register_source(prefix: str, loader: SourceLoader, *, replace: bool = False) -> None:
    """Make ``--data prefix:rest`` call ``loader(options) -> (support_items, eval_items)``.

    The loader gets the whole DataOptions (``options.data`` holds ``prefix:rest``); the
    usual checks (disjointness, limits, empty sets, readable images) still run on its Items.
    """
    if not _PREFIX.match(prefix) or prefix == "hf":
        raise ValueError(f"bad source prefix {prefix!r}: lowercase letters, digits, '-', '_' (and not 'hf')")
    if prefix in SOURCES and not replace:
        raise ValueError(f"source prefix {prefix!r} is already registered")
    SOURCES.register(prefix, loader, replace=True)


def source_prefixes() -> tuple[str, ...]:
    """Every registered prefix (plugins load first)."""
    return tuple(SOURCES.names())


def get_source_loader(prefix: str) -> SourceLoader:
    return SOURCES.get(prefix)


# ----------------------------------------------------------------------------- presets


def cub_class_name(label: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black footed Albatross``."""
    return re.sub(r"^\d+\.", "", label).replace("_", " ").strip()


@dataclass(frozen=True)
class HubPreset:
    columns: dict[str, str]
    support_split: str | None
    eval_split: str | None
    label_transform: Callable[[str], str] | None = None


_VQA_COLUMNS = {"question_id": "question_id", "image": "image", "question": "question", "answers": "answers"}
_CLS_COLUMNS = {"image": "image", "label": "label"}
PRESETS: dict[str, HubPreset] = {
    "lmms-lab/vizwiz-vqa": HubPreset(_VQA_COLUMNS, support_split=None, eval_split="val"),
    "lmms-lab/ok-vqa": HubPreset(_VQA_COLUMNS, support_split=None, eval_split="val2014"),
    "tanganke/dtd": HubPreset(_CLS_COLUMNS, support_split="train", eval_split="test"),
    "dpdl-benchmark/oxford_flowers102": HubPreset(_CLS_COLUMNS, support_split="train", eval_split="test"),
    "bentrevett/caltech-ucsd-birds-200-2011": HubPreset(
        _CLS_COLUMNS, support_split="train", eval_split="test", label_transform=cub_class_name
    ),
}


def preset_for(hub_id: str) -> HubPreset | None:
    return PRESETS.get(hub_id.lower())


# ----------------------------------------------------------------------------- sources


class Source(Protocol):
    label: str
    default_support_split: str | None
    default_eval_split: str | None
    holds_episodes: bool
    skipped: dict[str | None, int]  # per split: rows dropped for lacking answers or a label

    def splits(self) -> list[str]: ...

    def items(self, split: str | None, kind: TaskKind) -> list[Item]: ...


def open_source(spec: SourceSpec, options: DataOptions) -> Source:
    """The Source for a parsed spec (hub, jsonl, json or imagefolder)."""
    if spec.kind == "hub":
        return HubSource(spec, options)
    if spec.kind == "jsonl":
        read = read_jsonl(Path(spec.location))
        return RecordFileSource(spec, options, read.rows, where=read.where)
    if spec.kind == "json":
        read = read_json_list(Path(spec.location))
        if _is_episode_list(read.rows):
            from stvcli.data.episodes import EpisodeFileSource

            return EpisodeFileSource(spec, options, read.rows, where=read.where)
        return RecordFileSource(spec, options, read.rows, where=read.where)
    if spec.kind == "imagefolder":
        return ImageFolderSource(spec, options)
    raise DataError(f"{spec.raw}: a registered source cannot be opened as a file or hub source")


@dataclass
class HubSource:
    """A hub data set via ``datasets.load_dataset`` (all splits, images kept undecoded)."""

    spec: SourceSpec
    options: DataOptions
    holds_episodes: bool = False
    skipped: dict[str | None, int] = field(default_factory=dict)  # rows without answers / label
    _splits: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.label = self.spec.location
        self.preset = preset_for(self.spec.location)
        self.default_support_split = self.preset.support_split if self.preset else None
        self.default_eval_split = self.preset.eval_split if self.preset else None

    def splits(self) -> list[str]:
        return list(self._load().keys())

    def items(self, split: str | None, kind: TaskKind) -> list[Item]:
        dataset = self._load()[split]
        label = f"{self.label}:{split}"
        preset_columns = self.preset.columns if self.preset else None
        columns = resolve_columns(dataset.column_names, kind, label, self.options.columns, preset_columns)
        dataset = dataset.select_columns(sorted(set(columns.values())))
        converter = RowConverter(kind, columns, origin=str(split))
        if "image" in columns and kind != "text":
            dataset = _undecoded(dataset, columns["image"])
            converter.make_image = self._image_maker(dataset, columns["image"], label)
        if "label" in columns:
            converter.label_name = self._label_namer(dataset, columns["label"])
        items = convert_rows(dataset, converter)
        self.skipped[split] = converter.dropped
        return items

    def _load(self) -> Any:
        if self._splits is None:
            import datasets

            try:
                loaded = datasets.load_dataset(self.spec.location, revision=self.spec.revision or self.options.revision)
            except Exception as exc:  # noqa: BLE001 - translated into one-line user errors
                raise _hub_error(self.spec.location, exc) from exc
            if isinstance(loaded, datasets.Dataset):
                loaded = datasets.DatasetDict({"train": loaded})
            self._splits = loaded
        return self._splits

    def _image_maker(self, dataset: Any, column: str, label: str) -> ImageMaker:
        base = self.options.image_root or os.getcwd()

        def make(value: Any, index: int, position: int | None) -> tuple[Any, str | None]:
            if isinstance(value, str):
                image = FileImage(resolve_path(value, base))
                return image, image.key
            if isinstance(value, dict) and value.get("bytes") is not None:
                return HubImage(dataset, index, column, position, label), bytes_key(value["bytes"])
            if isinstance(value, dict) and value.get("path"):
                image = FileImage(resolve_path(value["path"], base))
                return image, image.key
            if hasattr(value, "tobytes"):
                return value, pil_key(value)
            raise DataError(f"{label}: column '{column}' holds no image in row {index}; map another with --columns image=<column>")

        return make

    def _label_namer(self, dataset: Any, column: str) -> Callable[[Any], str]:
        feature = dataset.features[column]
        names = getattr(feature, "names", None)
        transform = self.preset.label_transform if self.preset else None

        def name(value: Any) -> str:
            text = names[value] if names is not None and isinstance(value, int) else str(value)
            return transform(text) if transform else text

        return name


def _undecoded(dataset: Any, column: str) -> Any:
    import datasets

    feature = dataset.features[column]
    if isinstance(feature, datasets.Image):
        return dataset.cast_column(column, datasets.Image(decode=False))
    if isinstance(feature, datasets.List) and isinstance(feature.feature, datasets.Image):
        return dataset.cast_column(column, datasets.List(datasets.Image(decode=False)))
    return dataset


def _hub_error(hub_id: str, exc: Exception) -> DataError:
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import GatedRepoError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return DataError(f"{hub_id} is gated on the hub; accept its terms and log in (hf auth login), or {LOCAL_HINT}")
    if isinstance(exc, RevisionNotFoundError):
        return DataError(f"{hub_id} has no such revision; check @revision / --revision, or {LOCAL_HINT}")
    if isinstance(exc, DatasetNotFoundError):
        return DataError(f"cannot reach the hub for {hub_id} (no such data set, no access, or offline); check the id or {LOCAL_HINT}")
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return DataError(f"cannot reach the hub for {hub_id}; {LOCAL_HINT}")
    if "script" in str(exc).lower():
        return DataError(f"{hub_id} needs a loading script, which datasets 4+ refuses; use a parquet copy or {LOCAL_HINT}")
    return DataError(f"cannot load {hub_id} from the hub ({type(exc).__name__}: {exc}); {LOCAL_HINT}")


@dataclass
class RecordFileSource:
    """Records from a .jsonl file or a .json list; image paths relative to the file (or --image-root)."""

    spec: SourceSpec
    options: DataOptions
    records: list[dict[str, Any]]
    holds_episodes: bool = False
    default_support_split: str | None = None
    default_eval_split: str | None = None
    skipped: dict[str | None, int] = field(default_factory=dict)
    where: list[str] | None = None  # per record, for messages: "file:line" (JSONL) or "file entry N"

    def __post_init__(self) -> None:
        self.label = Path(self.spec.location).name
        self.base = self.options.image_root or str(Path(self.spec.location).parent)

    def splits(self) -> list[str]:
        return []

    def items(self, split: str | None, kind: TaskKind) -> list[Item]:
        items, self.skipped[split] = records_to_items(self.records, kind, self.label, self.base, self.options.columns,
                                                      self.where)
        return items


def records_to_items(
    records: list[dict[str, Any]],
    kind: TaskKind,
    label: str,
    base: str,
    mapping: dict[str, str] | None,
    where: list[str] | None = None,
) -> tuple[list[Item], int]:
    """Local records -> (Items, records skipped for lacking answers or a label).

    Image paths are resolved against ``base`` and checked to exist. ``where`` names each
    record in messages (``file:line``); a record without a field the task needs is a
    DataError naming it.
    """
    available = sorted({key for record in records for key in record})
    columns = resolve_columns(available, kind, label, mapping)
    paths: list[str] = []

    def name(index: int) -> str:
        return where[index] if where is not None and index < len(where) else f"{label} record {index + 1}"

    def make(value: Any, index: int, position: int | None) -> tuple[FileImage, str]:
        if not isinstance(value, str):
            raise DataError(f"{name(index)} has a non-path image value; give image paths as strings")
        image = FileImage(resolve_path(value, base))
        paths.append(image.path)
        return image, image.key

    converter = RowConverter(kind, columns, origin=label, make_image=make, where=name, local=True)
    items = convert_rows(records, converter)
    check_files_exist(paths, label)
    return items, converter.dropped


@dataclass
class ImageFolderSource:
    """An image folder: ``class/*.png`` subfolders or ``metadata.jsonl`` (+ ``file_name``),
    optionally under split folders (``train/``, ``test/``, ...)."""

    spec: SourceSpec
    options: DataOptions
    holds_episodes: bool = False
    default_support_split: str | None = None
    default_eval_split: str | None = None
    skipped: dict[str | None, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.spec.location)
        self.label = self.root.name

    def splits(self) -> list[str]:
        return sorted(
            child.name
            for child in self.root.iterdir()
            if child.is_dir() and child.name.lower() in SPLIT_FOLDERS and _is_image_folder(child)
        )

    def items(self, split: str | None, kind: TaskKind) -> list[Item]:
        folder = self.root / split if split else self.root
        label = f"{self.label}/{split}" if split else self.label
        origin = split or self.label
        metadata = folder / "metadata.jsonl"
        where = None
        if metadata.is_file():
            base = self.options.image_root or str(folder)
            read = read_jsonl(metadata)
            records, where = read.rows, read.where
        else:
            base, records = str(folder), self._class_records(folder, label)
        items, self.skipped[split] = records_to_items(records, kind, origin, base, self.options.columns, where)
        return items

    @staticmethod
    def _class_records(folder: Path, label: str) -> list[dict[str, Any]]:
        classes = sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
        records = [
            {"image": str(path), "label": child.name, "question_id": f"{child.name}/{path.name}"}
            for child in classes
            for path in sorted(child.iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not records:
            raise DataError(f"{label} has neither class subfolders with images nor a metadata.jsonl (see docs/data.md)")
        return records


def _is_image_folder(folder: Path) -> bool:
    return (folder / "metadata.jsonl").is_file() or any(child.is_dir() for child in folder.iterdir())


def _is_episode_list(records: list[dict[str, Any]]) -> bool:
    return bool(records) and {"pos", "neg", "query", "pos_label", "neg_label"} <= set(records[0])
