"""A failing row cannot fail its batch: rows a failure names fail alone, any other
failure reruns every row on its own, and a rerun streamed row sends no text twice."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from serve_helpers import API_KEY, Served, serve_config

from stvcli.engine import Intervention
from stvcli.prompt import Prompt
from stvcli.scoring import generate
from stvcli.serve.app import create_app
from stvcli.serve.catalog import VectorSet, batch_intervention, vector_set
from stvcli.serve.generation import Row, RowsFailed, generate_rows
from stvcli.serve.server import background_server
from stvcli.serve.worker import Finished, Job

AUTH = {"Authorization": f"Bearer {API_KEY}"}
PROMPT, MAX_TOKENS = "the quick brown fox", 6


def broken_set(served: Served) -> VectorSet:
    """A set that passed no load check: NaN vectors, so its rows' scores turn NaN."""
    demo = served.vectors["demo"]
    nan = torch.full_like(demo.vectors, float("nan"))
    return VectorSet(f"{served.ids['bare']}+broken@0", "broken", "0", Intervention(demo.locations, nan, "replace"))


def reference(served: Served, task: str | None) -> str:
    intervention = None if task in (None, "bare") else served.vectors[task].intervention()
    return generate(served.adapter, [Prompt(PROMPT)], MAX_TOKENS, intervention=intervention)[0]


def ask(client: httpx.Client, model: str, stream: bool = False, **fields) -> tuple[int, str | dict]:
    body = {"model": model, "max_tokens": MAX_TOKENS, "stream": stream,
            "messages": [{"role": "user", "content": PROMPT}], **fields}
    if not stream:
        response = client.post("/v1/chat/completions", json=body)
        payload = response.json()
        return response.status_code, payload["choices"][0]["message"]["content"] if response.is_success else payload
    pieces, errors = [], []
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[len("data: "):])
                if "error" in chunk:
                    errors.append(chunk)
                else:
                    pieces.extend(choice["delta"].get("content") or "" for choice in chunk["choices"])
    return (500, errors[0]) if errors else (response.status_code, "".join(pieces))


def test_a_broken_set_fails_only_its_own_row(served: Served, vector_files) -> None:
    app = create_app(serve_config(vector_files, batch_wait_ms=1500), served.adapter)
    broken = broken_set(served)
    app.state.catalog.sets[broken.id] = broken  # as if it had slipped past the load checks
    plan = [("bare", False), ("demo", False), ("broken", False), ("other", True), ("broken", True), ("demo", True)]
    ids = served.ids | {"broken": broken.id}
    with background_server(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        with ThreadPoolExecutor(len(plan)) as pool:
            answers = list(pool.map(lambda item: ask(client, ids[item[0]], stream=item[1]), plan))
        forwards = list(app.state.worker.stats.recent)
    for (task, _), (status, answer) in zip(plan, answers):
        if task == "broken":
            assert status == 500 and answer["error"]["code"] == "internal_error"
            assert "NaN" in answer["error"]["message"]
        else:
            assert status == 200 and answer == reference(served, task), (task, answer)
    assert len(forwards) == 1 and len(forwards[0]) == 4 and broken.id not in forwards[0]  # one rerun of the rest


def test_a_failing_batch_reruns_each_row_alone_without_repeating_streamed_text(served: Served, vector_files) -> None:
    """A failure that names no row (here: the model raises on the 4th batched step) reruns
    every row alone; streamed rows had sent text already and send only the rest."""
    batched_steps = [0]

    def hiccup(module, args, kwargs):
        rows = next((v.shape[0] for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)), 1)
        if rows > 1:
            batched_steps[0] += 1
            if batched_steps[0] == 4:
                raise RuntimeError("device hiccup")

    app = create_app(serve_config(vector_files, batch_wait_ms=1500), served.adapter)
    plan = [("bare", True), ("demo", True), ("other", False), ("demo", False)]
    handle = served.adapter.model.register_forward_pre_hook(hiccup, with_kwargs=True)
    try:
        with background_server(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
            with ThreadPoolExecutor(len(plan)) as pool:
                answers = list(pool.map(lambda item: ask(client, served.ids[item[0]], stream=item[1]), plan))
            forwards = list(app.state.worker.stats.recent)
    finally:
        handle.remove()
    assert batched_steps[0] == 4
    assert answers == [(200, reference(served, task)) for task, _ in plan]
    assert sorted(len(forward) for forward in forwards) == [1, 1, 1, 1]


def test_a_sampled_row_rerun_draws_the_same_answer(served: Served, vector_files) -> None:
    """A sampled row runs again with the same seed (one is drawn when it is queued if the
    request has none), so its rerun continues the text it already streamed."""
    batched_steps = [0]

    def hiccup(module, args, kwargs):  # the 3rd batched step fails
        rows = next((v.shape[0] for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)), 1)
        if rows > 1:
            batched_steps[0] += 1
            if batched_steps[0] == 3:
                raise RuntimeError("device hiccup")

    app = create_app(serve_config(vector_files, batch_wait_ms=1500), served.adapter)
    handle = served.adapter.model.register_forward_pre_hook(hiccup, with_kwargs=True)
    try:
        with background_server(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
            with ThreadPoolExecutor(2) as pool:
                first = list(pool.map(lambda stream: ask(client, served.ids["demo"], stream=stream, temperature=1.5,
                                                         seed=11), [True, False]))
            again = ask(client, served.ids["demo"], temperature=1.5, seed=11)
    finally:
        handle.remove()
    assert batched_steps[0] >= 3
    assert first[0] == first[1] == again and again[0] == 200

    async def seeds() -> list[int | None]:
        return [Job(Row(Prompt("x"), 4, temperature=t, seed=s), None).row.seed for t, s in ((1.0, None), (1.0, 5),
                                                                                          (0.0, None))]

    drawn, given, greedy = asyncio.run(seeds())
    assert isinstance(drawn, int) and given == 5 and greedy is None


def test_the_nan_guard_names_the_broken_rows(served: Served) -> None:
    prompts = [Prompt(PROMPT)] * 3
    sets = [None, broken_set(served), vector_set("base", served.vectors["demo"])]
    with pytest.raises(RowsFailed) as failure:
        generate_rows(served.adapter, served.adapter.encode(prompts), [Row(p, 4) for p in prompts],
                      batch_intervention(sets))
    assert failure.value.rows == [1]


def test_a_rewound_job_skips_what_it_sent() -> None:
    async def run() -> list:
        job = Job(Row(Prompt("x"), 4), None, stream=True)
        job.row.on_text("the qu")
        job.rewind()  # the row runs again from the start
        for piece in ("th", "e q", "uick", " fox"):
            job.row.on_text(piece)
        job.push(Finished(None))
        return [event async for event in job.events()]

    events = asyncio.run(run())
    assert events[:-1] == ["the qu", "ick", " fox"]
