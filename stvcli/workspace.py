"""The workspace: one folder of artifacts per task and model, and every rule about it.

Stages ask this layer where an artifact lives (``path``), what a result depends on
(``settings``: the stage's own settings, the digest of the upstream artifact and what
it inherits from it), whether an existing artifact can be reused (``reuse``, with its
one message), how to write one (``save``: atomic, with provenance), how to resume from
a checkpoint (``load_state``), and, under torchrun, which share of the items this rank
computes and how the shares are merged (``sharded``). Stages compute; they build no
settings dictionaries or shard files themselves.

Shard protocol (several ranks): every rank builds the same work list from the seed,
takes its contiguous share, writes its partial result atomically to
``W/shards/<stage>-<rank>-of-<world>.safetensors`` and waits; rank 0 reads every shard
in rank order and removes them. A rerun after a crash reuses each shard made with the
same settings, so only unfinished shares are recomputed. The workspace must be on a
file system every rank sees.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stvcli import distributed as dist
from stvcli.artifacts import KINDS, Artifact, check_fingerprint, load_artifact, save_artifact
from stvcli.console import say, say_rank
from stvcli.errors import ArtifactError, StvError

#: Settings a downstream stage takes over from its upstream artifact (when present).
INHERITED = ("task", "model", "data", "shots")

Tensors = dict[str, torch.Tensor]
ShareResult = tuple[Tensors, dict[str, Any]]  # a share's tensors and its Meter summary


def file_digest(path: Path) -> str:
    """Short SHA-256 of a file's bytes (cached per path, size and modification time)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()[:16]
    return _DIGESTS[key]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def check_writable(folder: Path, flag: str) -> None:
    """Refuse a folder this process cannot write (a file, a read-only mount, no
    permission) before any model loads, instead of after the forwards."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        where = "" if existing == folder else f" ({existing} is a file)"
        raise StvError(f"{flag} {folder} is a file, not a folder{where}; give a folder path")
    try:
        if existing == folder:  # write a probe and remove it
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".stv-write-check-"):
                pass
        elif not os.access(existing, os.W_OK | os.X_OK):  # created at the first save, not now
            raise PermissionError(errno.EACCES, "permission denied")
    except OSError as error:
        raise StvError(f"cannot write to {flag} {folder} ({error.strerror or error}); give a writable folder") from None


def same_settings(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Settings equality as stored in metadata (JSON, keys sorted, paths as strings)."""
    return _normalise(a) == _normalise(b)


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


@dataclass(frozen=True)
class Provenance:
    """Where an artifact's numbers come from: the model id, its fingerprint, the data."""

    model: str
    fingerprint: dict[str, Any]
    data: dict[str, Any] | None = None

    @classmethod
    def of(cls, artifact: Artifact) -> "Provenance":
        return cls(str(artifact.meta.get("model")), artifact.fingerprint, artifact.meta.get("data"))


@dataclass(frozen=True)
class StageStart:
    """A stage's upstream artifact, its settings, and its finished artifact (or None)."""

    upstream: Artifact
    settings: dict[str, Any]
    done: Artifact | None


@dataclass
class Shares:
    """The merged result of a sharded computation (rank 0): every share's tensors in
    rank order, and the stage's statistics over all ranks."""

    parts: list[Tensors]
    stats: dict[str, Any] = field(default_factory=dict)

    def cat(self, name: str) -> torch.Tensor:
        return torch.cat([part[name] for part in self.parts])

    def sum(self, name: str) -> torch.Tensor:
        return torch.stack([part[name] for part in self.parts]).sum(0)


@dataclass(frozen=True)
class Workspace:
    root: Path
    force: bool = False  # never reuse an artifact, checkpoint or shard
    quiet: bool = False

    def path(self, kind: str) -> Path:
        file = KINDS[kind].file
        if file is None:
            raise ValueError(f"artifact kind {kind!r} has no workspace file")
        return Path(self.root) / file

    def check_writable(self) -> None:
        check_writable(self.root, "--workspace")

    def exists(self, kind: str) -> bool:
        return self.path(kind).exists()

    def load(self, kind: str, *, fingerprint: dict[str, Any] | None = None) -> Artifact:
        """The workspace's artifact of ``kind``, validated (one-line error if missing or foreign)."""
        return load_artifact(self.path(kind), kind, fingerprint=fingerprint)

    def settings(self, own: dict[str, Any], upstream: Artifact | None = None) -> dict[str, Any]:
        """What a result depends on: ``own`` settings, plus the upstream artifact's digest
        (under its kind) and the settings it passes down (``INHERITED``)."""
        settings = dict(own)
        if upstream is not None:
            assert upstream.path is not None
            settings[upstream.kind] = file_digest(upstream.path)
            settings.update({key: upstream.settings[key] for key in INHERITED if key in upstream.settings})
        return settings

    # ------------------------------------------------------------------ reuse and save
    def begin(self, kind: str, own: dict[str, Any], upstream: str, *,
              fingerprint: dict[str, Any] | None = None) -> "StageStart":
        """Start a stage that writes ``kind`` from the ``upstream`` artifact: load the
        upstream (refused for another model with ``fingerprint``), settle the settings,
        and find a finished artifact made with exactly them (``done``, said once)."""
        self.check_writable()
        source = self.load(upstream, fingerprint=fingerprint)
        self.check_lineage(source)
        settings = self.settings(own, upstream=source)
        why = f"same settings and {upstream}; --force reruns"
        return StageStart(source, settings, self.reuse(kind, settings, why=why))

    def check_lineage(self, artifact: Artifact) -> None:
        """Refuse an artifact made from other upstream files than this workspace's (one
        copied from another workspace, or left stale by a forced rerun upstream)."""
        for kind, spec in KINDS.items():
            recorded = artifact.settings.get(kind)
            if spec.file is None or not isinstance(recorded, str) or not self.exists(kind):
                continue
            if file_digest(self.path(kind)) != recorded:
                raise ArtifactError(
                    f"{artifact.path} was made from another {spec.file} than the one in {self.root}; "
                    f"rerun `{KINDS[artifact.kind].producer} -w {self.root} --force`")

    def reuse(self, kind: str, settings: dict[str, Any], *, why: str = "",
              fingerprint: dict[str, Any] | None = None) -> Artifact | None:
        """The existing artifact of ``kind`` when it was made with exactly ``settings``
        (and, with ``fingerprint``, for this model), else None (also with ``force``).

        Rank 0 decides and every rank loads; a reuse is said once, with ``why``.
        """
        found = self._matching(kind, settings) if dist.is_main() else None
        if not dist.broadcast_object(found is not None):
            return None
        say(f"{KINDS[kind].stage}: reusing {self.path(kind)}" + (f" ({why})" if why else ""), self.quiet)
        artifact = found or self.load(kind)
        if fingerprint is not None:
            check_fingerprint(artifact, fingerprint)
        return artifact

    def _matching(self, kind: str, settings: dict[str, Any]) -> Artifact | None:
        """The artifact at ``kind``'s path if it exists, reads and has ``settings`` (read once)."""
        path = self.path(kind)
        if self.force or not path.exists():
            return None
        try:
            artifact = load_artifact(path, kind)
        except ArtifactError:
            return None
        return artifact if same_settings(artifact.settings, settings) else None

    def load_state(self, kind: str, settings: dict[str, Any]) -> Artifact | None:
        """A checkpoint (``search-state``, ``mtv-state``) made with exactly ``settings``."""
        return self._matching(kind, settings)

    def discard(self, kind: str) -> None:
        self.path(kind).unlink(missing_ok=True)

    def save(self, kind: str, tensors: Tensors, *, settings: dict[str, Any], provenance: Provenance,
             seed: int | None = None, extra: dict[str, Any] | None = None) -> Path:
        """Write an artifact atomically (rank 0 only: the caller checks ``dist.is_main``)."""
        return save_artifact(self.path(kind), kind, tensors, model=provenance.model,
                             fingerprint=provenance.fingerprint, settings=settings, data=provenance.data, seed=seed,
                             extra=extra)

    # ------------------------------------------------------------------ ranks and shards
    def sharded(self, stage: str, settings: dict[str, Any], n: int,
                compute: Callable[[int, int], ShareResult], unit: str = "items") -> Shares | None:
        """``compute(start, stop)`` over this rank's share of ``n`` items.

        One process: its one share, nothing written. Several ranks: each writes its
        shard (or reuses a finished one), then rank 0 gets every share in rank order
        (``Shares``, stats merged, ``reused_shards`` listed) and removes the shards;
        other ranks get None.
        """
        if not dist.active():
            tensors, stats = compute(0, n)
            return Shares([tensors], stats)
        start, stop = dist.shard_range(n)
        mine = _shard_settings(stage, settings, start, stop, dist.rank(), dist.world_size())
        path = self._shard_path(stage)
        done = None if self.force else self._shard(path, mine)
        if done is not None:
            say_rank(f"{stage}: reusing the finished shard {path} ({unit} {start}:{stop})", self.quiet)
        else:
            tensors, stats = compute(start, stop)
            save_artifact(path, "shard", tensors, model="", fingerprint={}, settings=mine, extra={"stats": stats})
            say_rank(f"{stage}: wrote {path} ({unit} {start}:{stop})", self.quiet)
        dist.crash_for_test(stage)
        reused = dist.all_gather_object(done is not None)  # also the barrier: every shard is on disk
        if not dist.is_main():
            return None
        shards = self.read_shards(stage, settings, n)
        stats = dist.merge_stats([shard.meta["extra"]["stats"] for shard in shards])
        stats["reused_shards"] = [r for r, flag in enumerate(reused) if flag]
        self.clear_shards(stage)
        return Shares([shard.tensors for shard in shards], stats)

    def _shard_path(self, stage: str, rank: int | None = None, world: int | None = None) -> Path:
        rank = dist.rank() if rank is None else rank
        world = dist.world_size() if world is None else world
        return Path(self.root) / "shards" / f"{stage}-{rank}-of-{world}.safetensors"

    def _shard(self, path: Path, settings: dict[str, Any]) -> Artifact | None:
        if not path.exists():
            return None
        try:
            shard = load_artifact(path, "shard")
        except ArtifactError:
            return None
        return shard if same_settings(shard.settings, settings) else None

    def read_shards(self, stage: str, settings: dict[str, Any], n: int) -> list[Artifact]:
        """Every rank's shard of ``stage`` in rank order (rank 0, after the barrier)."""
        world = dist.world_size()
        shards = []
        for r in range(world):
            path = self._shard_path(stage, r, world)
            start, stop = dist.shard_range(n, r, world)
            shard = self._shard(path, _shard_settings(stage, settings, start, stop, r, world))
            if shard is None:
                raise StvError(
                    f"{path} is missing or stale after every rank finished; is the workspace on a file system that "
                    "every rank (every node) sees? Rerun the same command"
                )
            shards.append(shard)
        return shards

    def clear_shards(self, stage: str) -> None:
        """Remove the shards of ``stage`` (and temp files of a killed writer)."""
        folder = Path(self.root) / "shards"
        for pattern in (f"{stage}-*-of-*.safetensors", f".{stage}-*-of-*.safetensors.*.tmp"):
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass


def _shard_settings(stage: str, settings: dict[str, Any], start: int, stop: int, rank: int,
                    world: int) -> dict[str, Any]:
    """What a shard is made from: the stage's settings and its place in the world."""
    return {"stage": stage, "settings": settings, "rank": rank, "world": world, "start": start, "stop": stop}
