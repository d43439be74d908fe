"""Served answers equal ``stvcli.scoring.generate`` with the same intervention (openai client)."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from stvcli.prompt import Prompt
from stvcli.scoring import generate
from serve_helpers import API_KEY, Served, image_data_url, image_of

MAX_TOKENS = 8


@pytest.fixture(scope="module")
def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.api, api_key=API_KEY, max_retries=0, timeout=60)


def reference(served: Served, prompt: Prompt, model: str, max_tokens: int = MAX_TOKENS) -> str:
    intervention = None if model == "bare" else served.vectors[model].intervention()
    return generate(served.adapter, [prompt], max_tokens, intervention=intervention)[0]


def ask(client: openai.OpenAI, served: Served, model: str, content, **kwargs):
    kwargs.setdefault("max_tokens", MAX_TOKENS)
    return client.chat.completions.create(model=served.ids[model], messages=[{"role": "user", "content": content}],
                                          **kwargs)


def test_models_lists_the_base_model_and_every_vector_set(client: openai.OpenAI, served: Served) -> None:
    ids = [model.id for model in client.models.list()]
    base = served.ids["bare"]
    assert ids[0] == base
    for task in ("demo", "other", "added"):
        assert ids.count(served.ids[task]) == 1
        assert served.ids[task] == f"{base}+{task}@{served.vectors[task].digest}"


@pytest.mark.parametrize("model", ["demo", "bare", "added"])
def test_text_answer_equals_scoring_generate(client: openai.OpenAI, served: Served, model: str) -> None:
    response = ask(client, served, model, "the quick brown fox")
    assert response.choices[0].message.content == reference(served, Prompt("the quick brown fox"), model)
    assert response.model == served.ids[model]
    usage = response.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens <= MAX_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert response.choices[0].finish_reason in ("stop", "length")


def test_vectors_change_the_answer(served: Served) -> None:
    prompt = Prompt("the quick brown fox")
    assert reference(served, prompt, "demo") != reference(served, prompt, "bare")


def test_image_answer_equals_scoring_generate(client: openai.OpenAI, served: Served) -> None:
    content = [{"type": "image_url", "image_url": {"url": image_data_url()}}, {"type": "text", "text": "What is it?"}]
    prompt = Prompt("<image>What is it?", (image_of(),))
    for model in ("demo", "bare"):
        response = ask(client, served, model, content)
        assert response.choices[0].message.content == reference(served, prompt, model)


def test_turns_are_rendered_as_a_task_prompt(client: openai.OpenAI, served: Served) -> None:
    """System line first, each answered question as ``question answer``, newline-joined."""
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hi"}, {"role": "user", "content": [{"type": "text", "text": "fox"}]}]
    response = client.chat.completions.create(model=served.ids["demo"], messages=messages, max_tokens=MAX_TOKENS)
    assert response.choices[0].message.content == reference(served, Prompt("be brief\nhello hi\nfox"), "demo")


def test_stream_matches_the_plain_answer(client: openai.OpenAI, served: Served) -> None:
    plain = ask(client, served, "demo", "lazy dog").choices[0].message.content
    chunks = list(ask(client, served, "demo", "lazy dog", stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def _stop_char(text: str) -> str | None:
    """A character of ``text`` past its first one to stop on (not a U+FFFD stand-in for
    an unfinished byte sequence, which can differ between partial and full decodes)."""
    return next((ch for ch in text[1:] if ch != "\ufffd" and not ch.isspace()), None)


def test_stop_strings_cut_the_answer(client: openai.OpenAI, served: Served) -> None:
    for question in ("the quick brown fox", "over the lazy dog", "jumps", "hello world", "brown"):
        full = reference(served, Prompt(question), "demo", max_tokens=16)
        stop = _stop_char(full)
        if stop is not None:
            break
    else:
        pytest.fail("no answer with a character to stop on")
    expected = full[: full.find(stop)]
    response = ask(client, served, "demo", question, max_tokens=16, stop=[stop, "\u2603never"])
    assert response.choices[0].message.content == expected
    assert response.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       ask(client, served, "demo", question, max_tokens=16, stop=stop, stream=True) if c.choices)
    assert streamed == expected


def test_max_tokens_ends_by_length(client: openai.OpenAI, served: Served) -> None:
    response = ask(client, served, "demo", "brown", max_tokens=1)
    if response.choices[0].finish_reason == "length":
        assert response.usage.completion_tokens == 1
    else:  # the first token was the end of sequence
        assert response.usage.completion_tokens == 0


def test_sampling_is_reproducible_with_a_seed(client: openai.OpenAI, served: Served) -> None:
    def sample(seed: int) -> str:
        return ask(client, served, "demo", "fox", temperature=1.5, seed=seed, max_tokens=12).choices[0].message.content

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1


def test_eval_harness_payloads(served: Served) -> None:
    """lmms-eval (text, then PNG images; nulls for unset options) and VLMEvalKit (JPEG, detail, n=1)."""
    png = image_data_url()
    lmms_eval = {"model": served.ids["demo"], "max_tokens": MAX_TOKENS, "temperature": 0, "top_p": None,
                 "messages": [{"role": "user", "content": [{"type": "text", "text": "Question: colour?"},
                                                           {"type": "image_url", "image_url": {"url": png}}]}]}
    jpeg = image_data_url(fmt="JPEG")
    vlmevalkit = {"model": served.ids["demo"], "n": 1, "temperature": 0, "max_tokens": MAX_TOKENS,
                  "messages": [{"role": "user", "content": [
                      {"type": "image_url", "image_url": {"url": jpeg, "detail": "high"}},
                      {"type": "text", "text": "Question: colour?"}]}]}
    jpeg_image = Image.open(io.BytesIO(base64.b64decode(jpeg.split(",", 1)[1]))).convert("RGB")
    with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as http:
        first = http.post("/v1/chat/completions", json=lmms_eval).json()["choices"][0]["message"]["content"]
        second = http.post("/v1/chat/completions", json=vlmevalkit).json()["choices"][0]["message"]["content"]
    assert first == reference(served, Prompt("Question: colour?<image>", (image_of(),)), "demo")
    assert second == reference(served, Prompt("<image>Question: colour?", (jpeg_image,)), "demo")


def test_a_dropped_stream_stops_its_generation(served: Served) -> None:
    """A client that hangs up early: its row stops (or never starts when still queued)."""
    budget = 300
    tokens = served.worker.stats.tokens
    request = {"model": served.ids["demo"], "max_tokens": budget, "stream": True,
               "messages": [{"role": "user", "content": "fox"}]}
    with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=request) as response:
            assert response.status_code == 200
            next(response.iter_lines())  # the first chunk, then hang up
        # one worker, first in first out: once a later request is answered, the dropped one is settled
        later = http.post("/v1/chat/completions", json=request | {"stream": False, "max_tokens": 2}).json()
    dropped_tokens = served.worker.stats.tokens - tokens - later["usage"]["completion_tokens"]
    assert dropped_tokens < budget  # this prompt runs to the full budget when nobody hangs up
