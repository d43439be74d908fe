"""bf16 / fp16 models against the same tiny model in fp32, on every tiny family.

stv does not run the model in fp32 when it is loaded in half precision (``--dtype``);
what it computes FROM the model must not lose precision on the way: captured
activations are returned in fp32, scores are log-softmaxed in fp32, and the scan's
streamed sums and the bank's means accumulate in fp32. Inserted vectors (fp32 artifacts)
are cast to the activations' dtype at the hook.

Tolerances (measured on these tiny models, then given ~3-5x headroom; half precision
rounds every op, so the error grows with depth, not with stv):

- activations, per head vector: ||a_half - a_fp32|| / ||a_fp32|| <= ACT_TOL
  (measured max: bf16 0.012, fp16 0.0011);
- log-probabilities (first answer token, and each token of the answer's sum):
  |lp_half - lp_fp32| <= LP_TOL per token (measured max: bf16 0.0045, fp16 0.0006);
- greedy tokens: equal wherever fp32's top-1 margin exceeds 2 * LOGIT_TOL (a logit
  moves by at most LOGIT_TOL, measured max: bf16 0.006, fp16 0.0006). The tiny random
  models have small margins (logit std ~0.16), so prompts whose fp32 greedy path has a
  smaller margin at some step are not compared; a minimum of compared prompts keeps the
  test from passing vacuously.
"""

from __future__ import annotations

import pytest
import torch

from stvcli.engine import Intervention, all_locations, applied, capturing
from stvcli.prefix import capture_shared, shared_text_prefix
from stvcli.prompt import Prompt
from stvcli.scoring import answer_scores, forward_logits, generate, shared_answer_scores
from stvcli.testing.tiny import TEXT_FAMILIES, TINY_FAMILIES, VISION_FAMILIES, group_prompts, per_row_scores, tiny_adapter, tiny_image

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
ACT_TOL = {"bf16": 0.04, "fp16": 0.006}
LP_TOL = {"bf16": 0.02, "fp16": 0.003}
LOGIT_TOL = {"bf16": 0.02, "fp16": 0.003}
ANSWERS = [" red", " cold banana", " yes"]

_ADAPTERS: dict[tuple[str, str], object] = {}


def adapter_in(family: str, dtype: str = "fp32"):
    """The seed-0 tiny model of ``family`` in ``dtype`` (the same weights, cast), cached."""
    key = (family, dtype)
    if key not in _ADAPTERS:
        adapter = tiny_adapter(family, seed=0)
        if dtype != "fp32":
            adapter.model.to(DTYPES[dtype])
        _ADAPTERS[key] = adapter
    return _ADAPTERS[key]


def prompts_for(family: str) -> list[Prompt]:
    if family in VISION_FAMILIES:
        return [
            Prompt("Question: what colour is <image>? Answer:", (tiny_image(1),)),
            Prompt("Input: hot Output:"),
            Prompt("<image> the cat and <image> the dog are one two three. Answer:",
                   (tiny_image(2), tiny_image(3, (40, 24)))),
        ]
    return [
        Prompt("Question: what colour is the fox? Answer:"),
        Prompt("Input: hot Output:"),
        Prompt("the cat and the dog are one two three four five six seven. Answer:"),
    ]


def realistic_vectors(adapter, n_rows: int | None = None, scale: float = 3.0) -> torch.Tensor:
    """Vectors of the activations' own scale for every head ([L*H, D], or [n_rows, L*H, D]):
    a donor prompt's fp32 activations, shuffled across heads, scaled so the insertion
    moves the scores well past the half-precision tolerance."""
    with capturing(adapter) as capture, torch.inference_mode():
        adapter.model(**adapter.encode([Prompt("one two three four five six seven eight nine ten apple banana")]),
                      use_cache=False)
    donor = capture.result()[0].reshape(-1, adapter.head_dim)  # [L*H, D] fp32
    generator = torch.Generator().manual_seed(0)
    if n_rows is None:
        return donor[torch.randperm(len(donor), generator=generator)] * scale
    return torch.stack([donor[torch.randperm(len(donor), generator=generator)] * scale for _ in range(n_rows)])


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    return float(((got - reference).norm(dim=-1) / reference.norm(dim=-1).clamp_min(1e-6)).max())


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_capture_matches_fp32(family, dtype):
    reference, half = adapter_in(family), adapter_in(family, dtype)
    assert next(half.model.parameters()).dtype == DTYPES[dtype]
    prompts = prompts_for(family)  # left padded, with images on vision families
    results = []
    for adapter in (reference, half):
        with capturing(adapter) as capture, torch.inference_mode():
            adapter.model(**adapter.encode(prompts), use_cache=False)
        results.append(capture.result())
    assert results[1].dtype == torch.float32
    assert results[1].shape == results[0].shape
    assert relative_error(results[1], results[0]) <= ACT_TOL[dtype]


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("mode", ["replace", "add"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_insertion_matches_fp32(family, mode, dtype):
    reference, half = adapter_in(family), adapter_in(family, dtype)
    prompts = prompts_for(family)
    locations = all_locations(reference.n_layers, reference.n_heads)
    intervention = Intervention(locations, realistic_vectors(reference), mode)
    bare = answer_scores(reference, prompts, ANSWERS)
    expected = answer_scores(reference, prompts, ANSWERS, intervention)
    got = answer_scores(half, prompts, ANSWERS, intervention)
    assert got.first_token.dtype == got.total.dtype == torch.float32
    tolerance = LP_TOL[dtype]
    # the insertion moves the scores far more than half precision does
    assert float((expected.first_token - bare.first_token).abs().max()) > 3 * tolerance
    assert float((got.first_token - expected.first_token).abs().max()) <= tolerance
    assert bool(((got.total - expected.total).abs() <= tolerance * expected.n_tokens).all())


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_shared_prefix_matches_fp32(family, dtype):
    """The KV-cache path (search scoring, scan groups) in half precision against fp32's
    straightforward full forwards."""
    reference, half = adapter_in(family), adapter_in(family, dtype)
    prompts = prompts_for(family)
    n = 2
    locations = all_locations(reference.n_layers, reference.n_heads)
    candidates = Intervention(locations, realistic_vectors(reference, n), "replace")
    first_ref, total_ref = per_row_scores(reference, prompts, ANSWERS, candidates, n)
    shared = shared_answer_scores(half, prompts, ANSWERS, candidates, n, full_answer=True)
    assert shared is not None
    assert shared.first_token.dtype == shared.total.dtype == torch.float32
    tolerance = LP_TOL[dtype]
    assert float((shared.first_token - first_ref).abs().max()) <= tolerance
    assert bool(((shared.total - total_ref).abs() <= tolerance * shared.n_tokens).all())

    group = group_prompts(family)
    prefix = shared_text_prefix(group)
    got = capture_shared(half, group, prefix)
    assert got is not None and got.dtype == torch.float32
    expected = []
    for prompt in group:
        with capturing(reference) as capture, torch.inference_mode():
            reference.model(**reference.encode([prompt]), use_cache=False)
        expected.append(capture.result())
    assert relative_error(got, torch.cat(expected)) <= ACT_TOL[dtype]


def greedy_pool(n: int = 40) -> list[str]:
    """``n`` seeded prompts of the tiny tokenizer's words (margins of random tiny models are
    small, so the greedy test picks its prompts from a pool by fp32 margin)."""
    import random

    words = ("the a is of in on to and with red green blue yellow purple orange circle square triangle cross top "
             "bottom left right one two three four five six seven eight nine ten cat dog bird fish apple banana "
             "Question: Answer: Input: Output:").split()
    rng = random.Random(0)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 10))) for _ in range(n)]


NEW_TOKENS = 2  # a prefill step and a decode step (insertion differs between them)
MIN_CLEAR = 3  # measured: 4 to 21 of the 40 pool prompts clear the bf16 margin per case


def greedy_margins(adapter, prompts: list[Prompt], intervention: Intervention | None) -> torch.Tensor:
    """The smallest top-1 minus top-2 logit over the greedy steps of each prompt: [N]."""
    inputs = adapter.encode(prompts)
    with applied(adapter, intervention), torch.inference_mode():
        output = adapter.model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                                        return_dict_in_generate=True, pad_token_id=adapter.tokenizer.pad_token_id)
    top = torch.stack([logits.float().topk(2, dim=-1).values for logits in output.logits])  # [steps, N, 2]
    return (top[..., 0] - top[..., 1]).min(0).values


@pytest.mark.parametrize("family", [*TEXT_FAMILIES, "qwen2-vl", "llava"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inserted", [False, True], ids=["bare", "inserted"])
def test_greedy_tokens_match_fp32(family, dtype, inserted):
    """stv's greedy generation (eval) gives fp32's tokens wherever fp32's margins exceed
    what half precision can move (see the module docstring)."""
    reference, half = adapter_in(family), adapter_in(family, dtype)
    intervention = None
    if inserted:  # a third of the heads: with all of them replaced, every prompt says the same
        intervention = Intervention(all_locations(reference.n_layers, reference.n_heads)[::3],
                                    realistic_vectors(reference)[::3], "replace")
    prompts = [Prompt(text) for text in greedy_pool()]
    margins = greedy_margins(reference, prompts, intervention)
    clear = [p for p, margin in zip(prompts, margins.tolist(), strict=True) if margin > 2 * LOGIT_TOL[dtype]]
    assert len(clear) >= MIN_CLEAR, f"only {len(clear)} pool prompts with clear fp32 margins"
    expected = generate(reference, clear, NEW_TOKENS, intervention)
    got = generate(half, clear, NEW_TOKENS, intervention)
    assert got == expected


@pytest.mark.parametrize("dtype", DTYPES)
def test_scores_and_means_accumulate_in_fp32(dtype):
    """What stv computes from a half model is fp32: captured activations, logits and
    scores, the scan's streamed sums and per-query scores (prefix groups included), and
    the bank's means."""
    from stvcli.stages.common import Meter
    from stvcli.stages.scan import capture_prompts, scan_pass
    from stvcli.stages.search import bank_means

    half = adapter_in("llama", dtype)
    zero = [Prompt(text) for text in greedy_pool(4)]
    many = group_prompts("llama")
    swept = scan_pass(half, zero, many, Meter(), batch_size=2, keep=2, group_size=2)
    for name, tensor in swept.tensors().items():
        assert tensor.dtype == torch.float32, name
    # the sums are those of the fp32 captures (not of half-precision activations)
    rows = capture_prompts(half, zero, Meter(), batch_size=2)
    assert rows.dtype == torch.float32
    assert torch.allclose(swept.zero_sum, rows.double().sum(0).float(), rtol=1e-5, atol=1e-6)
    logits = forward_logits(half, half.encode(zero), keep=2)
    assert logits.dtype == torch.float32
    counts = torch.tensor([[3, 1], [0, 2]])
    bank = torch.randn(2, 2, half.head_dim, generator=torch.Generator().manual_seed(0)).to(DTYPES[dtype])
    means = bank_means(bank, counts)  # even a half-precision bank averages in fp32
    assert means.dtype == torch.float32
    weights = counts.double().unsqueeze(-1)
    assert torch.allclose(means.double(), (bank.double() * weights).sum(1) / weights.sum(1), atol=1e-6)
