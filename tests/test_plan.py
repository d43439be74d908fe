"""`stv plan`: forwards per stage against the real stages on a tiny model, the context
warnings, offline planning for the registered models, the JSON shape, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stvcli.testing.cli import assert_one_line_error, invoke
from stvcli.plan import PlanConfig, dynamic_image_tokens, make_plan



@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> dict:
    from stvcli.data.synthetic import write_vqa_jsonl
    from stvcli.testing.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("plan")
    return {"root": root, "model": save_tiny_model("llava", root / "model"),
            "data": write_vqa_jsonl(root / "data", n=120, seed=3)}


def stage_forwards(workspace: Path, kind: str) -> int:
    from stvcli.artifacts import load_artifact
    from stvcli.workspace import Workspace

    return int(load_artifact(Workspace(workspace).path(kind), kind).meta["extra"]["stats"]["forwards"])


def test_plan_forwards_equal_the_stages_forwards_on_a_tiny_model(bed, tmp_path):
    """Every stage run for real with the plan's settings records exactly the forwards the
    plan claims (the scan, a bank that runs contexts beyond the kept ones, the search with
    best-of + mean choice and again with the default argmax, MTV, eval's results.json)."""
    from stvcli.config import ModelOptions
    from stvcli.data.options import DataOptions
    from stvcli.stages.bank import run_bank
    from stvcli.stages.config import BankConfig, EvalConfig, ScanConfig, SearchConfig
    from stvcli.stages.evaluate import run_eval
    from stvcli.stages.scan import run_scan
    from stvcli.stages.search import run_search

    workspace = tmp_path / "ws"
    methods = ["zero-shot", "icl:2", "mtv", "stv", "mean-at-stv"]
    common = dict(model=str(bed["model"]), task="vqa", data=str(bed["data"]), eval_limit=12, shots=3, queries=8,
                  top_k=5, clusters=4, contexts=11, iterations=2, samples=3, queries_per_iteration=2, holdout=6,
                  mtv_iterations=2, methods=methods, limit=5, workspace=workspace)
    plan = make_plan(PlanConfig(**common, select="best-of", mean_choice=True))
    stages = plan["stages"]
    assert all(stages[s]["basis"] == "exact" for s in stages)

    model = ModelOptions(model=str(bed["model"]), dtype="float32", device="cpu")
    data = DataOptions(task="vqa", data=str(bed["data"]), eval_limit=12)
    run_scan(ScanConfig(model=model, data=data, workspace=workspace, shots=3, queries=8, top_k=5, quiet=True))
    assert stage_forwards(workspace, "scan") == stages["scan"]["forwards"] == 16
    run_bank(BankConfig(workspace=workspace, clusters=4, contexts=11, quiet=True))
    assert stage_forwards(workspace, "bank") == stages["bank"]["forwards"] == 3
    search = dict(workspace=workspace, iterations=2, samples=3, queries_per_iteration=2, holdout=6, quiet=True)
    run_search(SearchConfig(**search, select="best-of", mean_choice=True))
    assert stage_forwards(workspace, "vectors") == stages["search"]["forwards"]
    report = run_eval(EvalConfig(workspace=workspace, methods=methods, limit=5, quiet=True, mtv={"iterations": 2}))
    assert stage_forwards(workspace, "mtv") == stages["mtv"]["forwards"]
    results = report["results"]["vqa"]
    for method in methods:
        assert results[method]["build_forwards"] == plan["methods"][method]["build_forwards"], method
        assert results[method]["eval_forwards"] == plan["methods"][method]["eval_forwards"] == 5, method

    default = make_plan(PlanConfig(**common))  # argmax: no hold-out, the diagnostics run on training items
    run_search(SearchConfig(**search, force=True))
    assert stage_forwards(workspace, "vectors") == default["stages"]["search"]["forwards"] == 2 * 3 * 2 + 10 * 6


def test_plan_prompt_lengths_match_the_models_own_count(bed):
    """With the model's tokenizer on disk the plan counts prompts as the adapter does
    (image tokens from the config): the longest zero-shot prompt is the stages' figure."""
    from stvcli.data.loading import load_task_data
    from stvcli.data.options import DataOptions
    from stvcli.models.loading import load_model
    from stvcli.config import ModelOptions

    plan = make_plan(PlanConfig(model=str(bed["model"]), task="vqa", data=str(bed["data"]), eval_limit=12, shots=3))
    assert "measured" in plan["tokens"]["how"]
    adapter = load_model(ModelOptions(model=str(bed["model"]), dtype="float32", device="cpu"))
    data = load_task_data(DataOptions(task="vqa", data=str(bed["data"]), eval_limit=12))
    counts = adapter.token_counts([data.task.build_prompt(item) for item in [*data.support, *data.evaluation]])
    assert plan["stages"]["scan"]["prompt_tokens"]["zero-shot"]["longest"] == max(counts)
    assert plan["stages"]["scan"]["prompt_tokens"]["zero-shot"]["mean"] == round(sum(counts) / len(counts))


def test_qwen_vl_at_64_shots_warns_that_the_shots_do_not_fit(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan = make_plan(PlanConfig(model="qwen-vl", task="vizwiz", shots=64))
    many = plan["stages"]["scan"]["prompt_tokens"]["64-shot"]["mean"]
    assert many > 64 * 256 > plan["model"]["context_length"] == 8192
    assert plan["model"]["image_tokens"] == 256 + 7 and plan["model"]["trained_length"] == 2048
    warnings = "\n".join(plan["warnings"])
    assert "scan: 64-shot prompts need" in warnings and "takes 8,192" in warnings and "--shots" in warnings
    assert "seq_length 2,048" in warnings and "--batch-size 1" in warnings
    fits = make_plan(PlanConfig(model="idefics2", task="vizwiz", shots=64))
    assert not any(w.startswith("scan:") for w in fits["warnings"])  # 64 x 66 tokens fit 32k


def test_offline_plan_for_idefics2_prints_every_stage(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import stvcli.models.loading as loading

    monkeypatch.setattr(loading, "_hub_reachable", lambda *a, **k: pytest.fail("the hub was probed"))
    result = invoke("plan", "--model", "idefics2", "--task", "vizwiz", "--shots", "64", "--throughput", "20,scan=5")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "32 layers x 32 heads x head_dim 128" in out and "context 32,768" in out and "64 + 2" in out
    for stage, forwards in (("scan", "200"), ("bank", "156"), ("search", "38,900"), ("mtv", "19,700")):
        assert any(line.split()[:2] == [stage, forwards] for line in out.splitlines()), (stage, out)
    assert "assumed" in out and "lmms-lab/VizWiz-VQA is not read" in out
    assert "40 s" in out  # scan: 200 forwards at 5/s


def test_json_shape(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = invoke("plan", "--model", "qwen2-vl", "--task", "cub", "--json", "-w", str(tmp_path / "ws"),
                    "--throughput", "10", "--image-size", "640x480")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert set(plan) >= {"model", "task", "data", "settings", "tokens", "stages", "methods", "total", "assumptions",
                         "warnings"}
    assert list(plan["stages"]) == ["scan", "bank", "search", "mtv", "eval"]
    for stage in plan["stages"].values():
        assert set(stage) >= {"forwards", "basis", "formula", "prompt_tokens", "memory_bytes", "artifacts", "seconds"}
        assert stage["seconds"] == pytest.approx(stage["forwards"] / 10)
    assert str(tmp_path / "ws" / "scan.safetensors") in plan["stages"]["scan"]["artifacts"]
    assert plan["model"]["image_tokens"] == dynamic_image_tokens((640, 480), 28) + 2 == 23 * 17 + 2
    assert plan["total"]["forwards"] == sum(s["forwards"] for s in plan["stages"].values())
    assert plan["task"]["shots"] == 4 and plan["settings"]["top_k"] == round(300 / 1024 * 28 * 28)


def test_defaults_are_the_stages_defaults(monkeypatch):
    from stvcli.stages.config import BankConfig, EvalConfig, MTVConfig, ScanConfig, SearchConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = make_plan(PlanConfig(model="idefics2", task="okvqa"))["settings"]
    assert settings["queries"] == ScanConfig.model_fields["queries"].default
    assert settings["clusters"] == BankConfig.model_fields["clusters"].default
    assert settings["iterations"] == SearchConfig.model_fields["iterations"].default
    assert settings["samples"] == SearchConfig.model_fields["samples"].default
    assert settings["mtv_iterations"] == MTVConfig.model_fields["iterations"].default
    assert settings["methods"] == EvalConfig.model_fields["methods"].default
    assert settings["shots"] == 4 and settings["top_k"] == 300


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--model", "someone/unknown-model", "--task", "vizwiz"], "offline"),
        (["--model", "/nope/model", "--task", "vizwiz"], "does not exist"),
        (["--model", "gemma3", "--task", "vizwiz"], "text-only"),
        (["--model", "idefics2", "--task", "nope"], "unknown task"),
        (["--model", "idefics2", "--task", "vqa"], "--support-items"),
        (["--model", "idefics2", "--task", "vizwiz", "--samples", "1"], "--samples must be at least 2"),
        (["--model", "idefics2", "--task", "vizwiz", "--throughput", "fast"], "--throughput"),
        (["--model", "idefics2", "--task", "vizwiz", "--throughput", "warp=3"], "unknown stage"),
        (["--model", "idefics2", "--task", "vizwiz", "--top-k", "5000"], "--top-k 5000 exceeds"),
        (["--model", "idefics2", "--task", "vizwiz", "--methods", "foo"], "unknown method"),
        (["--model", "idefics2", "--task", "vizwiz", "--clusters", "8", "--contexts", "4"], "T >= M"),
        (["--model", "idefics2", "--task", "vizwiz", "--image-size", "big"], "--image-size"),
        (["--model", "idefics2", "--task", "vizwiz", "--mtv-iterations", "0"], "--mtv-iterations"),
    ],
)
def test_bad_input_is_one_line(monkeypatch, args, fragment):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_one_line_error(invoke("plan", *args), fragment)


def test_registry_geometry_agrees_with_the_config_readers(tmp_path, monkeypatch):
    """The short names' geometry is what `plan` reads from configs of the same shape:
    Idefics2 (transformers' defaults are idefics2-8b's) and Qwen-VL (its hub config.json,
    read as JSON since transformers needs the remote code for it)."""
    from transformers import Idefics2Config

    from stvcli.models.registry import known_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    idefics2 = tmp_path / "idefics2"
    config = Idefics2Config()
    config.architectures = ["Idefics2ForConditionalGeneration"]
    config.save_pretrained(idefics2)
    qwen_vl = tmp_path / "qwen-vl"
    qwen_vl.mkdir()
    (qwen_vl / "config.json").write_text(json.dumps({
        "architectures": ["QWenLMHeadModel"], "model_type": "qwen",
        "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig"},
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "kv_channels": 128,
        "intermediate_size": 22016, "max_position_embeddings": 8192, "seq_length": 2048, "vocab_size": 151936,
        "visual": {"image_size": 448, "patch_size": 14, "width": 1664, "layers": 48, "heads": 16, "output_dim": 4096},
    }))
    for name, directory in (("idefics2", idefics2), ("qwen-vl", qwen_vl)):
        plan = make_plan(PlanConfig(model=str(directory), task="vizwiz"))["model"]
        known = known_model(name).geometry
        assert (plan["n_layers"], plan["n_heads"], plan["head_dim"], plan["context_length"], plan["trained_length"],
                plan["sliding_window"], plan["image_tokens"]) == (
            known.n_layers, known.n_heads, known.head_dim, known.context_length, known.trained_length,
            known.sliding_window, known.image_tokens + known.image_extra), name
    assert make_plan(PlanConfig(model=str(idefics2), task="vizwiz"))["model"]["kv_heads"] == 8


def test_family_constants_match_the_adapters():
    from stvcli.models.registry import ADAPTERS
    from stvcli.plan import CHAT_TEMPLATE_FAMILIES, PREFIX_SHARING_FAMILIES

    families = {cls.family: cls for _, cls in ADAPTERS.items()}
    assert CHAT_TEMPLATE_FAMILIES == {f for f, cls in families.items() if cls.chat_template_default}
    assert PREFIX_SHARING_FAMILIES == {f for f, cls in families.items() if cls.prefix_sharing}
