"""generate_and_score: generations in batches, each scored against its own item."""

from __future__ import annotations

from stvcli.data.loading import load_task_data
from stvcli.stages import accuracy
from stvcli.stages.common import Meter


def test_each_generation_is_extracted_and_scored_against_its_own_item(bed, monkeypatch):
    data = load_task_data(bed["data"])
    items = data.support[:3]
    replies = iter([f" {items[0].answer}. more",  # right, cut at '.'
                    " certainly not the answer",
                    f"  {items[2].answer.upper()}\nnext line"])  # case and spaces do not count
    calls = []

    def fake_generate(adapter, prompts, max_new_tokens, intervention=None, final=None):
        calls.append((len(prompts), intervention, max_new_tokens))
        return [next(replies) for _ in prompts]

    monkeypatch.setattr(accuracy, "generate", fake_generate)
    meter, batches = Meter(), []
    marker = object()
    result = accuracy.generate_and_score(None, data.task, items, [data.task.build_prompt(i) for i in items], marker,
                                         meter, 2, batches.append)
    assert result.scores == [1.0, 0.0, 1.0]
    assert result.predictions[0] == items[0].answer and result.generations[1] == " certainly not the answer"
    assert calls == [(2, marker, data.task.max_new_tokens), (1, marker, data.task.max_new_tokens)]
    assert batches == [2, 1] and meter.forwards == 3
