"""Pydantic configs of the stages: what the CLI parses and the stage functions take."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stvcli.config import ModelOptions
from stvcli.data.options import DataOptions
from stvcli.engine import InsertMode, WriteAt

Sensitivity = Literal["l2", "relative", "layer"]
Positive = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
LearningRate = Annotated[float, Field(gt=0, le=100)]


class Settings(BaseModel):
    """A config whose fields, less those that only steer the run (``run_only``), are
    what a stage's result depends on: ``settings()`` is recorded in its artifact."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)
    run_only: ClassVar[frozenset[str]] = frozenset({"workspace", "force", "batch_size", "quiet"})

    def settings(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(self.run_only))


class RunOptions(Settings):
    force: bool = False
    batch_size: Positive | None = None  # None: auto (largest that fits, halved on out-of-memory)
    quiet: bool = False


class StageOptions(RunOptions):
    workspace: Path


class ScanConfig(StageOptions):
    model: ModelOptions
    data: DataOptions
    shots: Positive | None = None  # None: the task's default (16 VQA, 4 two-way classification)
    queries: Positive = 100
    top_k: Positive | None = None
    top_frac: float | None = Field(default=None, gt=0, le=1)
    sensitivity: Sensitivity = "l2"
    seed: Seed = 0
    keep_contexts: Positive = 100  # many-shot activations kept for the bank (at the K locations)
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
        return self


#: Default many-shot contexts per centroid (T = 8 M): with T ~ 3 M a centroid averages
#: about three contexts and is little more than one context's noise.
CONTEXTS_PER_CLUSTER = 8


class BankConfig(StageOptions):
    clusters: Positive = 32
    contexts: Positive | None = None  # None: CONTEXTS_PER_CLUSTER x clusters
    seed: Seed = 0
    niter: Positive = 25

    @model_validator(mode="after")
    def _enough_contexts(self) -> "BankConfig":
        if self.contexts is not None and self.contexts < self.clusters:
            raise ValueError(f"--contexts {self.contexts} is below --clusters {self.clusters}: k-means needs "
                             "T >= M contexts; raise --contexts or lower --clusters")
        return self


class SearchConfig(StageOptions):
    run_only = StageOptions.run_only | {"checkpoint_every"}

    iterations: Positive = 300
    samples: int = 32
    lr: LearningRate = 0.1
    queries_per_iteration: Positive = 4  # rewards averaged over this many support queries per candidate
    reward: Literal["first-token", "answer", "complete"] = "first-token"
    insert: InsertMode = "replace"
    write_at: WriteAt = "every"  # where the rewards write the candidates (docs/method.md §5.1)
    select: Literal["argmax", "best-of"] = "argmax"
    best_of: Positive = 10  # draws scored on a held-out support slice when select = best-of
    holdout: int = Field(default=50, ge=0)  # support items held out for best-of selection, the start check and the diagnostics
    # Options beyond the paper (docs/method.md §4.1): per location, the location's mean
    # vector and "keep" (no edit) join the clusters as choices; the policy starts with
    # mean_prior of its mass on the mean, and its final pick is compared with that start.
    mean_choice: bool = False
    keep_choice: bool = False
    mean_prior: float = Field(default=0.5, gt=0, lt=1)
    # Pick the insertion (add or replace) by the hold-out reward of the mean vectors,
    # search with the mean and keep choices and best-of selection once per reward in
    # auto_rewards, and keep the search whose pick generates the most correct answers
    # on the hold-out (docs/method.md §4.8).
    auto: bool = False
    auto_rewards: list[Literal["first-token", "answer", "complete"]] = ["first-token", "complete"]
    auto_write_at: list[WriteAt] = ["every", "prompt"]  # --auto judges every pick written at each of these
    checkpoint_every: Positive = 25
    seed: Seed = 0

    @model_validator(mode="after")
    def _enough_samples(self) -> "SearchConfig":
        if self.samples < 2:
            raise ValueError("--samples must be at least 2 (the advantage compares samples)")
        if self.holdout < 1 and (self.select == "best-of" or self.auto):
            raise ValueError("--holdout must be at least 1 with --select best-of or --auto")
        if not self.auto_rewards or len(set(self.auto_rewards)) != len(self.auto_rewards):
            raise ValueError("--auto-rewards must name each reward at most once, e.g. first-token,complete")
        if not self.auto_write_at or len(set(self.auto_write_at)) != len(self.auto_write_at):
            raise ValueError("--auto-write-at must name each position at most once, e.g. every,prompt")
        return self


class MTVConfig(Settings):
    run_only = frozenset({"checkpoint_every"})

    iterations: Positive = 600
    samples: int = Field(default=32, ge=2)
    lr: LearningRate = 0.1
    init_logit: float = -1.0
    best_of: Positive = 10
    holdout: int = Field(default=50, ge=1)
    insert: InsertMode = "replace"  # the paper's rule; "add" is the separate method mtv-add
    threshold: float | None = Field(default=None, ge=0, lt=1)  # None: the official code's (0.8 Idefics2, else none)
    queries_per_iteration: int = Field(default=1, ge=1)  # the official code: one
    checkpoint_every: Positive = 25
    seed: Seed = 0


class EvalConfig(RunOptions):
    workspace: Path | None = None
    vectors: Path | None = None
    methods: list[str] = ["zero-shot", "icl:4", "mtv", "stv"]
    limit: Positive | None = None
    output_path: Path | None = None
    log_samples: bool = False
    insert: InsertMode | None = None  # None: the mode the vectors were searched with
    write_at: WriteAt | None = None  # None: where the vectors were chosen to be written
    metric_variant: Literal["standard", "lavis", "official"] = "standard"
    seed: Seed = 0
    model: ModelOptions | None = None  # overrides (needed with --vectors only when its model is elsewhere)
    data: DataOptions | None = None
    mtv: MTVConfig = MTVConfig()

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        from stvcli.errors import StvError
        from stvcli.stages.methods import method_list, parse_methods

        names = [m.strip() for m in methods if m.strip()]
        if not names:
            raise ValueError(f"--methods names no method; give a comma list of: {method_list()}")
        try:
            parse_methods(names)
        except StvError as error:
            raise ValueError(str(error)) from None
        return names

    @model_validator(mode="after")
    def _source(self) -> "EvalConfig":
        if self.workspace is None and self.vectors is None:
            raise ValueError("give --workspace or --vectors")
        return self
