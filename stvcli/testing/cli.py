"""CLI test helpers: run ``stv`` in-process and check the one-line error promise."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner

from stvcli.cli import app

runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def assert_one_line_error(result: Any, fragment: str) -> None:
    """Exit 2, one line starting ``error:`` that contains ``fragment``, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
