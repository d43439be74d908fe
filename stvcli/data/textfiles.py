"""The text files a data source is read from (JSONL, JSON lists, image-folder metadata).

Every file is UTF-8 (a leading byte-order mark is allowed). Anything else, a binary
file, Latin-1 or UTF-16 text, a line that is not JSON or not a JSON object, is a
one-line DataError naming the file, the line and the fix; never a traceback.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stvcli.errors import DataError

_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # the UTF-32 BOMs start with these too


@dataclass(frozen=True)
class Records:
    """The records of one file and, for messages, where each came from (``file:line``)."""

    rows: list[dict[str, Any]]
    where: list[str]


def _not_text(path: Path, line: int, data: bytes, position: int) -> DataError:
    if data.startswith(_UTF16_BOMS):
        return DataError(
            f"{path} is UTF-16 text, not UTF-8; convert it (e.g. iconv -f UTF-16 -t UTF-8) or pass another --data"
        )
    if b"\x00" in data:
        return DataError(f"{path} is not UTF-8 text (line {line} holds NUL bytes; it looks binary); pass a text file with --data")
    return DataError(
        f"{path} is not UTF-8 text (line {line}: byte 0x{data[position]:02x}); "
        "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8) or pass another --data"
    )


def _decode(path: Path, data: bytes, first_line: int = 1) -> str:
    """``data`` (whole file or one line of it) as text; DataError naming the line otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        raise _not_text(path, line, data, exc.start) from exc
    if "\x00" in text:
        line = first_line + data.count(b"\n", 0, data.index(b"\x00"))
        raise _not_text(path, line, data, data.index(b"\x00"))
    return text


def _json_kind(value: Any) -> str:
    """JSON's name for a decoded value's type."""
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _cannot_open(path: Path, exc: OSError) -> DataError:
    return DataError(f"cannot read {path} ({exc.strerror or exc}); check the file or pass another --data")


def read_text(path: Path) -> str:
    """The whole file as text (UTF-8, BOM dropped)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _cannot_open(path, exc) from exc
    if data.startswith(_UTF16_BOMS):
        raise _not_text(path, 1, data, 0)
    return _decode(path, data.removeprefix(codecs.BOM_UTF8))


def read_jsonl(path: Path) -> Records:
    """One JSON object per line (blank lines skipped)."""
    rows: list[dict[str, Any]] = []
    where: list[str] = []
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise _cannot_open(path, exc) from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                if raw.startswith(_UTF16_BOMS):
                    raise _not_text(path, 1, raw, 0)
                raw = raw.removeprefix(codecs.BOM_UTF8)
            line = _decode(path, raw, number)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number} is not valid JSON ({exc.msg}); fix that line") from exc
            except RecursionError as exc:
                raise DataError(f"{path}:{number} is nested too deeply to read; fix that line") from exc
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}:{number} is a JSON {_json_kind(record)}, not an object; write one {{...}} object per line"
                )
            rows.append(record)
            where.append(f"{path}:{number}")
    return Records(rows, where)


def read_json_list(path: Path) -> Records:
    """A JSON list of objects (records or MTV episodes)."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}); fix the file") from exc
    except RecursionError as exc:
        raise DataError(f"{path} is nested too deeply to read; fix the file") from exc
    if not isinstance(data, list):
        raise DataError(f"{path} must hold a JSON list of objects (records or MTV episodes), not a {_json_kind(data)}; see docs/data.md")
    bad = next((i for i, entry in enumerate(data) if not isinstance(entry, dict)), None)
    if bad is not None:
        raise DataError(f"{path}: entry {bad + 1} of the list is a JSON {_json_kind(data[bad])}, not an object; fix the file")
    return Records(data, [f"{path} entry {i + 1}" for i in range(len(data))])
