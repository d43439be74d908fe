"""Pydantic configs of the stages: what the CLI parses and the stage functions take."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stvcli.config import ModelOptions
from stvcli.data.options import DataOptions
from stvcli.engine import InsertMode

Sensitivity = Literal["l2", "relative", "layer"]


class Settings(BaseModel):
    """A config whose fields, less those that only steer the run (``run_only``), are
    what a stage's result depends on: ``settings()`` is recorded in its artifact."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    run_only: ClassVar[frozenset[str]] = frozenset({"workspace", "force", "batch_size", "quiet"})

    def settings(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(self.run_only))


class RunOptions(Settings):
    force: bool = False
    batch_size: int | None = None  # None: auto (largest that fits, halved on out-of-memory)
    quiet: bool = False


class StageOptions(RunOptions):
    workspace: Path


class ScanConfig(StageOptions):
    model: ModelOptions
    data: DataOptions
    shots: int | None = None  # None: the task's default (16 VQA, 4 two-way classification)
    queries: int = 100
    top_k: int | None = None
    top_frac: float | None = Field(default=None, gt=0, le=1)
    sensitivity: Sensitivity = "l2"
    seed: int = 0
    keep_contexts: int = 100  # many-shot activations kept for the bank (at the K locations)
    # Queries per sampled demonstration set in the many-shot passes: 1 = the paper's
    # independent sampling; G > 1 encodes each set's prefix once for G queries (faster,
    # fewer independent demonstration sets: see docs/benchmarks.md).
    group_size: int = Field(default=1, ge=1)
    # Pick the sensitivity and K (and suggest the insertion) by the reward of writing the
    # many-shot mean at each candidate's locations, on support queries the scan did not
    # use (docs/method.md §2.7); --sensitivity and --top-k/--top-frac then seed the grid.
    auto: bool = False
    auto_queries: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _one_k(self) -> "ScanConfig":
        if self.top_k is not None and self.top_frac is not None:
            raise ValueError("give --top-k or --top-frac, not both")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("--top-k must be at least 1")
        if self.queries < 1:
            raise ValueError("--queries must be at least 1")
        return self


#: Default many-shot contexts per centroid (T = 8 M): with T ~ 3 M a centroid averages
#: about three contexts and is little more than one context's noise.
CONTEXTS_PER_CLUSTER = 8


class BankConfig(StageOptions):
    clusters: int = 32
    contexts: int | None = None  # None: CONTEXTS_PER_CLUSTER x clusters
    seed: int = 0
    niter: int = 25


class SearchConfig(StageOptions):
    run_only = StageOptions.run_only | {"checkpoint_every"}

    iterations: int = 300
    samples: int = 32
    lr: float = 0.1
    queries_per_iteration: int = 4  # rewards averaged over this many support queries per candidate
    reward: Literal["first-token", "answer"] = "first-token"
    insert: InsertMode = "replace"
    select: Literal["argmax", "best-of"] = "argmax"
    best_of: int = 10  # draws scored on a held-out support slice when select = best-of
    holdout: int = 50  # support items held out for best-of selection, the start check and the diagnostics
    # Options beyond the paper (docs/method.md §4.1): per location, the location's mean
    # vector and "keep" (no edit) join the clusters as choices; the policy starts with
    # mean_prior of its mass on the mean, and its final pick is compared with that start.
    mean_choice: bool = False
    keep_choice: bool = False
    mean_prior: float = Field(default=0.5, gt=0, lt=1)
    # Pick the insertion (add or replace) by the hold-out reward of the mean vectors and
    # search with the mean and keep choices, best-of selection (docs/method.md §4.8).
    auto: bool = False
    checkpoint_every: int = 25
    seed: int = 0

    @model_validator(mode="after")
    def _enough_samples(self) -> "SearchConfig":
        if self.samples < 2:
            raise ValueError("--samples must be at least 2 (the advantage compares samples)")
        if self.iterations < 1 or self.queries_per_iteration < 1:
            raise ValueError("--iterations and --queries-per-iteration must be at least 1")
        return self


class MTVConfig(Settings):
    run_only = frozenset({"checkpoint_every"})

    iterations: int = 600
    samples: int = 32
    lr: float = 0.1
    init_logit: float = -1.0
    best_of: int = 10
    holdout: int = 50
    insert: InsertMode = "replace"  # the paper's rule; "add" is the separate method mtv-add
    threshold: float | None = Field(default=None, ge=0, lt=1)  # None: the official code's (0.8 Idefics2, else none)
    queries_per_iteration: int = Field(default=1, ge=1)  # the official code: one
    checkpoint_every: int = 25
    seed: int = 0


class EvalConfig(RunOptions):
    workspace: Path | None = None
    vectors: Path | None = None
    methods: list[str] = ["zero-shot", "icl:4", "mtv", "stv"]
    limit: int | None = None
    output_path: Path | None = None
    log_samples: bool = False
    insert: InsertMode | None = None  # None: the mode the vectors were searched with
    metric_variant: Literal["standard", "lavis", "official"] = "standard"
    seed: int = 0
    model: ModelOptions | None = None  # overrides (needed with --vectors only when its model is elsewhere)
    data: DataOptions | None = None
    mtv: MTVConfig = MTVConfig()

    @model_validator(mode="after")
    def _source(self) -> "EvalConfig":
        if self.workspace is None and self.vectors is None:
            raise ValueError("give --workspace or --vectors")
        return self
