"""The `stv` command line: parses options, calls the stage functions, prints results.

No computation lives here. User mistakes (``StvError``, invalid options) end in one
line on stderr and exit code 2.
"""

from __future__ import annotations

import errno
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from typer.core import TyperGroup

from stvcli import __version__
from stvcli.errors import StvError
from stvcli.stages.methods import method_list


#: Click's base error class, whichever click typer runs on (newer typers vendor their own).
ClickError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class OneLineErrors(TyperGroup):
    """Click's own usage errors (an unknown option, ``--clusters abc``) as one line on
    stderr and exit 2, like every other user mistake, instead of a help panel."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickError as error:
            if type(error).__name__ == "NoArgsIsHelpError":
                error.show()  # type: ignore[attr-defined]
                sys.exit(error.exit_code)  # type: ignore[attr-defined]
            command = error.ctx.command_path if getattr(error, "ctx", None) else "stv"
            message = " ".join(error.format_message().split())  # type: ignore[attr-defined]
            err.print(f"[bold red]error:[/] {message} (see `{command} --help`)", highlight=False, soft_wrap=True)
            sys.exit(2)
        except typer.Abort:
            err.print("[bold red]error:[/] aborted", highlight=False, soft_wrap=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    name="stv",
    help="Sensitivity-aware task vectors: many-shot in-context learning without the context.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Wide when piped, so tables and paths are not folded into 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user mistakes into one line on stderr (exit 2) instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StvError as error:
            fail(str(error))
        except ValidationError as error:
            fail(validation_message(error))
        except OSError as error:
            if error.errno not in USER_OS_ERRORS:
                raise
            where = f" {error.filename}" if error.filename else ""
            fail(f"cannot write or read{where}: {error.strerror or error}; check the path and its permissions "
                 "(--workspace, --output-path) and the free space")
        except KeyboardInterrupt:
            fail("interrupted; artifacts written so far are complete, rerun to continue", code=130)

    return wrapper


#: File-system errors a user causes or fixes (a read-only or full disk, a file where a
#: folder belongs); any other OSError is a bug and keeps its traceback.
USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR,
                  errno.EEXIST, errno.ENAMETOOLONG}

#: Config fields whose flag is not the field's own name with dashes.
FLAG_NAMES = {("model", "model"): "--model", ("data", "data"): "--data", ("data", "task"): "--task",
              ("data", "eval_limit"): "--eval-limit", ("data", "seed"): "--seed", ("model", "dtype"): "--dtype",
              ("vectors",): "--vectors"}


def flag_name(loc: Sequence[Any]) -> str:
    """A pydantic error location -> the option a user typed: ``("mtv", "threshold")``
    -> ``--mtv-threshold``, ``("data", "eval_limit")`` -> ``--eval-limit``."""
    parts = tuple(str(p) for p in loc if not isinstance(p, int) and p != "__root__")
    if not parts:
        return ""
    if parts in FLAG_NAMES:
        return FLAG_NAMES[parts]
    prefix = "mtv-" if parts[0] == "mtv" and len(parts) > 1 else ""
    return "--" + prefix + parts[-1].replace("_", "-")


def validation_message(error: ValidationError) -> str:
    """The first problem of a config, in the user's terms: ``--lr must be greater than 0, not -1.0``."""
    first = error.errors()[0]
    flag = flag_name(first.get("loc", ()))
    message = str(first.get("msg", error)).removeprefix("Value error, ")
    message = message.replace("Input should be", "must be").replace("String should", "must")
    value = first.get("input")
    plain = isinstance(value, (int, float, str)) and len(repr(value)) < 60 and first.get("type") != "value_error"
    shown = f", not {value!r}" if flag and plain else ""
    return f"{flag} {message}{shown}" if flag else message


def emit(summary: dict[str, Any], as_json: bool) -> None:
    from stvcli.distributed import is_main

    if as_json and is_main():  # under torchrun, rank 0 speaks for all ranks
        typer.echo(json.dumps(summary, indent=2, default=str))


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"stv {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=version_callback, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """stv: find where task information lives in a model, and write it into zero-shot passes."""


# ---------------------------------------------------------------- shared options
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Short name (see `stv models`), hub id, local directory or .gguf file.")]
Workspace = Annotated[Path, typer.Option("--workspace", "-w", help="Directory holding the stage artifacts.")]
DataOpt = Annotated[Optional[str], typer.Option("--data", help="Data source: hub id[@rev][:split], .jsonl, imagefolder dir, episode .json (see docs/data.md).")]
TaskOpt = Annotated[str, typer.Option("--task", "-t", help="Task name (see `stv tasks`).")]
BatchOpt = Annotated[str, typer.Option("--batch-size", help="Rows per forward, or 'auto' (halves on out-of-memory).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or status lines.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Recompute even when a valid artifact exists.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto | float32 | bfloat16 | float16")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
DeviceMapOpt = Annotated[Optional[str], typer.Option("--device-map", help="Shard over devices, e.g. 'auto'.")]
MaxMemoryOpt = Annotated[Optional[str], typer.Option("--max-memory", help="Per-device limits for --device-map, e.g. 0=70GiB,1=70GiB,cpu=200GiB (implies --device-map auto).")]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model's own code (Qwen-VL).")]
InsertOpt = Annotated[str, typer.Option("--insert", help="replace (paper) | add (query's own activation + offset)")]
WRITE_AT_HELP = "every (the last prompt token and every generated token) | prompt (the last prompt token only)"


def parse_batch_size(value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise StvError(f"--batch-size must be a positive integer or 'auto', not {value!r}")
    return int(value)


def parse_columns(value: str | None) -> dict[str, str] | None:
    if not value:
        return None
    pairs = [part.split("=", 1) for part in value.split(",") if part]
    if any(len(p) != 2 for p in pairs):
        raise StvError(f"--columns takes field=column pairs separated by commas, e.g. question=q,answers=ans; got {value!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def parse_max_memory(value: str | None) -> dict[str, str] | None:
    """``0=70GiB,1=70GiB,cpu=200GiB`` -> {"0": "70GiB", "1": "70GiB", "cpu": "200GiB"}."""
    if not value:
        return None
    pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise StvError(f"--max-memory takes device=size pairs separated by commas, e.g. 0=70GiB,1=70GiB,cpu=200GiB; "
                       f"got {value!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def model_options(model: str, dtype: str, device: str, device_map: str | None, projection_pattern: str | None = None,
                  max_memory: str | None = None, chat_template: bool | None = None, trust_remote_code: bool = False):
    from stvcli.config import ModelOptions

    limits = parse_max_memory(max_memory)
    return ModelOptions(model=model, dtype=dtype, device=device, device_map=device_map or ("auto" if limits else None),
                        max_memory=limits, projection_pattern=projection_pattern, chat_template=chat_template,
                        trust_remote_code=trust_remote_code)


def data_options(data: str | None, task: str, eval_data: str | None = None, image_root: str | None = None,
                 columns: str | None = None, seed: int = 0, eval_limit: int | None = None,
                 support_split: str | None = None, eval_split: str | None = None, revision: str | None = None,
                 support_limit: int | None = None):
    from stvcli.data.options import DataOptions

    return DataOptions(data=data, task=task, eval_data=eval_data, image_root=image_root,
                       columns=parse_columns(columns), seed=seed, eval_limit=eval_limit, support_split=support_split,
                       eval_split=eval_split, revision=revision, support_limit=support_limit)


# ---------------------------------------------------------------- listing
def print_table(columns: dict[str, str], rows: list[dict[str, Any]]) -> None:
    """A rich table: header -> row key; list values are joined with commas."""
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        values = [row.get(key) for key in columns.values()]
        table.add_row(*(", ".join(v) if isinstance(v, list) else "" if v is None else str(v) for v in values))
    out.print(table)


@app.command("models")
@user_errors
def models_command(as_json: JsonOpt = False) -> None:
    """List the supported model families and short names."""
    from stvcli.models.registry import list_models

    rows = list_models()
    if as_json:
        return emit({"models": rows}, True)
    print_table({"short name": "name", "hub id": "hub_id", "family": "family", "architectures": "architectures"}, rows)


@app.command("tasks")
@user_errors
def tasks_command(as_json: JsonOpt = False) -> None:
    """List the built-in tasks with their metric and default shots."""
    from stvcli.data.tasks import list_tasks

    rows = list_tasks()
    if as_json:
        return emit({"tasks": rows}, True)
    print_table({"task": "name", "kind": "kind", "metric": "metric", "default shots": "default_shots",
                 "description": "description"}, rows)


# ---------------------------------------------------------------- stages
@app.command("scan")
@user_errors
def scan_command(
    model: ModelOpt,
    workspace: Workspace,
    task: TaskOpt = "vqa",
    data: DataOpt = None,
    eval_data: Annotated[Optional[str], typer.Option("--eval-data", help="Separate evaluation source (else a disjoint split of --data).")] = None,
    image_root: Annotated[Optional[str], typer.Option("--image-root", help="Image root for episode files.")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", help="Column mapping field=column,...")] = None,
    support_split: Annotated[Optional[str], typer.Option("--support-split", help="Split the support pool comes from.")] = None,
    eval_split: Annotated[Optional[str], typer.Option("--eval-split", help="Split the evaluation items come from.")] = None,
    revision: Annotated[Optional[str], typer.Option("--revision", help="Hub revision of the data set.")] = None,
    support_limit: Annotated[Optional[int], typer.Option("--support-limit", help="Use at most N support items.")] = None,
    eval_limit: Annotated[Optional[int], typer.Option("--eval-limit", help="Hold out at most N evaluation items.")] = None,
    shots: Annotated[Optional[int], typer.Option("--shots", help="Demonstrations per many-shot prompt (task default).")] = None,
    queries: Annotated[int, typer.Option("--queries", help="Support queries scanned (2 forwards each).")] = 100,
    group_size: Annotated[int, typer.Option("--group-size", help="Queries sharing one sampled demonstration set (its prefix runs once); 1 = the paper's independent sampling.")] = 1,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Heads kept.")] = None,
    top_frac: Annotated[Optional[float], typer.Option("--top-frac", help="Heads kept, as a fraction of all heads (default 300/1024).")] = None,
    sensitivity: Annotated[str, typer.Option("--sensitivity", help="l2 (paper) | relative (delta / own norm) | layer (delta / its layer's mean delta)")] = "l2",
    auto: Annotated[bool, typer.Option("--auto", help="Choose the sensitivity and K by the reward of the mean vectors on support queries the scan did not use (recorded in the artifact).")] = False,
    seed: int = 0,
    batch_size: BatchOpt = "auto",
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
    chat_template: Annotated[Optional[bool], typer.Option("--chat-template/--no-chat-template", help="Wrap prompts in the model's chat template (default: the family's choice).")] = None,
    trust_remote_code: TrustOpt = False,
    projection_pattern: Annotated[Optional[str], typer.Option("--projection-pattern", help="Regex naming each layer's attention output projection, for unknown architectures.")] = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 1: find the heads that react most to in-context demonstrations.

    Data parallel under `torchrun --nproc_per_node N -m stvcli.cli scan ...` (see docs/scaling.md)."""
    from stvcli.stages.config import ScanConfig
    from stvcli.stages.scan import run_scan

    config = ScanConfig(
        model=model_options(model, dtype, device, device_map, projection_pattern, max_memory, chat_template,
                            trust_remote_code),
        data=data_options(data, task, eval_data, image_root, columns, seed, eval_limit, support_split, eval_split,
                          revision, support_limit),
        workspace=workspace, shots=shots, queries=queries, group_size=group_size, top_k=top_k, top_frac=top_frac,
        sensitivity=sensitivity, auto=auto, seed=seed, batch_size=parse_batch_size(batch_size), force=force,
        quiet=quiet,
    )
    result = run_scan(config)
    emit({"stage": "scan", "reused": result.reused, "locations": result.locations.tolist()[:20],
          "k": len(result.locations), "stats": result.stats, "artifact": str(workspace / "scan.safetensors")}, as_json)


@app.command("bank")
@user_errors
def bank_command(
    workspace: Workspace,
    clusters: Annotated[int, typer.Option("--clusters", help="k-means clusters per location (M).")] = 32,
    contexts: Annotated[Optional[int], typer.Option("--contexts", help="Many-shot contexts clustered (T >= M; default 8 x --clusters, the scan's kept contexts first).")] = None,
    seed: int = 0,
    batch_size: BatchOpt = "auto",
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 2: k-means banks of many-shot activations at the scanned heads."""
    from stvcli.stages.bank import run_bank
    from stvcli.stages.config import BankConfig

    result = run_bank(BankConfig(workspace=workspace, clusters=clusters, contexts=contexts, seed=seed,
                                 batch_size=parse_batch_size(batch_size), force=force, quiet=quiet))
    emit({"stage": "bank", "reused": result.reused, "shape": list(result.bank.shape), "stats": result.stats,
          "artifact": str(workspace / "bank.safetensors")}, as_json)


@app.command("search")
@user_errors
def search_command(
    workspace: Workspace,
    iterations: Annotated[int, typer.Option("--iterations", help="REINFORCE iterations.")] = 300,
    samples: Annotated[int, typer.Option("--samples", help="Samples per iteration (S).")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 0.1,
    queries_per_iteration: Annotated[int, typer.Option("--queries-per-iteration", help="Support queries each candidate's reward is averaged over.")] = 4,
    reward: Annotated[str, typer.Option("--reward", help="first-token (paper) | answer (answer log-likelihood) | complete (answer, then its end: also rewards stopping)")] = "first-token",
    insert: InsertOpt = "replace",
    write_at: Annotated[str, typer.Option("--write-at", help=f"Where the rewards write candidates: {WRITE_AT_HELP}.")] = "every",
    select: Annotated[str, typer.Option("--select", help="argmax (paper) | best-of (best of --best-of draws on held-out support items)")] = "argmax",
    holdout: Annotated[int, typer.Option("--holdout", help="Support items held out for best-of selection, the start check and the diagnostics.")] = 50,
    mean_choice: Annotated[bool, typer.Option("--mean-choice/--no-mean-choice", help="Offer each location's mean vector as a choice; the policy starts there (--mean-prior) and its pick is checked against it.")] = False,
    keep_choice: Annotated[bool, typer.Option("--keep-choice/--no-keep-choice", help="Offer 'keep' (no edit) at each location, so the search can switch heads off.")] = False,
    mean_prior: Annotated[float, typer.Option("--mean-prior", help="Starting probability of the mean choice.")] = 0.5,
    auto: Annotated[bool, typer.Option("--auto", help="Choose the insertion on held-out support items, search with the mean and keep choices once per --auto-rewards reward, keep the pick that answers most held-out items (recorded in the artifact).")] = False,
    auto_rewards: Annotated[str, typer.Option("--auto-rewards", help="With --auto: the rewards to search with, comma-separated; the pick whose generations score best on the hold-out wins.")] = "first-token,complete",
    auto_write_at: Annotated[str, typer.Option("--auto-write-at", help="With --auto: write each pick at each of these positions for the hold-out judge, comma-separated (every, prompt).")] = "every,prompt",
    seed: int = 0,
    batch_size: BatchOpt = "auto",
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 3: choose one bank vector per head with REINFORCE (resumes when interrupted)."""
    from stvcli.stages.config import SearchConfig
    from stvcli.stages.search import run_search

    result = run_search(SearchConfig(
        workspace=workspace, iterations=iterations, samples=samples, lr=lr,
        queries_per_iteration=queries_per_iteration, reward=reward, insert=insert, write_at=write_at, select=select,
        holdout=holdout, mean_choice=mean_choice, keep_choice=keep_choice, mean_prior=mean_prior, auto=auto,
        auto_rewards=[r.strip() for r in auto_rewards.split(",") if r.strip()],
        auto_write_at=[w.strip() for w in auto_write_at.split(",") if w.strip()], seed=seed,
        batch_size=parse_batch_size(batch_size), force=force, quiet=quiet))
    emit({"stage": "search", "reused": result.reused, "final_reward": result.rewards[-1] if result.rewards else None,
          "stats": result.stats, "artifact": str(workspace / "vectors.safetensors")}, as_json)


@app.command("eval")
@user_errors
def eval_command(
    workspace: Annotated[Optional[Path], typer.Option("--workspace", "-w", help="Workspace with the stage artifacts.")] = None,
    vectors: Annotated[Optional[Path], typer.Option("--vectors", help="A vectors.safetensors file (no workspace needed).")] = None,
    methods: Annotated[str, typer.Option("--methods", help=f"Comma list of: {method_list()}.")] = "zero-shot,icl:4,mtv,stv",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Evaluate the first N items.")] = None,
    output_path: Annotated[Optional[Path], typer.Option("--output-path", help="Directory for results.json (default: the workspace).")] = None,
    log_samples: Annotated[bool, typer.Option("--log-samples", help="Also write samples_<task>.jsonl.")] = False,
    insert: Annotated[Optional[str], typer.Option("--insert", help="Override the insertion mode the vectors were searched with.")] = None,
    write_at: Annotated[Optional[str], typer.Option("--write-at", help=f"Override where the vectors are written: {WRITE_AT_HELP}.")] = None,
    metric_variant: Annotated[str, typer.Option("--metric-variant", help="VQA normalisation: standard | lavis | official")] = "standard",
    mtv_iterations: Annotated[int, typer.Option("--mtv-iterations", help="MTV REINFORCE iterations (paper: 600).")] = 600,
    mtv_threshold: Annotated[Optional[float], typer.Option("--mtv-threshold", help="MTV's final draws skip heads below this probability (default: the official code's, 0.8 for Idefics2, else none).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model override (default: the one the artifacts were made with).")] = None,
    data: DataOpt = None,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Task override (with --data).")] = None,
    device_map: Annotated[Optional[str], typer.Option("--device-map", help="With --model: shard over devices, e.g. 'auto'.")] = None,
    max_memory: Annotated[Optional[str], typer.Option("--max-memory", help="With --model: per-device limits, e.g. 0=70GiB,cpu=200GiB.")] = None,
    trust_remote_code: TrustOpt = False,
    seed: int = 0,
    batch_size: BatchOpt = "auto",
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stage 4: evaluate zero-shot, ICL, MTV and STV on the same held-out items."""
    from stvcli.stages.config import EvalConfig
    from stvcli.stages.evaluate import markdown_table, run_eval

    if (data is None) != (task is None) and data is not None:
        raise StvError("--data needs --task")
    config = EvalConfig(
        workspace=workspace, vectors=vectors, methods=[m for m in methods.split(",") if m.strip()], limit=limit,
        output_path=output_path, log_samples=log_samples, insert=insert, write_at=write_at,
        metric_variant=metric_variant, seed=seed,
        batch_size=parse_batch_size(batch_size), force=force, quiet=quiet,
        model=model_options(model, "auto", "auto", device_map, None, max_memory,
                            trust_remote_code=trust_remote_code) if model else None,
        data=data_options(data, task, seed=seed) if task else None,
        mtv={"iterations": mtv_iterations, "threshold": mtv_threshold, "seed": max(seed, 0)},
    )
    report = run_eval(config)
    if as_json:
        return emit(report, True)
    from stvcli.distributed import is_main

    if is_main():
        out.print(markdown_table(report), highlight=False)


@app.command("plan")
@user_errors
def plan_command(
    model: ModelOpt,
    task: TaskOpt = "vqa",
    data: Annotated[Optional[str], typer.Option("--data", help="A local data file/folder to read and count (default: the task's data; hub data is not downloaded: typical items are assumed).")] = None,
    eval_limit: Annotated[Optional[int], typer.Option("--eval-limit", help="Hold out at most N evaluation items (as scan's).")] = None,
    shots: Annotated[Optional[int], typer.Option("--shots", help="Demonstrations per many-shot prompt (task default).")] = None,
    queries: Annotated[Optional[int], typer.Option("--queries", help="Support queries scanned (scan's default: 100).")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Heads kept.")] = None,
    top_frac: Annotated[Optional[float], typer.Option("--top-frac", help="Heads kept, as a fraction of all heads (default 300/1024).")] = None,
    clusters: Annotated[Optional[int], typer.Option("--clusters", help="k-means clusters per location (bank's default: 32).")] = None,
    contexts: Annotated[Optional[int], typer.Option("--contexts", help="Many-shot contexts clustered (default 8 x --clusters).")] = None,
    iterations: Annotated[Optional[int], typer.Option("--iterations", help="Search iterations (default 300).")] = None,
    samples: Annotated[Optional[int], typer.Option("--samples", help="Samples per search iteration (default 32).")] = None,
    queries_per_iteration: Annotated[Optional[int], typer.Option("--queries-per-iteration", help="Support queries per search candidate (default 4).")] = None,
    holdout: Annotated[Optional[int], typer.Option("--holdout", help="Search hold-out items (default 50).")] = None,
    select: Annotated[Optional[str], typer.Option("--select", help="argmax (default) | best-of")] = None,
    mean_choice: Annotated[Optional[bool], typer.Option("--mean-choice/--no-mean-choice", help="As `stv search`.")] = None,
    keep_choice: Annotated[Optional[bool], typer.Option("--keep-choice/--no-keep-choice", help="As `stv search`.")] = None,
    mtv_iterations: Annotated[Optional[int], typer.Option("--mtv-iterations", help="MTV iterations (default 600).")] = None,
    methods: Annotated[Optional[str], typer.Option("--methods", help="Eval methods, comma list (default zero-shot,icl:4,mtv,stv).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "--items", help="Evaluate the first N items (as eval's --limit).")] = None,
    support_items: Annotated[Optional[int], typer.Option("--support-items", help="Support items to assume for data that is not read.")] = None,
    eval_items: Annotated[Optional[int], typer.Option("--eval-items", help="Evaluation items to assume for data that is not read.")] = None,
    image_size: Annotated[str, typer.Option("--image-size", help="Image size assumed for dynamic-resolution models (Qwen2-VL): 448 or WxH.")] = "448",
    throughput: Annotated[Optional[str], typer.Option("--throughput", help="Forwards per second, for the time per stage: 12, or 12,scan=3,bank=3 per stage.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per forward for the KV-cache memory figure.")] = 32,
    dtype: DtypeOpt = "auto",
    chat_template: Annotated[Optional[bool], typer.Option("--chat-template/--no-chat-template", help="Count prompts with or without the chat template (default: the family's choice).")] = None,
    workspace: Annotated[Optional[Path], typer.Option("--workspace", "-w", help="Workspace the artifact paths are shown in (nothing is written).")] = None,
    seed: int = 0,
    as_json: JsonOpt = False,
) -> None:
    """Forwards, prompt lengths, memory and artifacts of every stage, from the model's config (no weights)."""
    from stvcli.plan import PlanConfig, make_plan, render_plan

    plan = make_plan(PlanConfig(
        model=model, task=task, data=data, eval_limit=eval_limit, seed=seed, shots=shots, queries=queries,
        top_k=top_k, top_frac=top_frac, clusters=clusters, contexts=contexts, iterations=iterations,
        samples=samples, queries_per_iteration=queries_per_iteration, holdout=holdout, select=select,
        mean_choice=mean_choice, keep_choice=keep_choice, mtv_iterations=mtv_iterations,
        methods=[m for m in methods.split(",") if m.strip()] if methods is not None else None, limit=limit,
        support_items=support_items, eval_items=eval_items, image_size=image_size, throughput=throughput,
        batch_size=batch_size, dtype=dtype, chat_template=chat_template, workspace=workspace))
    if as_json:
        return emit(plan, True)
    typer.echo(render_plan(plan))


@app.command("report")
@user_errors
def report_command(
    workspace: Workspace,
    output_path: Annotated[Optional[Path], typer.Option("--output-path", help="Directory for the PNGs (default: the workspace).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Pictures: sensitivity heatmap, search reward curve, accuracy by method."""
    from stvcli.stages.report import write_report

    paths = write_report(workspace, output_path or workspace)
    if as_json:
        return emit({"pictures": [str(p) for p in paths]}, True)
    for path in paths:
        out.print(str(path), highlight=False)


@app.command("serve-local")
@user_errors
def serve_command(
    vectors: Annotated[list[Path], typer.Option("--vectors", help="vectors.safetensors (repeat for several sets).")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Base model (default: the vectors' model).")] = None,
    host: Annotated[str, typer.Option("--host", help="Bind address (loopback unless you mean otherwise).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="STV_API_KEY", help="Require this bearer token.")] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Rows per forward.")] = 8,
    max_image_bytes: Annotated[int, typer.Option("--max-image-bytes", help="Largest decoded image accepted.")] = 20 * 2**20,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", help="Largest request body accepted.")] = 64 * 2**20,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Waiting requests before answering 503.")] = 256,
    allow_remote_images: Annotated[bool, typer.Option("--allow-remote-images", help="Fetch http(s) image URLs.")] = False,
    insert: Annotated[Optional[str], typer.Option("--insert", help="Override the vectors' insertion mode.")] = None,
    write_at: Annotated[Optional[str], typer.Option("--write-at", help=f"Override where the vectors are written: {WRITE_AT_HELP}.")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    chat_template: Annotated[Optional[bool], typer.Option("--chat-template/--no-chat-template", help="Wrap prompts in the model's chat template (default: the family's choice).")] = None,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Serve a model with its task vectors behind an OpenAI-compatible API."""
    from stvcli.serve import ServeConfig, serve

    serve(ServeConfig(vectors=vectors, model=model, host=host, port=port, api_key=api_key, max_batch=max_batch,
                      max_image_bytes=max_image_bytes, max_body_bytes=max_body_bytes, max_queue=max_queue,
                      allow_remote_images=allow_remote_images, insert=insert, write_at=write_at, dtype=dtype,
                      device=device,
                      chat_template=chat_template, trust_remote_code=trust_remote_code))


@app.command("demo")
@user_errors
def demo_command(
    task: Annotated[str, typer.Option("--task", "-t", help="A shapes task (see `stv tasks`).")] = "",
    backbone: Annotated[str, typer.Option("--backbone", help="smollm2 | gemma3")] = "",
    workspace: Annotated[Path, typer.Option("--workspace", "-w")] = Path("runs/demo"),
    quick: Annotated[bool, typer.Option("--quick", help="Tiny settings for a smoke run (a few minutes).")] = False,
    sensitivity: Annotated[str, typer.Option("--sensitivity", help="l2 (paper) | relative | layer (default: chosen by scan --auto)")] = "",
    insert: Annotated[str, typer.Option("--insert", help="replace (paper) | add (default: chosen by search --auto)")] = "",
    mtv_iterations: Annotated[
        int | None, typer.Option("--mtv-iterations", min=1, help="MTV REINFORCE iterations (demo: 100; paper: 600).")
    ] = None,
    build_seed: Annotated[int, typer.Option("--build-seed", help="Train the shapes model with this seed (another build, cached apart; 0: the default build).")] = 0,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Build the shapes-world VLM offline and run the whole method on it."""
    from stvcli.demo import DemoConfig, run_demo
    from stvcli.stages.evaluate import markdown_table

    chosen = {"task": task, "backbone": backbone, "sensitivity": sensitivity, "insert": insert}
    overrides = {k: v for k, v in chosen.items() if v}
    report = run_demo(DemoConfig(workspace=workspace, quick=quick, force=force, quiet=quiet,
                                 mtv_iterations=mtv_iterations, build_seed=build_seed, **overrides))
    if as_json:
        return emit(report, True)
    out.print(markdown_table(report), highlight=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
