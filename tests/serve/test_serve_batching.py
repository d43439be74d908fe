"""Per-row insertion: requests for the bare model and different vector sets share a
forward and each gets what it would get alone; 50 concurrent requests all come back."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from serve_helpers import API_KEY, FAMILY, Served, image_data_url, image_of, serve_config

from stvcli.prompt import Prompt
from stvcli.scoring import generate
from stvcli.serve.app import create_app
from stvcli.serve.catalog import VectorSet, batch_intervention, vector_set
from stvcli.serve.generation import Row, generate_rows
from stvcli.serve.server import background_server
from stvcli.serve.worker import split_by_mode

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def sets(served: Served) -> dict[str, VectorSet]:
    return {task: vector_set("base", vectors) for task, vectors in served.vectors.items()}


def reference(served: Served, prompt: Prompt, task: str | None, max_tokens: int) -> str:
    intervention = None if task is None else served.vectors[task].intervention()
    return generate(served.adapter, [prompt], max_tokens, intervention=intervention)[0]


def test_batch_intervention_masks_rows_outside_their_set(served: Served) -> None:
    demo, other = sets(served)["demo"], sets(served)["other"]
    assert batch_intervention([None, None]) is None
    assert batch_intervention([demo, demo]) is demo.intervention
    mixed = batch_intervention([None, demo, other])
    union = {tuple(x) for x in demo.intervention.locations.tolist()} | {
        tuple(x) for x in other.intervention.locations.tolist()}
    assert {tuple(x) for x in mixed.locations.tolist()} == union
    assert mixed.vectors.shape == (3, len(union), served.adapter.head_dim)
    assert not mixed.row_mask[0].any()
    for row, vector_set_ in ((1, demo), (2, other)):
        assert int(mixed.row_mask[row].sum()) == len(vector_set_.intervention.locations)
        columns = [mixed.locations.tolist().index(loc) for loc in vector_set_.intervention.locations.tolist()]
        assert torch.equal(mixed.vectors[row, columns], vector_set_.intervention.vectors)
    with pytest.raises(ValueError, match="modes"):
        batch_intervention([demo, sets(served)["added"]])


def test_mixed_batch_equals_separate_runs(served: Served) -> None:
    prompt, max_tokens = Prompt("the lazy dog"), 6
    tasks = [None, "demo", "other", None, "demo"]
    by_task = sets(served)
    rows = [Row(prompt, max_tokens) for _ in tasks]
    inputs = served.adapter.encode([prompt] * len(tasks))
    intervention = batch_intervention([None if t is None else by_task[t] for t in tasks])
    results = generate_rows(served.adapter, inputs, rows, intervention)
    expected = {t: reference(served, prompt, t, max_tokens) for t in set(tasks)}
    assert [r.text for r in results] == [expected[t] for t in tasks]
    assert len(set(expected.values())) == 3  # the three settings really answer differently


def test_mixed_batch_of_padded_image_prompts_equals_separate_runs(served: Served, tiny_prompts) -> None:
    prompts = tiny_prompts(FAMILY)  # different lengths and image counts: left padded
    tasks = [None, "demo", "other"]
    by_task = sets(served)
    rows = [Row(prompt, 5) for prompt in prompts]
    inputs = served.adapter.encode(prompts)
    intervention = batch_intervention([None if t is None else by_task[t] for t in tasks])
    results = generate_rows(served.adapter, inputs, rows, intervention)
    assert [r.text for r in results] == [reference(served, p, t, 5) for p, t in zip(prompts, tasks)]


def test_modes_are_split_into_separate_forwards(served: Served) -> None:
    class FakeJob:
        def __init__(self, vector_set_: VectorSet | None) -> None:
            self.vector_set = vector_set_

    by_task = sets(served)
    jobs = [FakeJob(None), FakeJob(by_task["added"]), FakeJob(by_task["demo"]), FakeJob(by_task["other"])]
    groups = split_by_mode(jobs)
    assert [[j.vector_set and j.vector_set.task for j in group] for group in groups] == [
        [None, "added"], ["demo", "other"]]
    assert split_by_mode([FakeJob(None)])[0][0].vector_set is None and split_by_mode([]) == []


def test_concurrent_requests_for_different_models_share_a_forward(served: Served, vector_files) -> None:
    app = create_app(serve_config(vector_files, batch_wait_ms=1000), served.adapter)
    tasks = ["bare", "demo", "other"]
    with background_server(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        def ask(task: str) -> str:
            request = {"model": served.ids[task], "max_tokens": 6,
                       "messages": [{"role": "user", "content": "jumps over"}]}
            response = client.post("/v1/chat/completions", json=request)
            assert response.status_code == 200, response.text
            return response.json()["choices"][0]["message"]["content"]

        with ThreadPoolExecutor(len(tasks)) as pool:
            answers = list(pool.map(ask, tasks))
        forwards = list(app.state.worker.stats.recent)
    assert len(forwards) == 1  # one forward for all three
    assert sorted(map(str, forwards[0])) == sorted(map(str, (None, served.ids["demo"], served.ids["other"])))
    for task, answer in zip(tasks, answers):
        assert answer == reference(served, Prompt("jumps over"), None if task == "bare" else task, 6)


def test_fifty_concurrent_requests_all_answered(served: Served) -> None:
    prompts = ["the quick brown fox", "lazy dog", "<image>hello"]  # every third request has an image
    tasks = ["bare", "demo", "other", "added"]
    plan = [(prompts[i % len(prompts)], tasks[i % len(tasks)], i % 2 == 0) for i in range(50)]
    image = image_data_url()

    def content(prompt: str) -> str | list[dict]:
        if not prompt.startswith("<image>"):
            return prompt
        return [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": prompt[len("<image>"):]}]

    def as_prompt(prompt: str) -> Prompt:
        return Prompt(prompt, (image_of(),) if prompt.startswith("<image>") else ())

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served.url, headers=AUTH, timeout=120) as client:
            async def one(prompt: str, task: str, stream: bool) -> tuple[str, str]:
                request = {"model": served.ids[task], "max_tokens": 5, "stream": stream,
                           "messages": [{"role": "user", "content": content(prompt)}]}
                if not stream:
                    response = await client.post("/v1/chat/completions", json=request)
                    assert response.status_code == 200, response.text
                    return response.json()["model"], response.json()["choices"][0]["message"]["content"]
                pieces = []
                async with client.stream("POST", "/v1/chat/completions", json=request) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        pieces.append(line)
                assert pieces[-2:] == ["data: [DONE]", ""] or pieces[-1] == "data: [DONE]"
                return request["model"], "".join(_sse_text(pieces))

            return await asyncio.gather(*(one(*item) for item in plan))

    before = served.worker.stats.rows
    answers = asyncio.run(run())
    assert len(answers) == 50
    assert served.worker.stats.rows - before == 50
    assert served.worker.stats.largest_batch > 1
    for (prompt, task, _), (model, text) in zip(plan, answers):
        assert model == served.ids[task]
        assert text == reference(served, as_prompt(prompt), None if task == "bare" else task, 5)


def _sse_text(lines: list[str]) -> list[str]:
    import json

    out = []
    for line in lines:
        if line.startswith("data: {"):
            chunk = json.loads(line[len("data: "):])
            assert "error" not in chunk
            out.extend(choice["delta"].get("content") or "" for choice in chunk["choices"])
    return out


def test_write_positions_are_split_and_served_as_generate_writes_them(served: Served) -> None:
    class FakeJob:
        def __init__(self, vector_set_: VectorSet | None) -> None:
            self.vector_set = vector_set_

    demo = served.vectors["demo"]
    every, prompt_only = vector_set("base", demo), vector_set("base", demo, write_at="prompt")
    assert prompt_only.intervention.write_at == "prompt" and every.batch_key != prompt_only.batch_key
    groups = split_by_mode([FakeJob(every), FakeJob(prompt_only), FakeJob(None)])
    assert [[j.vector_set and j.vector_set.intervention.write_at for j in g] for g in groups] == [
        [None, "every"], ["prompt"]]
    with pytest.raises(ValueError, match="write positions"):
        batch_intervention([every, prompt_only])
    prompt, max_tokens = Prompt("the lazy dog"), 6
    rows = [Row(prompt, max_tokens) for _ in range(2)]
    results = generate_rows(served.adapter, served.adapter.encode([prompt] * 2), rows,
                            batch_intervention([None, prompt_only]))
    expected = generate(served.adapter, [prompt], max_tokens, intervention=demo.intervention(write_at="prompt"))[0]
    assert [r.text for r in results] == [reference(served, prompt, None, max_tokens), expected]
    assert expected != reference(served, prompt, "demo", max_tokens)  # writing at decode steps answers otherwise
