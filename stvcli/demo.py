"""`stv demo`: the whole method, for real, on the shapes-world VLM, offline, in minutes.

Builds what is missing (the backbone conversion and the shapes VLM, cached), then
runs scan, bank, search and eval (zero-shot, ICL at 1/2/4/max shots, MTV, STV,
mean-at-stv) with small settings, and writes results.json and the pictures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stvcli.config import ModelOptions
from stvcli.data.options import DataOptions
from stvcli.console import say
from stvcli.engine import InsertMode
from stvcli.stages.common import get_adapter
from stvcli.stages.config import Sensitivity
from stvcli.workspace import check_writable

# The demo lets --auto choose the sensitivity and K (scan) and the insertion with the
# mean and keep choices (search) on support data (docs/method.md §2.7, §4.8; measured
# in docs/results.md). --sensitivity / --insert fix that stage's choice instead.
DEFAULT_TASK = "shapes-shape"
DEFAULT_BACKBONE = "gemma3"
DEFAULT_TOP_FRAC = 16 / 72  # 16 of Gemma-3-270m's 18 x 4 heads


class DemoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    workspace: Path = Path("runs/demo")
    task: str = DEFAULT_TASK
    backbone: str = DEFAULT_BACKBONE
    quick: bool = False  # smoke-run sizes
    force: bool = False
    quiet: bool = False
    seed: int = Field(default=0, ge=0)
    sensitivity: Sensitivity | None = None  # None: --auto chooses (checked here, before any stage runs)
    top_frac: float = Field(default=DEFAULT_TOP_FRAC, gt=0, le=1)
    insert: InsertMode | None = None  # None: --auto chooses
    max_icl_shots: int = Field(default=32, ge=1)  # cap for icl:max (the shapes prompts are short; see docs/shapes.md)
    mtv_iterations: int | None = Field(default=None, ge=1)  # None: the demo's size (the paper uses 600)
    build_seed: int = Field(default=0, ge=0)  # the shapes model's training seed: another seed, another build

    @field_validator("task")
    @classmethod
    def _shapes_task(cls, task: str) -> str:
        from stvcli.shapes.tasks import shapes_tasks

        names = [t.name for t in shapes_tasks()]
        if task not in names:
            raise ValueError(f"{task!r} is not a shapes task; choose from {', '.join(names)}")
        return task

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, backbone: str) -> str:
        from stvcli.shapes.backbones import BACKBONES

        if backbone not in BACKBONES:
            raise ValueError(f"{backbone!r} is not a backbone; choose from {', '.join(BACKBONES)}")
        return backbone


def demo_sizes(quick: bool) -> dict[str, int]:
    if quick:
        return dict(shots=8, queries=16, contexts=16, clusters=4, iterations=8, samples=8, mtv_iterations=8,
                    eval_items=24, holdout=8)
    return dict(shots=8, queries=32, contexts=32, clusters=16, iterations=40, samples=16, mtv_iterations=100,
                eval_items=60, holdout=50)


def run_demo(config: DemoConfig) -> dict[str, Any]:
    from stvcli.data.context import shots_that_fit
    from stvcli.data.loading import load_task_data
    from stvcli.shapes.build import TrainSettings, ensure_shapes_model
    from stvcli.stages.bank import run_bank
    from stvcli.stages.config import BankConfig, EvalConfig, MTVConfig, ScanConfig, SearchConfig
    from stvcli.stages.evaluate import run_eval, token_counter
    from stvcli.stages.report import write_report
    from stvcli.stages.scan import run_scan
    from stvcli.stages.search import run_search

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the demo prints its own status lines
    check_writable(config.workspace, "--workspace")
    sizes = demo_sizes(config.quick)
    if config.mtv_iterations is not None:
        sizes["mtv_iterations"] = config.mtv_iterations
    say(f"demo: shapes world, backbone {config.backbone}, task {config.task} -> {config.workspace}", config.quiet)
    model_dir = ensure_shapes_model(config.backbone, quiet=config.quiet,
                                    settings=TrainSettings(seed=config.build_seed) if config.build_seed else None)
    model = ModelOptions(model=str(model_dir), dtype="float32")
    data = DataOptions(data=f"shapes:{config.task}", task=config.task, seed=config.seed,
                       eval_limit=sizes["eval_items"])
    task_data = load_task_data(data)
    common = dict(workspace=config.workspace, force=config.force, quiet=config.quiet)
    run_scan(ScanConfig(model=model, data=data, shots=sizes["shots"], queries=sizes["queries"], seed=config.seed,
                        sensitivity=config.sensitivity or "l2", auto=config.sensitivity is None,
                        top_frac=config.top_frac, keep_contexts=sizes["contexts"],
                        **common), task_data)
    run_bank(BankConfig(clusters=sizes["clusters"], seed=config.seed, **common))
    run_search(SearchConfig(iterations=sizes["iterations"], samples=sizes["samples"], insert=config.insert or "replace",
                            auto=config.insert is None, holdout=sizes["holdout"], seed=config.seed, **common))

    adapter = get_adapter(model)
    task = task_data.task
    fit = shots_that_fit(token_counter(adapter), task, task_data.support, adapter.context_length)
    max_shots = max(5, min(fit, config.max_icl_shots))
    methods = ["zero-shot", "icl:1", "icl:2", "icl:4", f"icl:{max_shots}", "mtv", "stv", "mean-at-stv"]
    report = run_eval(EvalConfig(methods=methods, log_samples=True, seed=config.seed,
                                 mtv=MTVConfig(iterations=sizes["mtv_iterations"], samples=sizes["samples"],
                                               seed=config.seed), **common))
    pictures = write_report(config.workspace, config.workspace)
    say("demo: wrote " + ", ".join(str(p) for p in [config.workspace / "results.json", *pictures]), config.quiet)
    return report
