import pytest

from stvcli.errors import StvError
from stvcli.stages.evaluate import Method, markdown_table, parse_methods


def test_parse_methods():
    methods = parse_methods(["zero-shot", "icl:4", "stv", "stv+icl:2", "mtv", "mean-at-stv"])
    assert methods[1] == Method("icl:4", "zero-shot", 4)
    assert methods[3] == Method("stv+icl:2", "stv", 2)
    assert [m.base for m in methods] == ["zero-shot", "zero-shot", "stv", "stv", "mtv", "mean-at-stv"]


@pytest.mark.parametrize("bad", ["icl:0", "icl:x", "foo", "stv+x"])
def test_bad_methods_are_one_line_errors(bad):
    with pytest.raises(StvError):
        parse_methods([bad])


def test_duplicate_methods_refused():
    with pytest.raises(StvError, match="twice"):
        parse_methods(["stv", "stv"])


def test_markdown_table():
    report = {"results": {"t": {"stv": {"accuracy": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 10}}}}
    assert "| t | stv | 50.0 | [40.0, 60.0] | 10 |" in markdown_table(report)
