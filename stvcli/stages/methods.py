"""The evaluation methods: one registered builder per base method (docs/method.md §7).

A method the user writes is a base name, optionally with real demonstrations added
(``icl:N`` is ``zero-shot`` with N shots, ``stv+icl:N`` is ``stv`` with N shots).
Each base method is a builder registered in ``METHODS``: given the evaluation's
context it returns the intervention to insert (None for the bare model) and any
statistics of building it. Heavy modules are imported inside the builders so that the
CLI can list the methods without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stvcli.errors import StvError
from stvcli.registry import Registry

if TYPE_CHECKING:
    from stvcli.engine import InsertMode, Intervention, WriteAt
    from stvcli.models.base import ModelAdapter
    from stvcli.data.types import TaskData
    from stvcli.stages.config import EvalConfig
    from stvcli.vectors import TaskVectors
    from stvcli.workspace import Workspace

Built = tuple["Intervention | None", dict[str, Any]]


@dataclass
class MethodContext:
    """What a builder may use: the config, the loaded model, the data, the task vectors
    (from ``--vectors`` or the workspace) and the workspace (None with ``--vectors`` alone)."""

    config: EvalConfig
    adapter: ModelAdapter
    task_data: TaskData
    vectors: TaskVectors | None
    workspace: Workspace | None

    @property
    def mode(self) -> InsertMode:
        """The insertion rule: ``--insert``, else the one the vectors were searched with."""
        return self.config.insert or (self.vectors.mode if self.vectors else "replace")

    @property
    def write_at(self) -> WriteAt:
        """Where vectors are written: ``--write-at``, else where the vectors were chosen
        to be written (the means-at-STV-locations methods follow it too)."""
        return self.config.write_at or (self.vectors.write_at if self.vectors else "every")

    def need_workspace(self) -> Workspace:
        if self.workspace is None:
            raise StvError("this method needs the workspace's artifacts; pass --workspace")
        return self.workspace


@dataclass(frozen=True)
class MethodBuilder:
    name: str
    build: Callable[[MethodContext], Built]
    needs_workspace: bool
    description: str


METHODS: Registry[MethodBuilder] = Registry("method", hint="add +icl:N for N demonstrations, e.g. icl:4 or stv+icl:4")


def method(name: str, description: str, *, needs_workspace: bool = False):
    """Register the decorated function as the builder of base method ``name``."""

    def decorate(build: Callable[[MethodContext], Built]) -> Callable[[MethodContext], Built]:
        METHODS.register(name, MethodBuilder(name, build, needs_workspace, description))
        return build

    return decorate


@dataclass(frozen=True)
class Method:
    name: str  # as written by the user, e.g. "stv+icl:4"
    base: str  # a registered method
    shots: int = 0


def parse_methods(specs: list[str]) -> list[Method]:
    """``["zero-shot", "icl:4", "stv+icl:2"]`` -> methods; a clear error for unknown names."""
    methods = []
    for raw in specs:
        spec = raw.strip()
        base, _, icl = spec.partition("+")
        shots = 0
        if base.startswith("icl:"):
            base, icl = "zero-shot", base
        if icl:
            if not icl.startswith("icl:") or not icl[4:].isdigit() or int(icl[4:]) < 1:
                raise StvError(f"unknown method {spec!r}: write icl:N with N >= 1, e.g. icl:4 or stv+icl:4")
            shots = int(icl[4:])
        if base not in METHODS:
            raise StvError(f"unknown method {spec!r}; choose from {method_list()}")
        methods.append(Method(spec, base, shots))
    if len({m.name for m in methods}) != len(methods):
        raise StvError("a method is listed twice in --methods")
    return methods


def method_list() -> str:
    """The methods as the CLI help and errors name them."""
    return ", ".join(["icl:N", *METHODS.names(), "<method>+icl:N"])


def workspace_methods(methods: list[Method]) -> list[Method]:
    return [m for m in methods if METHODS.get(m.base).needs_workspace]


def build_intervention(context: MethodContext, method: Method) -> Built:
    return METHODS.get(method.base).build(context)


# ----------------------------------------------------------------------------- builders


def stage_forwards(workspace: Workspace | None, *kinds: str) -> int | None:
    """Forwards the workspace's artifacts of ``kinds`` recorded (None if one is missing)."""
    if workspace is None or not all(workspace.exists(kind) for kind in kinds):
        return None
    return sum(int(workspace.load(kind).meta["extra"].get("stats", {}).get("forwards", 0)) for kind in kinds)


@method("zero-shot", "the bare model")
def _zero_shot(context: MethodContext) -> Built:
    return None, {"forwards": 0}


@method("stv", "the searched task vectors (--vectors or the workspace's)")
def _stv(context: MethodContext) -> Built:
    if context.vectors is None:
        raise StvError("stv needs vectors: run `stv search` first or pass --vectors")
    return context.vectors.intervention(context.mode, context.write_at), {"forwards": stage_forwards(context.workspace, "scan", "bank",
                                                                                   "vectors")}


def _run_mtv(context: MethodContext, insert: InsertMode) -> Built:
    """MTV's search (built on first use, reused after) and its vectors, inserted as searched."""
    from stvcli.stages.mtv import mtv_intervention, run_mtv

    workspace = context.need_workspace()
    config = context.config
    mtv_config = config.mtv.model_copy(update={"insert": insert})
    result = run_mtv(workspace.root, context.adapter, context.task_data, mtv_config, config.batch_size, config.quiet,
                     config.force)
    artifact = workspace.load(result.kind, fingerprint=context.adapter.fingerprint())
    # MTV's means come from the scan's N many-shot forwards (half of the scan's 2N)
    forwards = int(result.stats.get("forwards", 0)) + int(result.stats.get("scan_forwards_shared", 0))
    return mtv_intervention(artifact, insert), {"search": result.stats, "forwards": forwards}


@method("mtv", "the MTV baseline as published (replacement), built on first use", needs_workspace=True)
def _mtv(context: MethodContext) -> Built:
    return _run_mtv(context, "replace")


@method("mtv-add", "MTV's search and means with add insertion (not the paper's rule)", needs_workspace=True)
def _mtv_add(context: MethodContext) -> Built:
    return _run_mtv(context, "add")


@method("mean-at-stv", "the bank's count-weighted mean at STV's locations", needs_workspace=True)
def _mean_at_stv(context: MethodContext) -> Built:
    from stvcli.stages.search import bank_means
    from stvcli.vectors import make_intervention

    workspace = context.need_workspace()
    bank = workspace.load("bank", fingerprint=context.adapter.fingerprint())
    means = bank_means(bank["bank"], bank["counts"])
    return (make_intervention(bank["locations"], means, bank["baseline"], context.mode, write_at=context.write_at),
            {"forwards": stage_forwards(workspace, "scan", "bank")})


@method("random-locations", "the many-shot mean at K random heads", needs_workspace=True)
def _random_locations(context: MethodContext) -> Built:
    import torch

    workspace = context.need_workspace()
    scan = workspace.load("scan", fingerprint=context.adapter.fingerprint())
    n_layers, n_heads = scan["many_mean"].shape[:2]
    generator = torch.Generator().manual_seed(context.config.seed)
    order = torch.randperm(n_layers * n_heads, generator=generator)[: len(scan["locations"])]
    return (_scan_means(context, scan, torch.stack([order // n_heads, order % n_heads], 1)),
            {"forwards": stage_forwards(workspace, "scan")})


@method("mean-all-heads", "the many-shot mean at every head", needs_workspace=True)
def _mean_all_heads(context: MethodContext) -> Built:
    from stvcli.engine import all_locations

    workspace = context.need_workspace()
    scan = workspace.load("scan", fingerprint=context.adapter.fingerprint())
    return (_scan_means(context, scan, all_locations(*scan["many_mean"].shape[:2])),
            {"forwards": stage_forwards(workspace, "scan")})


def _scan_means(context: MethodContext, scan: Any, locations: Any) -> Intervention:
    from stvcli.vectors import make_intervention

    vectors = scan["many_mean"][locations[:, 0], locations[:, 1]]
    baseline = scan["zero_mean"][locations[:, 0], locations[:, 1]]
    return make_intervention(locations, vectors, baseline, context.mode, write_at=context.write_at)
