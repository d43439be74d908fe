"""serve-local as an lm-evaluation-harness backend: ``/v1/completions`` with echo and
logprobs, the tokenizer routes, and few-shot chats rendered as task prompts.

The payloads are built as lm-evaluation-harness 0.4.13 builds them
(``lm_eval/models/openai_completions.py``: ``LocalCompletionsAPI._create_payload`` and
``parse_logprobs``, ``LocalChatCompletion._create_payload``; ``lm_eval/utils.py``:
``RemoteTokenizer`` and ``check_remote_tokenizer_support``), and the log-probabilities
are checked against ``stvcli.scoring.answer_scores`` of the same tokens, bare and with
the vectors inserted.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from operator import itemgetter

import httpx
import pytest
import torch
from serve_helpers import API_KEY, Served

from stvcli.data.tasks import SEPARATOR, TextTask
from stvcli.data.types import Item
from stvcli.prompt import Prompt
from stvcli.scoring import answer_scores, generate
from stvcli.serve.generation import Row, first_tokens
from stvcli.serve.prompts import build_prompt
from stvcli.serve.schema import ChatRequest

AUTH = {"Authorization": f"Bearer {API_KEY}"}
SEED = 1234  # TemplateAPI's default seed
PAIRS = [("cat: cats\ndog:", " dogs"), ("Question: what colour is the shape? Answer:", " red"),
         ("the quick brown", " fox jumps over the lazy dog"), ("hot", " cold")]


@pytest.fixture(scope="module")
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=60) as client:
        yield client


# ---------------------------------------------------------------- what the harness sends and reads
def loglikelihood_payload(model: str, prompt) -> dict:
    """``LocalCompletionsAPI._create_payload(messages, generate=False)``."""
    return {"model": model, "prompt": prompt, "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": SEED,
            "echo": True}


def generate_payload(model: str, prompt, max_tokens: int, until: list[str]) -> dict:
    """``LocalCompletionsAPI._create_payload(messages, generate=True, gen_kwargs={"until": ..., "max_gen_toks": ...})``."""
    return {"prompt": prompt, "model": model, "max_tokens": max_tokens, "temperature": 0, "stop": until, "seed": SEED}


def parse_logprobs(outputs: dict, ctxlens: list[int]) -> list[tuple[float, bool]]:
    """``LocalCompletionsAPI.parse_logprobs``."""
    res = []
    for choice, ctxlen in zip(sorted(outputs["choices"], key=itemgetter("index")), ctxlens, strict=True):
        assert ctxlen > 0
        logprobs = sum(choice["logprobs"]["token_logprobs"][ctxlen:-1])
        is_greedy = all(tok == max(top.values()) for tok, top in zip(choice["logprobs"]["token_logprobs"][ctxlen:-1],
                                                                     choice["logprobs"]["top_logprobs"][ctxlen:-1]))
        res.append((logprobs, is_greedy))
    return res


def stv_tokens(served: Served, context: str, continuation: str) -> tuple[list[int], int]:
    """context + continuation as stv tokenizes them for ``answer_scores``, and the context's length."""
    inputs, n_answer = served.adapter.encode_with_answers([Prompt(context)], [continuation])
    ids = inputs["input_ids"][0][inputs["attention_mask"][0].bool()].tolist()
    return ids, len(ids) - int(n_answer[0])


def stv_scores(served: Served, context: str, continuation: str, model: str) -> tuple[float, float]:
    """(first_token, total) of stv's own scoring."""
    intervention = None if model == "bare" else served.vectors[model].intervention()
    scores = answer_scores(served.adapter, [Prompt(context)], [continuation], intervention)
    return float(scores.first_token[0]), float(scores.total[0])


def post(http: httpx.Client, payload: dict, route: str = "/v1/completions") -> dict:
    response = http.post(route, json=payload)
    assert response.status_code == 200, response.text
    return response.json()


# ---------------------------------------------------------------- log-likelihoods
@pytest.mark.parametrize("model", ["bare", "demo", "added"])
def test_harness_loglikelihood_equals_answer_scores(http: httpx.Client, served: Served, model: str) -> None:
    """A batch of token-id prompts as the harness sends them (context + continuation),
    parsed as the harness parses them: stv's first-token and total scores. With vectors
    the request says where each continuation starts (``continuation_start`` = ctxlen)."""
    batch = [stv_tokens(served, context, continuation) for context, continuation in PAIRS]
    payload = loglikelihood_payload(served.ids[model], [ids for ids, _ in batch])
    ctxlens = [ctxlen for _, ctxlen in batch]
    if model != "bare":
        payload["continuation_start"] = ctxlens
    out = post(http, payload)
    assert out["object"] == "text_completion" and [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    parsed = parse_logprobs(out, ctxlens)
    for (context, continuation), (ids, ctxlen), choice, (total, _) in zip(PAIRS, batch, out["choices"], parsed):
        first, expected_total = stv_scores(served, context, continuation, model)
        logprobs = choice["logprobs"]
        assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(ids) + 1  # + the generated token
        assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
        assert logprobs["token_logprobs"][ctxlen] == pytest.approx(first, abs=1e-4)
        assert total == pytest.approx(expected_total, abs=1e-4)


def test_one_prompt_alone_is_exact(http: httpx.Client, served: Served) -> None:
    """A prompt alone (no padding: the harness's default batch size 1) gives stv's numbers
    to float32 rounding."""
    context, continuation = PAIRS[2]
    ids, ctxlen = stv_tokens(served, context, continuation)
    out = post(http, loglikelihood_payload(served.ids["demo"], [ids]) | {"continuation_start": ctxlen})
    logprobs = out["choices"][0]["logprobs"]["token_logprobs"]
    intervention = served.vectors["demo"].intervention()
    scores = answer_scores(served.adapter, [Prompt(context)], [continuation], intervention)
    assert torch.tensor(logprobs[ctxlen], dtype=torch.float32) == scores.first_token[0]
    assert sum(logprobs[ctxlen:-1]) == pytest.approx(float(scores.total[0]), abs=1e-5)


def test_vectors_change_the_scores(http: httpx.Client, served: Served) -> None:
    ids, ctxlen = stv_tokens(served, *PAIRS[0])
    bare = post(http, loglikelihood_payload(served.ids["bare"], [ids]))
    demo = post(http, loglikelihood_payload(served.ids["demo"], [ids]) | {"continuation_start": ctxlen})
    bare_lp, demo_lp = (o["choices"][0]["logprobs"]["token_logprobs"] for o in (bare, demo))
    assert demo_lp[1:ctxlen] == bare_lp[1:ctxlen]  # the context is the bare model's
    assert demo_lp[ctxlen] != bare_lp[ctxlen]


def test_without_continuation_start_vectors_score_all_but_the_first_token(http: httpx.Client, served: Served) -> None:
    """The harness's own request with a vector set: every token after the first is scored
    with the vectors, i.e. answer_scores with the first token (BOS) as the prompt."""
    text = "cat: cats\ndog: dogs"
    ids, ctxlen = stv_tokens(served, "", text)
    assert ctxlen == 1 and ids[0] == served.adapter.tokenizer.bos_token_id
    out = post(http, loglikelihood_payload(served.ids["demo"], [ids]))
    (total, _), = parse_logprobs(out, [1])
    first, expected = stv_scores(served, "", text, "demo")
    assert total == pytest.approx(expected, abs=1e-4)
    assert out["choices"][0]["logprobs"]["token_logprobs"][1] == pytest.approx(first, abs=1e-4)


@pytest.mark.parametrize("model", ["bare", "demo"])
def test_text_prompts_score_like_token_prompts(http: httpx.Client, served: Served, model: str) -> None:
    """``tokenized_requests=False`` sends text (batch > 1: a list of strings); the server
    tokenizes it as stv does, and /tokenize of the context gives the split."""
    contexts = [context for context, _ in PAIRS]
    texts = [context + continuation for context, continuation in PAIRS]
    ctxlens = [post(http, {"prompt": c, "add_special_tokens": True}, "/tokenize")["count"] for c in contexts]
    payload = loglikelihood_payload(served.ids[model], texts)
    if model != "bare":
        payload["continuation_start"] = ctxlens
    out = post(http, payload)
    for (context, continuation), (total, _), choice in zip(PAIRS, parse_logprobs(out, ctxlens), out["choices"]):
        assert total == pytest.approx(stv_scores(served, context, continuation, model)[1], abs=1e-4)
        assert choice["text"].startswith(context + continuation)  # echo: the prompt, then the completion


def test_greedy_tokens_are_flagged_greedy(http: httpx.Client, served: Served) -> None:
    """Echo plus generation: the answer equals the plain generation, and the harness's
    is_greedy holds over the greedy tokens (each one's log-probability is its top one)."""
    context = "the quick brown"
    greedy_text = post(http, generate_payload(served.ids["demo"], context, 4, []))["choices"][0]["text"]
    prompt_ids = post(http, {"prompt": context}, "/tokenize")["tokens"]
    out = post(http, loglikelihood_payload(served.ids["demo"], context)
               | {"continuation_start": len(prompt_ids), "max_tokens": 4, "logprobs": 2})
    assert out["choices"][0]["text"] == context + greedy_text
    (_, is_greedy), = parse_logprobs(out, [len(prompt_ids)])
    assert is_greedy
    tops = out["choices"][0]["logprobs"]["top_logprobs"]
    assert all(len(top) <= 2 for top in tops[1:])


def test_generated_logprobs_equal_the_echo_of_the_same_tokens(http: httpx.Client, served: Served) -> None:
    """Generating with logprobs, then echoing prompt + answer with the continuation at the
    answer: the same log-probabilities (the vectors at the same positions)."""
    prompt = post(http, {"prompt": "over the lazy"}, "/tokenize")["tokens"]
    first = post(http, {"model": served.ids["demo"], "prompt": prompt, "max_tokens": 5, "logprobs": 3})
    choice = first["choices"][0]
    generated = choice["logprobs"]["token_logprobs"]
    assert len(generated) == len(choice["logprobs"]["tokens"]) == len(choice["logprobs"]["text_offset"]) >= 1
    answer = post(http, {"prompt": choice["text"], "add_special_tokens": False}, "/tokenize")["tokens"]
    if len(answer) != len(generated):
        pytest.skip("the answer's text does not tokenize back to the generated tokens")
    echo = post(http, {"model": served.ids["demo"], "prompt": prompt + answer, "max_tokens": 0, "echo": True,
                       "logprobs": 3, "continuation_start": len(prompt)})
    echoed = echo["choices"][0]["logprobs"]["token_logprobs"][len(prompt):]
    assert echoed == pytest.approx(generated, abs=1e-4)
    assert echo["choices"][0]["finish_reason"] == "length" and echo["usage"]["completion_tokens"] == 0


@pytest.mark.parametrize("model", ["bare", "demo"])
def test_harness_generation_equals_scoring_generate(http: httpx.Client, served: Served, model: str) -> None:
    """generate_until: token ids (tokenized requests) and text, one choice per prompt."""
    prompts = ["the quick brown fox", "Question: what colour is the shape? Answer:"]
    intervention = None if model == "bare" else served.vectors[model].intervention()
    expected = [generate(served.adapter, [Prompt(p)], 6, intervention=intervention)[0] for p in prompts]
    ids = [post(http, {"prompt": p}, "/tokenize")["tokens"] for p in prompts]
    by_ids = post(http, generate_payload(served.ids[model], ids, 6, ["\u2603"]))
    by_text = post(http, generate_payload(served.ids[model], prompts, 6, ["\u2603"]))
    for out in (by_ids, by_text):
        texts = [None] * len(out["choices"])
        for choice in out["choices"]:  # parse_generations
            texts[choice["index"]] = choice["text"]
        assert texts == expected
        assert out["usage"]["prompt_tokens"] == sum(len(i) for i in ids)


def test_logprobs_fields_line_up(http: httpx.Client, served: Served) -> None:
    out = post(http, {"model": served.ids["bare"], "prompt": "hot cold", "max_tokens": 2, "echo": True, "logprobs": 0})
    logprobs = out["choices"][0]["logprobs"]
    n, n_prompt = len(logprobs["tokens"]), out["usage"]["prompt_tokens"]
    assert n == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) == len(logprobs["text_offset"])
    assert "".join(logprobs["tokens"][:n_prompt]) == "<s>hot cold" and n - n_prompt in (1, 2)
    assert logprobs["text_offset"] == [sum(len(t) for t in logprobs["tokens"][:i]) for i in range(n)]
    assert all(top == {} for top in logprobs["top_logprobs"][1:])


def test_an_end_of_sequence_token_stays_in_the_logprobs(served: Served) -> None:
    """The harness drops the last entry (the generated token) of an echo with max_tokens 1:
    an answer that ends at once still has that entry."""
    adapter = served.adapter
    eos = adapter.tokenizer.eos_token_id
    logits = torch.zeros(1, len(adapter.tokenizer))
    logits[0, eos] = 10.0
    (result,) = first_tokens(adapter, [Row(None, 1, token_ids=[1, 5], logprobs=1, echo=True)], logits, [2])
    assert result.token_ids == [eos] and result.completion_tokens == 0 and result.text == ""
    assert result.finish_reason == "stop" and len(result.logprobs) == 1 and result.logprobs[0].top[0][0] == eos


# ---------------------------------------------------------------- tokenizer routes
def test_tokenizer_info_has_what_the_remote_tokenizer_reads(http: httpx.Client, served: Served) -> None:
    info = http.get("/tokenizer_info").json()
    tokenizer = served.adapter.tokenizer
    assert info["eos_token"] == tokenizer.eos_token == "</s>"
    assert info["bos_token"] == "<s>" and info["pad_token"] == tokenizer.pad_token
    assert info["eos_token_id"] == tokenizer.eos_token_id and info["bos_token_id"] == tokenizer.bos_token_id
    assert "chat_template" in info and info["name_or_path"] == served.ids["bare"]
    assert info["model_max_length"] == served.adapter.context_length and info["vocab_size"] == len(tokenizer)
    assert info["add_bos_token"] is True


def test_remote_tokenizer_probe_and_calls(served: Served) -> None:
    """``check_remote_tokenizer_support`` and ``RemoteTokenizer``: the server base is the
    base_url without /v1/completions; the token is sent when ``auth_token`` is given."""
    base = f"{served.url}/v1/completions".replace("/v1/completions", "").rstrip("/")
    with httpx.Client(headers={"Content-Type": "application/json"} | AUTH, timeout=30) as session:
        info = session.get(f"{base}/tokenizer_info")
        assert info.status_code == 200 and "eos_token" in info.json()
        probe = session.post(f"{base}/tokenize", json={"prompt": "test", "add_special_tokens": False}).json()
        assert isinstance(probe["tokens"], list) and probe["count"] == len(probe["tokens"])
        assert probe["tokens"] == served.adapter.tokenizer("test", add_special_tokens=False)["input_ids"]
        eos_id = session.post(f"{base}/tokenize", json={"prompt": "</s>", "add_special_tokens": False}).json()
        assert eos_id["tokens"] == [served.adapter.tokenizer.eos_token_id]  # RemoteTokenizer.eos_token_id
        ids = served.adapter.tokenizer("cat: cats")["input_ids"]
        assert session.post(f"{base}/detokenize", json={"tokens": ids}).json()["prompt"] == "<s>cat: cats"


# ---------------------------------------------------------------- few-shot chats
def flatten(messages: list[dict]) -> Prompt:
    request = ChatRequest.model_validate({"model": "m", "messages": messages})
    return asyncio.run(build_prompt(request.messages, max_image_bytes=10**6, allow_remote_images=False))


def test_few_shot_turns_render_as_the_task_prompt() -> None:
    messages = [{"role": "user", "content": "cat:"}, {"role": "assistant", "content": "cats"},
                {"role": "user", "content": "dog:"}]
    assert flatten(messages).text == "cat: cats\ndog:"
    task = TextTask("plural")  # template "{question}: {answer}"
    prompt = task.build_prompt(Item("q", "dog", ("dogs",)), [Item("d", "cat", ("cats",))])
    assert flatten(messages).text == prompt.text and SEPARATOR == "\n"
    instructed = TextTask("plural", instruction="Give the plural.")
    system = [{"role": "system", "content": "Give the plural."}, *messages]
    assert flatten(system).text == instructed.build_prompt(Item("q", "dog"), [Item("d", "cat", ("cats",))]).text


@pytest.mark.parametrize("messages, text", [
    ([("user", "Q: a\nA: "), ("assistant", "b"), ("user", "Q: c\nA:")], "Q: a\nA: b\nQ: c\nA:"),  # no double space
    ([("user", "x:"), ("assistant", " y"), ("user", "z:")], "x: y\nz:"),
    ([("user", "one"), ("user", "two")], "one\ntwo"),
    ([("assistant", "hello"), ("user", "x:"), ("assistant", "y"), ("assistant", "more")], "hello\nx: y\nmore"),
    ([("user", "x:"), ("assistant", ""), ("user", "z:")], "x:\nz:"),
    ([("user", "Question: 1+1?"), ("assistant", "Answer:")], "Question: 1+1? Answer:"),  # a generation prefix
])
def test_chat_layout_rules(messages: list[tuple[str, str]], text: str) -> None:
    assert flatten([{"role": role, "content": content} for role, content in messages]).text == text


def test_harness_few_shot_chat_is_answered_as_the_task_prompt(http: httpx.Client, served: Served) -> None:
    """``LocalChatCompletion._create_payload`` of a multi-turn few-shot context."""
    messages = [{"role": "user", "content": "cat:"}, {"role": "assistant", "content": "cats"},
                {"role": "user", "content": "dog:"}]
    payload = {"messages": messages, "model": served.ids["demo"], "max_tokens": 6, "temperature": 0,
               "stop": ["\u2603", "</s>"][:4], "seed": SEED}
    answer = post(http, payload, "/v1/chat/completions")["choices"][0]["message"]["content"]
    expected = generate(served.adapter, [Prompt("cat: cats\ndog:")], 6,
                        intervention=served.vectors["demo"].intervention())[0]
    assert answer == expected


# ---------------------------------------------------------------- the real client, where installed
@pytest.mark.skipif(not all(importlib.util.find_spec(name) for name in ("lm_eval", "aiohttp", "tenacity")),
                    reason="lm-evaluation-harness (with its api extras) is not installed")
def test_real_lm_eval_local_completions(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    lm = LocalCompletionsAPI(model=served.ids["bare"], base_url=f"{served.url}/v1/completions",
                             tokenizer_backend="auto", auth_token=API_KEY, max_length=served.adapter.context_length)
    assert lm.tokenizer_backend == "remote"
    context, continuation = PAIRS[0]
    (total, _), = lm.loglikelihood([Instance("loglikelihood", {}, (context, continuation), 0)])
    tokenizer = served.adapter.tokenizer  # the harness sends no BOS with the remote tokenizer
    ids = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctxlen = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    with torch.inference_mode():
        log_probs = torch.log_softmax(served.adapter.model(**inputs).logits[0, :-1].float(), -1)
    expected = log_probs[torch.arange(ctxlen - 1, len(ids) - 1), torch.tensor(ids[ctxlen:])].sum()
    assert total == pytest.approx(float(expected), abs=1e-4)
