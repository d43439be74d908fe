"""stv across the supported transformers range (pyproject): the KV cache's name.

transformers 5.24 renamed the forward keyword and the outputs' field ``past_key_values``
to ``cache`` (the old names still work there but warn, FutureWarning plus a logged
notice); older releases, and remote code written for them (Qwen-VL), know only
``past_key_values``. ``stvcli.scoring.model_kwargs`` / ``output_cache`` pick the name per
model from its forward's signature; these tests pin that choice, and that none of stv's
own forwards (plain, scan, search scoring, shared prefix, generation) warns.
`make test-compat` runs the suite on the range's lower bound.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import warnings

import pytest
import torch
from torch import nn

from stvcli import scoring
from stvcli.engine import Intervention, all_locations
from stvcli.prefix import capture_shared, run_prefix, shared_text_prefix, step
from stvcli.prompt import Prompt
from stvcli.scoring import answer_scores, forward_logits, generate, model_kwargs, output_cache, shared_answer_scores
from stvcli.testing.tiny import tiny_adapter, tiny_image

CACHE = object()


class CurrentModel(nn.Module):  # transformers >= 5.24
    def forward(self, input_ids=None, attention_mask=None, cache=None, use_cache=None, logits_to_keep=0, **kwargs):
        raise NotImplementedError


class OlderModel(nn.Module):  # transformers < 5.24
    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, use_cache=None, logits_to_keep=0,
                **kwargs):
        raise NotImplementedError


class RemoteQwenVL(nn.Module):  # Qwen-VL's remote QWenLMHeadModel: old name, no logits_to_keep
    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None):
        raise NotImplementedError


class OlderRemote(nn.Module):  # remote code of the num_logits_to_keep era
    def forward(self, input_ids=None, past_key_values=None, use_cache=None, num_logits_to_keep=0):
        raise NotImplementedError


class KwargsOnly(nn.Module):
    def forward(self, input_ids=None, **kwargs):
        raise NotImplementedError


def test_model_kwargs_follow_the_forward_signature():
    assert model_kwargs(CurrentModel(), keep=2, cache=CACHE, use_cache=True) == {
        "cache": CACHE, "use_cache": True, "logits_to_keep": 2}
    assert model_kwargs(OlderModel(), keep=2, cache=CACHE, use_cache=True) == {
        "past_key_values": CACHE, "use_cache": True, "logits_to_keep": 2}
    assert model_kwargs(RemoteQwenVL(), keep=1, cache=CACHE, use_cache=True) == {
        "past_key_values": CACHE, "use_cache": True}  # no logits_to_keep: callers slice the logits
    assert model_kwargs(OlderRemote(), keep=3, cache=CACHE) == {
        "past_key_values": CACHE, "use_cache": False, "num_logits_to_keep": 3}
    assert model_kwargs(CurrentModel()) == {"use_cache": False}  # no cache, no keep: neither is passed


def test_model_kwargs_see_a_patched_or_hooked_forward():
    """accelerate's hooks and stv's remote-code shims replace ``forward``: the replacement's
    signature counts."""
    import functools

    model = RemoteQwenVL()
    assert "logits_to_keep" not in model_kwargs(model, keep=1)

    def with_keep(*args, logits_to_keep=0, **kwargs):
        raise NotImplementedError

    model.forward = functools.wraps(model.forward)(with_keep)
    with_keep.__signature__ = inspect.Signature(
        [*inspect.signature(RemoteQwenVL.forward).parameters.values(),
         inspect.Parameter("logits_to_keep", inspect.Parameter.KEYWORD_ONLY, default=0)])
    assert model_kwargs(model, keep=1, cache=CACHE) == {"past_key_values": CACHE, "use_cache": False,
                                                         "logits_to_keep": 1}


@pytest.mark.parametrize(("version", "name"), [((5, 18), "past_key_values"), ((5, 24), "cache"), ((6, 0), "cache")])
def test_kwargs_only_forward_gets_the_installed_versions_name(monkeypatch, version, name):
    monkeypatch.setattr(scoring, "_transformers_version", lambda: version)
    assert model_kwargs(KwargsOnly(), cache=CACHE, use_cache=True) == {name: CACHE, "use_cache": True}


def test_output_cache_reads_either_field():
    @dataclasses.dataclass
    class New:
        logits: object = None
        cache: object = None

    @dataclasses.dataclass
    class Old:
        logits: object = None
        past_key_values: object = None

    assert output_cache(New(cache=CACHE)) is CACHE
    assert output_cache(Old(past_key_values=CACHE)) is CACHE


def test_installed_transformers_gets_its_own_name():
    """The real tiny model on the installed release: the name its forward declares."""
    adapter = tiny_adapter("llama")
    declared = inspect.signature(type(adapter.model).forward).parameters
    expected = "cache" if "cache" in declared else "past_key_values"
    assert expected in model_kwargs(adapter.model, cache=CACHE, use_cache=True)
    output = adapter.model(**adapter.encode([Prompt("one two three")]), use_cache=True)
    assert output_cache(output) is not None and output_cache(output).get_seq_length() > 0


@pytest.fixture
def deprecation_notices(monkeypatch):
    """transformers' logged one-time notices (``logger.warning_once``: the renamed cache
    field is reported that way), recorded here whatever the log level; None where the
    installed release has no warning_once."""
    import transformers.utils.logging  # noqa: F401  (installs Logger.warning_once)

    if not hasattr(logging.Logger, "warning_once"):
        return None
    notices: list[str] = []
    monkeypatch.setattr(logging.Logger, "warning_once", lambda self, msg, *a, **k: notices.append(str(msg)))
    return notices


@pytest.mark.filterwarnings("error::FutureWarning")
@pytest.mark.filterwarnings("error::DeprecationWarning")
@pytest.mark.parametrize("family", ["llama", "qwen2-vl"])
def test_stv_forwards_raise_no_deprecation(family, deprecation_notices):
    """Every kind of forward stv runs, under FutureWarning/DeprecationWarning as errors."""
    from stvcli.stages.common import Meter
    from stvcli.stages.scan import capture_grouped, capture_prompts

    adapter = tiny_adapter(family)
    image = (tiny_image(1),) if family == "qwen2-vl" else ()
    marker = "<image> " if image else ""
    prompts = [Prompt(f"{marker}one two three\nQuestion: cat Answer:", image),
               Prompt(f"{marker}one two three\nQuestion: dog fish Answer:", image)]
    answers = [" red", " yes no"]
    locations = all_locations(adapter.n_layers, adapter.n_heads)
    vectors = torch.zeros(2, len(locations), adapter.head_dim)
    candidates = Intervention(locations, vectors, "add")  # per candidate [S, K, D]
    single = Intervention(locations, vectors[0], "add")  # one vector set for every row [K, D]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        capture_prompts(adapter, prompts, Meter(), batch_size=2)  # the scan's plain forwards
        grouped = capture_grouped(adapter, prompts, Meter(), batch_size=2, group_size=2)  # the scan's groups
        shared = capture_shared(adapter, prompts, shared_text_prefix(prompts))  # the KV-cache path itself
        assert shared is not None and torch.equal(grouped, shared)
        forward_logits(adapter, adapter.encode(prompts))
        answer_scores(adapter, prompts, answers, single)
        for full in (False, True):  # search scoring over each prompt's cached prefix
            assert shared_answer_scores(adapter, prompts, answers, candidates, 2, full_answer=full) is not None
        state = run_prefix(adapter, adapter.encode(prompts), 1)
        assert state is not None
        step(adapter, state, torch.tensor([0, 1]), keep=1)
        generate(adapter, prompts, max_new_tokens=2, intervention=single)  # eval
    if deprecation_notices is not None:
        assert not [n for n in deprecation_notices if "deprecat" in n.lower()], deprecation_notices
