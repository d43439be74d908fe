"""Task-vector files (stvcli/vectors.py): insertion mode and write position travel with them."""

from __future__ import annotations

import pytest
import torch

from stvcli.artifacts import save_artifact
from stvcli.vectors import TaskVectors, make_intervention

FINGERPRINT = {"architecture": "Tiny", "n_layers": 2, "n_heads": 2, "head_dim": 3, "weights": "abc"}


def write(path, extra: dict) -> TaskVectors:
    vectors, baseline = torch.arange(6.0).view(2, 3), torch.ones(2, 3)
    save_artifact(path, "vectors", {"vectors": vectors, "locations": torch.tensor([[0, 1], [1, 0]]),
                                    "baseline": baseline, "logits": torch.zeros(2, 4), "choices": torch.zeros(2).long()},
                  model="m", fingerprint=FINGERPRINT, settings={"task": "t", "insert": "add"}, extra=extra)
    return TaskVectors.load(path)


def test_write_position_is_read_from_the_file_and_old_files_write_everywhere(tmp_path) -> None:
    old = write(tmp_path / "old.safetensors", {"insert": "add"})
    assert old.write_at == "every" and old.intervention().write_at == "every"
    new = write(tmp_path / "new.safetensors", {"insert": "add", "write_at": "prompt"})
    intervention = new.intervention()
    assert intervention.write_at == "prompt" and intervention.mode == "add"
    assert torch.equal(intervention.vectors, torch.arange(6.0).view(2, 3) - 1)  # add: offset from the baseline
    assert new.intervention(write_at="every").write_at == "every"  # an override wins
    assert new.intervention("replace").vectors.equal(torch.arange(6.0).view(2, 3))


def test_make_intervention_carries_mask_and_write_position() -> None:
    mask = torch.tensor([[True, False]])
    made = make_intervention(torch.tensor([[0, 0], [1, 1]]), torch.ones(1, 2, 3), torch.zeros(2, 3), "replace",
                             row_mask=mask, write_at="prompt")
    assert made.write_at == "prompt" and made.row_mask is mask and made.rows(slice(0, 1)).write_at == "prompt"
    with pytest.raises(ValueError, match="baseline"):
        make_intervention(torch.tensor([[0, 0]]), torch.ones(1, 3), None, "add")
