"""Data options shared by every stage, and the one ``--data`` notation.

A data spec is one string (docs/data.md has the full table):

- ``owner/name[@revision][:split]``  a hub data set (``hf:`` in front forces the hub
  reading, e.g. for a name that is also a local folder);
- ``path/to/file.jsonl``            JSON lines (VQA, classification or text records);
- ``path/to/file.json``             a JSON list: MTV episodes ``{pos, neg, query,
  pos_label, neg_label}`` or records like the JSONL ones;
- ``path/to/folder[:split]``        an image folder (class subfolders or metadata.jsonl,
  optionally under split folders ``train/``, ``test/``, ...);
- ``prefix:rest``                   a registered source (``register_source``), e.g.
  ``shapes:colour``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stvcli.errors import DataError
from stvcli.paths import absolute_if_local, existing_path

SourceKind = Literal["hub", "jsonl", "json", "imagefolder", "plugin"]

CANONICAL_COLUMNS: tuple[str, ...] = ("image", "question", "answers", "question_id", "label")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SPLIT = re.compile(r"^[\w.-]+$")
_PATH_LIKE = (".jsonl", ".json")


class DataOptions(BaseModel):
    """Where a task's items come from and how they are split. Recorded in artifacts."""

    model_config = ConfigDict(extra="forbid")

    task: str
    data: str | None = None  # None: the task's own default source (e.g. vizwiz -> lmms-lab/VizWiz-VQA)
    eval_data: str | None = None  # None: evaluation items come from ``data`` too
    support_split: str | None = None
    eval_split: str | None = None
    revision: str | None = None  # hub revision when the spec has no ``@revision``
    columns: dict[str, str] | None = None  # canonical name -> the source's column name
    image_root: str | None = None  # base folder for relative image paths
    seed: int = 0
    support_limit: int | None = Field(default=None, ge=1)
    eval_limit: int | None = Field(default=None, ge=1)

    @field_validator("data", "eval_data")
    @classmethod
    def _local_spec_absolute(cls, value: str | None) -> str | None:
        return None if value is None else absolute_spec(value)

    @field_validator("image_root")
    @classmethod
    def _image_root_absolute(cls, value: str | None) -> str | None:
        return absolute_if_local(value)


def absolute_spec(raw: str) -> str:
    """A data spec with its local file or folder made absolute (``path[:split]``), read as
    ``parse_spec`` reads it; hub ids, ``hf:`` and registered ``prefix:rest`` specs stay as given."""
    text = raw.strip()
    head, sep, _ = text.partition(":")
    if sep and head == "hf":
        return raw
    path, split = existing_path(text), None
    if path is None and ":" in text:
        base, suffix = text.rsplit(":", 1)
        if _SPLIT.match(suffix):
            path, split = existing_path(base), suffix
    if path is None:
        return raw
    if sep:
        from stvcli.data.sources import source_prefixes  # plugins register on first use

        if head in source_prefixes():
            return raw
    return str(path) if split is None else f"{path}:{split}"


@dataclass(frozen=True)
class SourceSpec:
    """A parsed data spec."""

    kind: SourceKind
    location: str  # hub id, absolute file/folder path, or the plugin's argument
    raw: str
    revision: str | None = None
    split: str | None = None
    prefix: str | None = None  # plugin prefix

    @property
    def label(self) -> str:
        """A short human name for messages and metadata."""
        return self.raw


def parse_spec(text: str, plugin_prefixes: Collection[str] = (), revision: str | None = None) -> SourceSpec:
    """Parse one data spec (see the module docstring); local paths must exist."""
    raw = text.strip()
    if not raw:
        raise DataError("empty --data; give a hub id, a .jsonl/.json file or an image folder (see docs/data.md)")
    head, sep, rest = raw.partition(":")
    if sep and head in plugin_prefixes:
        return SourceSpec("plugin", rest, raw, prefix=head)
    if sep and head == "hf":
        return _hub_spec(rest, raw, revision)
    local = _local_spec(raw)
    if local is not None:
        return local
    if _looks_like_path(raw) or Path(raw.split("/", 1)[0]).is_dir():
        raise DataError(f"no such file or folder: {raw}; check the path, or write hf:{raw} for a hub id")
    return _hub_spec(raw, raw, revision)


def _hub_spec(body: str, raw: str, revision: str | None) -> SourceSpec:
    split = None
    if ":" in body:
        body, split = body.rsplit(":", 1)
        if not _SPLIT.match(split):
            raise DataError(f"bad split {split!r} in {raw}; write owner/name[@revision][:split]")
    if "@" in body:
        body, revision = body.split("@", 1)
        if not revision:
            raise DataError(f"empty revision in {raw}; write owner/name@revision")
    if not _HUB_ID.match(body):
        raise DataError(f"{raw} is neither a local file nor a hub id (owner/name[@revision][:split]); see docs/data.md")
    return SourceSpec("hub", body, raw, revision=revision, split=split)


def _local_spec(raw: str) -> SourceSpec | None:
    path, split = Path(os.path.expanduser(raw)), None
    if not path.exists() and ":" in raw:
        base, suffix = raw.rsplit(":", 1)
        candidate = Path(os.path.expanduser(base))
        if candidate.exists() and _SPLIT.match(suffix):
            path, split = candidate, suffix
    if not path.exists():
        return None
    path = path.resolve()
    if path.is_dir():
        return SourceSpec("imagefolder", str(path), raw, split=split)
    if split is not None:
        raise DataError(f"{path.name} is a file and has no splits; drop ':{split}' (use --eval-data for a second file)")
    if path.suffix == ".jsonl":
        return SourceSpec("jsonl", str(path), raw)
    if path.suffix == ".json":
        return SourceSpec("json", str(path), raw)
    raise DataError(f"cannot read {path.name}: give a .jsonl or .json file or an image folder (see docs/data.md)")


def _looks_like_path(raw: str) -> bool:
    return raw.startswith((".", "/", "~")) or raw.endswith(_PATH_LIKE) or "\\" in raw
