"""Eval runs the methods that see the same prompts together (issue 17): same results as
one method at a time, each method's own forwards."""

from __future__ import annotations

import torch

from stvcli.data.tasks import get_task
from stvcli.data.types import TaskData
from stvcli.engine import Intervention
from stvcli.prefix import straightforward
from stvcli.shapes.variants import vqa_items
from stvcli.stages.config import EvalConfig
from stvcli.stages.evaluate import evaluate_method, evaluate_methods
from stvcli.stages.methods import parse_methods
from stvcli.testing.tiny import tiny_adapter


def test_grouped_methods_equal_one_method_at_a_time(tmp_path):
    adapter = tiny_adapter("llava")
    task = get_task("vqa")
    data = TaskData(task=task, support=vqa_items("support", 20), evaluation=vqa_items("test", 5), source={})
    items = data.evaluation
    generator = torch.Generator().manual_seed(0)
    locations = torch.tensor([[0, 1], [1, 3]])
    methods = parse_methods(["zero-shot", "stv", "mean-at-stv"])
    interventions = [None] + [Intervention(locations, 4 * torch.randn(2, adapter.head_dim, generator=generator))
                              for _ in range(2)]
    config = EvalConfig(workspace=tmp_path, quiet=True, batch_size=2)
    grouped = evaluate_methods(adapter, data, items, list(zip(methods, interventions)), config)
    with straightforward():
        alone = [evaluate_method(adapter, data, items, m, i, config) for m, i in zip(methods, interventions)]
    assert [r.method for r in grouped] == ["zero-shot", "stv", "mean-at-stv"]
    for together, single in zip(grouped, alone):
        assert together.samples == single.samples and together.summary == single.summary
        assert together.stats["forwards"] == single.stats["forwards"] == len(items)
        assert together.stats["seconds"] >= together.stats["model_seconds"] > 0
    assert grouped[1].samples != grouped[0].samples or grouped[2].samples != grouped[0].samples
