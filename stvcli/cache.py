"""Where stv keeps what it builds once and reuses: converted backbones, the shapes model.

The root is ``$STV_CACHE`` when set, else ``~/.cache/stv``. Every built directory is
written atomically (built in a temporary sibling, then renamed into place) and carries
a sha256 manifest of its files, checked on reuse; a directory that fails the check is
rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST_NAME = "stv-manifest.json"
_CHUNK = 1 << 24


def cache_dir(override: str | Path | None = None) -> Path:
    """The cache root (created on demand): ``override``, ``$STV_CACHE`` or ``~/.cache/stv``."""
    if override is not None:
        root = Path(override)
    elif os.environ.get("STV_CACHE"):
        root = Path(os.environ["STV_CACHE"])
    else:
        root = Path.home() / ".cache" / "stv"
    root = root.expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, info: dict[str, Any] | None = None) -> None:
    """Record the sha256 of every file in ``directory`` (plus ``info``) in its manifest."""
    files = {
        str(path.relative_to(directory)): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    manifest = {"files": files, "info": info or {}}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest_info(directory: Path) -> dict[str, Any]:
    """The ``info`` a directory's manifest was written with ({} when absent)."""
    try:
        return dict(json.loads((directory / MANIFEST_NAME).read_text()).get("info", {}))
    except (OSError, ValueError):
        return {}


def verify_manifest(directory: Path) -> str | None:
    """None when every file listed in the manifest is present with its recorded sha256;
    otherwise a short reason why the directory cannot be trusted."""
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
        files: dict[str, str] = manifest["files"]
    except FileNotFoundError:
        return "no manifest"
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable manifest"
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_file(path) != expected:
            return f"{name} does not match its checksum"
    return None


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``target``; on success it replaces
    ``target`` in one rename, on failure it is removed and ``target`` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would otherwise outlive the rename
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:
            # another process finished the same build first: keep its directory
            if verify_manifest(target) is not None:
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def ensure_built(
    target: Path,
    build: Callable[[Path], dict[str, Any] | None],
    *,
    on_rebuild: Callable[[str], None] | None = None,
) -> Path:
    """Return ``target`` when its manifest verifies; otherwise run ``build(staging)``,
    write the manifest (with the info ``build`` returns) and move it into place."""
    if target.exists():
        problem = verify_manifest(target)
        if problem is None:
            return target
        if on_rebuild is not None:
            on_rebuild(problem)
    with atomic_directory(target) as staging:
        info = build(staging)
        write_manifest(staging, info)
    return target
