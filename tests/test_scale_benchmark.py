"""benchmarks/scale.py and the paper-geometry models (issue 17): geometry, the processor,
and that the numbers the benchmark reports are the stages' own."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stvcli.testing.scale import (
    IDEFICS2_8B,
    SCALE_CPU,
    SCALE_TINY,
    PixelProcessor,
    build_scale,
    parameter_counts,
    scale_adapter,
    scale_config,
)
from stvcli.prompt import Prompt
from stvcli.testing.tiny import tiny_image, tiny_tokenizer
from stvcli.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent


def _load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


scale = _load_benchmark("scale")


def test_cpu_scale_model_has_the_papers_head_grid():
    adapter = scale_adapter(SCALE_CPU)
    assert (adapter.n_layers, adapter.n_heads) == (32, 32)  # 1,024 heads, as the paper's models
    assert adapter.head_dim == SCALE_CPU.head_dim == 8
    assert adapter.family == "idefics2" and adapter.prefix_sharing
    prompt_tokens = adapter.encode([Prompt("a <image> b", (tiny_image(0),))])
    image_id = adapter.tokenizer.convert_tokens_to_ids("<image>")
    assert int((prompt_tokens["input_ids"] == image_id).sum()) == 64  # Idefics2-8B's 64 latents per image


def test_idefics2_8b_geometry_is_the_real_models():
    config = scale_config(IDEFICS2_8B, tiny_tokenizer())
    text, vision, perceiver = config.text_config, config.vision_config, config.perceiver_config
    assert (text.num_hidden_layers, text.num_attention_heads, text.head_dim, text.hidden_size) == (32, 32, 128, 4096)
    assert (text.num_key_value_heads, text.intermediate_size, text.vocab_size) == (8, 14336, 32003)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size, vision.image_size) == (1152, 27, 14, 980)
    assert (perceiver.resampler_n_latents, perceiver.resampler_depth) == (64, 3)
    model, _ = build_scale(IDEFICS2_8B, dtype=torch.bfloat16, device="meta")  # shapes only, no memory
    counts = parameter_counts(model)
    assert 7.2e9 < counts["text"] < 7.4e9 and 8.0e9 < counts["total"] < 8.6e9  # Mistral-7B + tower: "8B"


def test_pixel_processor_matches_transformers_idefics2_processor():
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "Idefics2ImageProcessorPil"):
        pytest.skip("this transformers has no PIL Idefics2 image processor")
    tokenizer = tiny_tokenizer()
    ours = PixelProcessor(tokenizer, image_seq_len=5, image_size=32)
    reference = transformers.Idefics2Processor(
        image_processor=transformers.Idefics2ImageProcessorPil(size={"height": 32, "width": 32},
                                                               do_image_splitting=False),
        tokenizer=tokenizer, image_seq_len=5)
    texts = ["Q <image> a: red\n<image>what", "<image>hi"]
    images = [[tiny_image(0), tiny_image(1)], [tiny_image(2)]]
    expected = reference(text=texts, images=images, padding=True, return_tensors="pt")
    got = ours(text=texts, images=images)
    assert set(got) == set(expected)
    for key in expected:
        assert torch.equal(got[key].to(expected[key].dtype), expected[key]), key


def test_pixel_processor_checks_image_counts_and_pads_missing_images():
    processor = PixelProcessor(tiny_tokenizer(), image_seq_len=2, image_size=8)
    with pytest.raises(ValueError, match="image tokens"):
        processor(text=["<image>"], images=[[]])
    values, mask = processor.pixels([[tiny_image(0, (8, 8))], []])
    assert values.shape == (2, 1, 3, 8, 8) and mask.shape == (2, 1, 8, 8)
    assert bool((values[1] == 0).all()) and int(mask[1].sum()) == 0 and int(mask[0].sum()) == 64


def test_peak_memory_sees_an_allocation():
    with scale.PeakMemory("cpu") as peak:
        block = torch.ones(64 * 2**20 // 4)  # 64 MB
        del block
    if peak.mb is None:
        pytest.skip("no /proc/self/clear_refs here")
    assert peak.mb > 48


def test_tensor_bytes_is_the_tensors_size(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(3, 5), "b": torch.zeros(7, dtype=torch.int64)}, str(path), metadata={"k": "v" * 100})
    assert scale.tensor_bytes(path) == 3 * 5 * 4 + 7 * 8


def test_extrapolation_scales_seconds_by_the_plans_forwards():
    measured = {name: {"forwards": 10, "seconds": 2.0, "model_seconds": 1.5, "model_share": 0.75, "kmeans_seconds": 0.3}
                for name in ("scan", "bank", "search", "eval")}
    plan_paper = {name: {"forwards": 1000} for name in ("scan", "bank", "search", "eval")}
    out = scale.extrapolate(measured, scale.MEASURED_CPU, scale.PAPER, {}, plan_paper, kmeans_paper_s=5.0)
    assert out["scan"]["seconds"] == pytest.approx(200.0) and out["scan"]["factor"] == 100
    assert out["eval"]["forwards"] == 1000
    # bank: model seconds per forward x paper forwards + the paper-size k-means
    assert out["bank"]["seconds"] == pytest.approx(150.0 + 5.0)
    assert out["bank"]["model_share"] == pytest.approx(150.0 / 155.0)


@pytest.fixture(scope="module")
def quick_chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    sizes = replace(scale.QUICK, support=24)
    bed = scale.make_bed(SCALE_TINY, root, sizes)
    return bed, sizes, scale.chain_section(bed, sizes, replace(scale.QUICK, queries=8, keep_contexts=8, contexts=10))


def test_chain_reports_the_stages_own_forwards_and_the_plan_agrees(quick_chain):
    bed, sizes, chain = quick_chain
    workspace = Workspace(bed.root / "chain")
    recorded = {"scan": workspace.load("scan"), "bank": workspace.load("bank"), "search": workspace.load("vectors")}
    for stage, artifact in recorded.items():
        stats = artifact.meta["extra"]["stats"]
        assert chain["stages"][stage]["forwards"] == stats["forwards"] > 0
        assert chain["stages"][stage]["seconds"] == pytest.approx(stats["seconds"])
    assert chain["stages"]["eval"]["forwards"] == sizes.eval_items * len(sizes.methods)
    for stage in ("scan", "bank", "search", "eval"):
        assert chain["stages"][stage]["plan_matches"], stage
    # the bank's recorded time now includes its k-means
    bank = recorded["bank"].meta["extra"]["stats"]
    assert bank["seconds"] >= bank["kmeans_seconds"] >= 0
    share = chain["stages"]["scan"]["model_share"]
    assert share == pytest.approx(chain["stages"]["scan"]["model_seconds"] / chain["stages"]["scan"]["seconds"])


def test_chain_artifact_bytes_are_the_files_tensors_and_match_the_plan(quick_chain):
    bed, _, chain = quick_chain
    for name, size in chain["artifacts_measured"].items():
        tensors = load_file(str(bed.root / "chain" / name))
        assert size == sum(t.numel() * t.element_size() for t in tensors.values())
    for name in ("scan.safetensors", "activations.safetensors", "bank.safetensors"):
        assert chain["artifacts_measured"][name] == chain["artifacts_plan_measured"][name]
    # the plan bounds the vectors file (at most K edited locations)
    assert chain["artifacts_measured"]["vectors.safetensors"] <= chain["artifacts_plan_measured"]["vectors.safetensors"]


def test_curves_report_consistent_numbers(quick_chain):
    bed, sizes, _ = quick_chain
    shots = scale.shots_section(bed, (2, 4), repeats=1)
    rows = {r["shots"]: r for r in shots["rows"]}
    assert rows[2]["x_seconds"] == 1.0
    assert rows[4]["x_seconds"] == pytest.approx(rows[4]["seconds"] / rows[2]["seconds"])
    assert rows[0]["tokens"] < rows[2]["tokens"] < rows[4]["tokens"]
    k = scale.k_section(bed, (2, 4), replace(sizes, contexts=6), repeats=1)
    assert [r["bank_bytes"] for r in k["rows"]] == [2 * sizes.clusters * (8 * 4 + 8) + 2 * 16 + 2 * 8 * 4,
                                                   4 * sizes.clusters * (8 * 4 + 8) + 4 * 16 + 4 * 8 * 4]
    queries = scale.queries_section(bed, (3, 6), shots=2, keep=2)
    assert [r["forwards"] for r in queries["rows"]] == [6, 12]
