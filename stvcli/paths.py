"""Local paths in options are stored absolute, so artifacts' settings work from any directory.

A later stage re-creates its options from an artifact's recorded settings, maybe run
from another working directory; a relative ``--model``/``--data`` recorded verbatim
would then point nowhere (or somewhere else). Only values naming an existing local
file or folder change; hub ids, short names and ``prefix:rest`` specs stay as given.
"""

from __future__ import annotations

import os
from pathlib import Path


def existing_path(value: str) -> Path | None:
    """``value`` (``~`` expanded) as an absolute path when it names an existing file or folder."""
    if not value or not value.strip():
        return None
    path = Path(os.path.expanduser(value))
    try:
        return path.resolve() if path.exists() else None
    except (OSError, ValueError):  # e.g. a name too long for the file system, or a NUL byte
        return None


def absolute_if_local(value: str | None) -> str | None:
    """The absolute path of ``value`` when it names an existing file or folder, else ``value``."""
    if value is None:
        return None
    path = existing_path(value)
    return value if path is None or str(path) == value else str(path)
