"""stvcli.scoring helpers that need no model."""

from __future__ import annotations

import torch

from stvcli.scoring import default_batch_size


def test_auto_batch_size_is_larger_on_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_batch_size() == 8
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_batch_size() == 32
