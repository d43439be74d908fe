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


def test_merge_keeps_what_a_rerun_does_not_redo():
    from stvcli.stages.evaluate import merge_results

    previous = {"results": {"t": {"zero-shot": {"accuracy": 0.1}, "stv": {"accuracy": 0.5}}, "u": {"icl:4": {}}},
                "paired": {"t": {"stv - zero-shot": {"difference": 0.4}}}, "stages": {"scan": {"forwards": 8}}}
    report = {"results": {"t": {"stv": {"accuracy": 0.6}, "mtv": {"accuracy": 0.3}}},
              "paired": {"t": {"stv - mtv": {"difference": 0.3}}}, "stages": {"eval": {}}}
    merged = merge_results(previous, report)
    assert merged["results"] == {"t": {"zero-shot": {"accuracy": 0.1}, "stv": {"accuracy": 0.6},
                                       "mtv": {"accuracy": 0.3}}, "u": {"icl:4": {}}}
    assert set(merged["paired"]["t"]) == {"stv - zero-shot", "stv - mtv"}
    assert merged["stages"] == {"scan": {"forwards": 8}, "eval": {}}


def test_read_results_refuses_a_broken_file_and_reads_nothing_from_a_missing_one(tmp_path):
    from stvcli.stages.evaluate import read_results

    assert read_results(tmp_path / "results.json", fix="x") == {}
    (tmp_path / "results.json").write_text('{"results": {"t": ')
    with pytest.raises(StvError, match="not a readable results file.*pass another --output-path"):
        read_results(tmp_path / "results.json", fix="pass another --output-path")
    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(StvError, match="not an stv results file"):
        read_results(tmp_path / "results.json", fix="x")


def test_one_results_file_never_mixes_two_models_for_a_task(tmp_path):
    from stvcli.config import ModelOptions
    from stvcli.data.options import DataOptions
    from stvcli.stages.evaluate import check_same_source

    previous = {"results": {"t": {}}, "sources": {"t": {"model": {"model": "a"}, "data": {"data": "d.jsonl"}}}}
    data = DataOptions.model_construct(task="t", data="d.jsonl")
    check_same_source(previous, "t", ModelOptions.model_construct(model="a"), data, tmp_path)
    check_same_source(previous, "other-task", ModelOptions.model_construct(model="b"), data, tmp_path)
    with pytest.raises(StvError, match="model a, not b"):
        check_same_source(previous, "t", ModelOptions.model_construct(model="b"), data, tmp_path)


def test_methods_write_where_the_vectors_say_unless_told_otherwise():
    from types import SimpleNamespace

    import torch

    from stvcli.stages.methods import METHODS, MethodContext

    vectors = SimpleNamespace(mode="add", write_at="prompt", intervention=lambda mode, write_at: (mode, write_at))
    bank = {"bank": torch.ones(2, 3, 4), "counts": torch.ones(2, 3), "locations": torch.tensor([[0, 0], [1, 1]]),
            "baseline": torch.zeros(2, 4)}
    workspace = SimpleNamespace(load=lambda kind, fingerprint=None: bank, exists=lambda kind: False)
    adapter = SimpleNamespace(fingerprint=lambda: {})

    def context(write_at=None, with_vectors=True):
        config = SimpleNamespace(insert=None, write_at=write_at)
        return MethodContext(config, adapter, None, vectors if with_vectors else None, workspace)

    assert context().write_at == "prompt" and context("every").write_at == "every"
    assert context(with_vectors=False).write_at == "every"  # no vectors, no choice: the paper's every token
    assert METHODS.get("stv").build(context())[0] == ("add", "prompt")
    assert METHODS.get("stv").build(context("every"))[0] == ("add", "every")
    mean = METHODS.get("mean-at-stv").build(context())[0]
    assert (mean.mode, mean.write_at) == ("add", "prompt")
    assert METHODS.get("mean-at-stv").build(context("every"))[0].write_at == "every"
