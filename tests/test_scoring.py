"""stvcli.scoring helpers that need no model."""

from __future__ import annotations

import torch

from stvcli.scoring import default_batch_size


def test_auto_batch_size_is_larger_on_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_batch_size() == 8
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_batch_size() == 32


def test_generation_stops_once_every_answer_is_final_and_keeps_the_answers(tiny, tiny_prompts):
    from stvcli.metrics import cut_answer, cut_is_final
    from stvcli.scoring import generate

    adapter = tiny("llama")
    prompts = tiny_prompts("llama")
    full = generate(adapter, prompts, 12)
    seen = []

    def final(text: str) -> bool:
        seen.append(text)
        return len(text) >= 2  # every row is "final" after a couple of characters

    short = generate(adapter, prompts, 12, final=final)
    assert seen and all(whole.startswith(part) for whole, part in zip(full, short, strict=True))
    assert sum(map(len, short)) < sum(map(len, full))
    assert [cut_answer(t) for t in generate(adapter, prompts, 12, final=cut_is_final)] == [cut_answer(t) for t in full]


def test_cut_is_final_exactly_when_no_continuation_changes_the_cut():
    from stvcli.metrics import cut_is_final

    assert not cut_is_final("\n\n  red")  # leading newlines are dropped before cutting
    assert cut_is_final(" red\n") and cut_is_final("red.") and cut_is_final(" a. b")
    assert not cut_is_final(" red")
