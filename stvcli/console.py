"""Status output of the stages: lines and progress bars on stderr, from rank 0 only
under torchrun (``say_rank`` speaks for every rank)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from stvcli.distributed import is_main, rank, world_size

console = Console(stderr=True)


def say(message: str, quiet: bool = False) -> None:
    """A status line (from rank 0 only when launched with torchrun)."""
    if not quiet and is_main():
        console.print(message, highlight=False)


def say_rank(message: str, quiet: bool = False) -> None:
    """A status line from every rank, prefixed with the rank when there are several."""
    if not quiet:
        prefix = f"[rank {rank()}/{world_size()}] " if world_size() > 1 else ""
        console.print(prefix + message, highlight=False, markup=False)


def progress(quiet: bool) -> Progress:
    """A rich progress display; silent when quiet or when stderr is not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or not console.is_terminal or not is_main(),  # rank 0 only under torchrun
        transient=False,
    )
