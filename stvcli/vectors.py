"""A task-vector file: everything `eval --vectors` and `serve-local` need, on any machine.

``vectors.safetensors`` holds ``vectors`` [K, D] (the chosen activations),
``locations`` [K, 2], ``logits`` [K, M] (the search policy) and ``baseline`` [K, D]
(the zero-shot mean activation at each location, used by ``add`` insertion). Its
metadata names the model, its fingerprint, the task, the insertion mode and where the
vectors are written (``write_at``; files from before it existed write at every token).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stvcli.artifacts import Artifact, load_artifact
from stvcli.engine import InsertMode, Intervention, WriteAt


@dataclass
class TaskVectors:
    locations: torch.Tensor  # [K, 2] int64
    vectors: torch.Tensor  # [K, D] float32
    baseline: torch.Tensor | None  # [K, D] float32, zero-shot mean activation
    mode: InsertMode
    model: str
    fingerprint: dict[str, Any]
    task: str
    digest: str  # short content hash, names the vector set when served
    write_at: WriteAt = "every"

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> "TaskVectors":
        settings = artifact.settings
        import hashlib

        digest = hashlib.sha256(artifact["vectors"].numpy().tobytes()).hexdigest()[:12]
        return cls(
            locations=artifact["locations"].long(),
            vectors=artifact["vectors"].float(),
            baseline=artifact.tensors.get("baseline"),
            mode=artifact.meta.get("extra", {}).get("insert") or settings.get("insert", "replace"),
            model=str(artifact.meta.get("model")),
            fingerprint=artifact.fingerprint,
            task=str(settings.get("task", "task")),
            digest=digest,
            write_at=artifact.meta.get("extra", {}).get("write_at", "every"),
        )

    @classmethod
    def load(cls, path: str | Path, fingerprint: dict[str, Any] | None = None) -> "TaskVectors":
        return cls.from_artifact(load_artifact(path, "vectors", fingerprint=fingerprint))

    def intervention(self, mode: InsertMode | None = None, write_at: WriteAt | None = None) -> Intervention:
        """What to insert: the vectors themselves (replace) or their offset from the
        zero-shot mean (add), written where they were chosen to be (or ``write_at``)."""
        return make_intervention(self.locations, self.vectors, self.baseline, mode or self.mode,
                                 write_at=write_at or self.write_at)


def make_intervention(
    locations: torch.Tensor,
    vectors: torch.Tensor,
    baseline: torch.Tensor | None,
    mode: InsertMode,
    row_mask: torch.Tensor | None = None,
    write_at: WriteAt = "every",
) -> Intervention:
    """vectors: [K, D] or [B, K, D]; baseline: [K, D] (needed for ``add``)."""
    if mode == "add":
        if baseline is None:
            raise ValueError("add insertion needs the zero-shot baseline activations")
        return Intervention(locations, vectors - baseline, "add", row_mask, write_at)
    return Intervention(locations, vectors, "replace", row_mask, write_at)
