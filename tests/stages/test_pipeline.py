"""Each stage against an independent small computation, on a tiny LLaVA model."""

from __future__ import annotations

import random

import pytest
import torch

from stvcli.artifacts import load_artifact
from stvcli.data.loading import load_task_data
from stvcli.errors import StvError
from stvcli.stages import accuracy as accuracy_module
from stvcli.stages import evaluate as evaluate_module
from stvcli.stages.bank import cluster_locations, run_bank
from stvcli.stages.common import get_adapter
from stvcli.workspace import Workspace
from stvcli.stages.config import BankConfig, EvalConfig, MTVConfig, ScanConfig, SearchConfig
from stvcli.stages.scan import many_shot_prompts, run_scan
from stvcli.stages.search import run_search


def o_proj_last_inputs(adapter, prompts) -> torch.Tensor:
    """Independent of the engine: o_proj inputs at the last token, per prompt, [N, L, H, D]."""
    rows = []
    for prompt in prompts:
        seen = {}
        handles = [p.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, a[0][0, -1].clone()))
                   for i, p in enumerate(adapter.projections)]
        try:
            with torch.no_grad():
                adapter.model(**adapter.encode([prompt]))
        finally:
            for h in handles:
                h.remove()
        rows.append(torch.stack([seen[i] for i in range(len(seen))]).view(adapter.n_layers, adapter.n_heads, -1))
    return torch.stack(rows).float()


def scan_config(bed, workspace, **kw) -> ScanConfig:
    return ScanConfig(model=bed["model"], data=bed["data"], workspace=workspace, shots=3, queries=8, top_k=5,
                      seed=1, keep_contexts=8, batch_size=3, quiet=True, **kw)


@pytest.fixture
def scanned(bed, workspace):
    result = run_scan(scan_config(bed, workspace))
    return result


def test_scan_scores_are_mean_l2_deltas(bed, workspace, scanned):
    adapter = get_adapter(bed["model"])
    data = load_task_data(bed["data"])
    rng = random.Random(1)
    queries = rng.sample(data.support, 8)
    zero = o_proj_last_inputs(adapter, [data.task.build_prompt(q) for q in queries])
    many = o_proj_last_inputs(adapter, many_shot_prompts(data.task, queries, data.support, 3, rng))
    expected = (many - zero).norm(dim=-1).mean(0)
    assert torch.allclose(scanned.scores, expected, atol=1e-4, rtol=1e-4)
    flat = expected.flatten().argsort(descending=True)[:5]
    assert {tuple(x) for x in scanned.locations.tolist()} == {(int(i) // adapter.n_heads, int(i) % adapter.n_heads) for i in flat}
    scan = load_artifact(Workspace(workspace).path("scan"), "scan", fingerprint=adapter.fingerprint())
    assert torch.allclose(scan["many_mean"], many.mean(0), atol=1e-4)


def test_bank_centroids_are_kmeans_of_captured_activations(bed, workspace, scanned):
    result = run_bank(BankConfig(workspace=workspace, clusters=4, contexts=8, quiet=True))
    kept = load_artifact(Workspace(workspace).path("activations"), "activations")
    bank, counts = cluster_locations(kept["activations"][:8], 4, seed=0)
    assert torch.allclose(result.bank, bank) and torch.equal(result.counts, counts)
    assert result.counts.sum(1).tolist() == [8] * 5
    # every centroid is the mean of the points assigned to it (k-means fixed point, FAISS)
    acts = kept["activations"][:8, 0]
    nearest = torch.cdist(acts, result.bank[0]).argmin(1)
    for m in nearest.unique():
        assert torch.allclose(acts[nearest == m].mean(0), result.bank[0, m], atol=1e-3)


def test_bank_runs_more_contexts_when_scan_kept_too_few(bed, workspace, scanned):
    result = run_bank(BankConfig(workspace=workspace, clusters=4, contexts=11, quiet=True, batch_size=4))
    assert result.counts.sum(1).tolist() == [11] * 5
    assert result.stats["forwards"] == 3


def test_bank_refuses_fewer_contexts_than_clusters(workspace):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="k-means needs T >= M"):
        BankConfig(workspace=workspace, clusters=8, contexts=4)


def test_stage_without_upstream_names_the_command(workspace):
    with pytest.raises(StvError, match="stv scan"):
        run_bank(BankConfig(workspace=workspace, clusters=2, contexts=4))
    with pytest.raises(StvError, match="stv bank"):
        run_search(SearchConfig(workspace=workspace))


def test_reuse_and_force(bed, workspace, scanned):
    assert run_scan(scan_config(bed, workspace)).reused
    assert not run_scan(scan_config(bed, workspace, force=True)).reused
    assert not run_scan(scan_config(bed, workspace, sensitivity="relative")).reused


def interrupt_after(monkeypatch, calls: int) -> None:
    """Make the shared loop's reward computation raise KeyboardInterrupt at call ``calls``."""
    import stvcli.stages.reinforce as reinforce_module

    original = reinforce_module.candidate_rewards
    seen = {"n": 0}

    def interrupted(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] == calls:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(reinforce_module, "candidate_rewards", interrupted)


def test_search_resumes_after_interruption_to_the_same_result(bed, workspace, scanned, monkeypatch, tmp_path):
    run_bank(BankConfig(workspace=workspace, clusters=4, contexts=8, quiet=True))
    config = SearchConfig(workspace=workspace, iterations=6, samples=4, checkpoint_every=2, quiet=True)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 5)
        with pytest.raises(KeyboardInterrupt):
            run_search(config)
    assert Workspace(workspace).path("search-state").exists()
    assert not Workspace(workspace).path("vectors").exists()
    resumed = run_search(config)
    assert len(resumed.rewards) == 6
    assert not Workspace(workspace).path("search-state").exists()  # removed once the vectors are written
    fresh = run_search(config.model_copy(update={"force": True}))
    assert torch.allclose(resumed.logits, fresh.logits, atol=1e-5)
    assert torch.equal(resumed.choices, fresh.choices)
    assert resumed.rewards == pytest.approx(fresh.rewards, abs=1e-6)
    assert resumed.stats["forwards"] == fresh.stats["forwards"]  # the interrupted run's forwards still count


def test_auto_search_interrupted_in_its_second_search_resumes_to_the_same_result(bed, workspace, scanned,
                                                                                 monkeypatch):
    run_bank(BankConfig(workspace=workspace, clusters=4, contexts=8, quiet=True))
    config = SearchConfig(workspace=workspace, iterations=6, samples=4, holdout=4, checkpoint_every=2, auto=True,
                          quiet=True)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 7 + 5)  # the first search: 6 iterations and its best-of; then iteration 5 of 6
        with pytest.raises(KeyboardInterrupt):
            run_search(config)
    space = Workspace(workspace)
    assert space.path("search-state-first-token").exists() and space.path("search-state-complete").exists()
    # a checkpoint names the insertion --auto chose: one searched under another insertion is never resumed
    checkpointed = load_artifact(space.path("search-state-complete"), "search-state-complete").settings["insert"]
    resumed = run_search(config)
    assert space.load("vectors").meta["extra"]["insert"] == checkpointed
    assert not [p.name for p in workspace.iterdir() if p.name.startswith("search-state")]
    fresh = run_search(config.model_copy(update={"force": True}))
    assert torch.equal(resumed.choices, fresh.choices) and torch.allclose(resumed.logits, fresh.logits, atol=1e-5)
    assert resumed.stats["forwards"] == fresh.stats["forwards"]  # each loop's own forwards restored, once


def test_mtv_resumes_after_interruption_to_the_same_choices(bed, workspace, scanned, monkeypatch):
    from stvcli.stages.mtv import run_mtv

    adapter, data = get_adapter(bed["model"]), load_task_data(bed["data"])
    config = MTVConfig(iterations=6, samples=4, holdout=4, best_of=3, checkpoint_every=2)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 5)  # iteration 5 of 6: the checkpoint after iteration 4 is on disk
        with pytest.raises(KeyboardInterrupt):
            run_mtv(workspace, adapter, data, config, quiet=True)
    state = Workspace(workspace).path("mtv-state")
    assert state.exists() and load_artifact(state, "mtv-state").meta["extra"]["iteration"] == 4
    assert not Workspace(workspace).path("mtv").exists()
    resumed = run_mtv(workspace, adapter, data, config, quiet=True)
    assert len(resumed.rewards) == 6 and not state.exists()
    fresh = run_mtv(workspace, adapter, data, config, quiet=True, force=True)
    assert torch.equal(resumed.locations, fresh.locations)
    assert torch.allclose(resumed.logits, fresh.logits, atol=1e-6)
    assert resumed.rewards == pytest.approx(fresh.rewards, abs=1e-6)
    assert resumed.stats["forwards"] == fresh.stats["forwards"]


def test_eval_applies_exactly_the_vectors_it_read(bed, workspace, scanned, monkeypatch):
    run_bank(BankConfig(workspace=workspace, clusters=4, contexts=8, quiet=True))
    run_search(SearchConfig(workspace=workspace, iterations=2, samples=4, quiet=True))
    vectors = load_artifact(Workspace(workspace).path("vectors"), "vectors")
    seen = {}
    original = accuracy_module.generate_each

    # zero-shot and stv see the same prompts: evaluated together (one prompt prefix for both)
    def spy(adapter, prompts, max_new_tokens, interventions, final=None, timer=None):
        seen.setdefault("interventions", []).append(list(interventions))
        return original(adapter, prompts, max_new_tokens, interventions, final, timer)

    monkeypatch.setattr(accuracy_module, "generate_each", spy)
    report = evaluate_module.run_eval(EvalConfig(workspace=workspace, methods=["zero-shot", "stv"], limit=4,
                                                 quiet=True, batch_size=4))
    ((zero, stv),) = seen["interventions"]
    assert zero is None
    assert torch.equal(stv.vectors, vectors["vectors"]) and torch.equal(stv.locations, vectors["locations"])
    assert stv.mode == "replace"
    assert set(report["results"]["vqa"]) == {"zero-shot", "stv"}
    assert report["results"]["vqa"]["stv"]["n"] == 4


def test_eval_runs_every_method_and_writes_results(bed, workspace, scanned, tmp_path):
    run_bank(BankConfig(workspace=workspace, clusters=4, contexts=8, quiet=True))
    run_search(SearchConfig(workspace=workspace, iterations=2, samples=4, quiet=True))
    methods = ["zero-shot", "icl:2", "stv", "stv+icl:1", "mtv", "random-locations", "mean-at-stv", "mean-all-heads"]
    out = tmp_path / "out"
    report = evaluate_module.run_eval(EvalConfig(
        workspace=workspace, methods=methods, limit=3, quiet=True, log_samples=True, output_path=out,
        mtv=MTVConfig(iterations=2, samples=4, holdout=4, best_of=3)))
    assert list(report["results"]["vqa"]) == methods
    for summary in report["results"]["vqa"].values():
        assert summary["n"] == 3 and 0 <= summary["ci_low"] <= summary["accuracy"] <= summary["ci_high"] <= 1
    assert (out / "results.json").exists()
    lines = (out / "samples_vqa.jsonl").read_text().splitlines()
    assert len(lines) == 3 * len(methods)
    assert {"scan", "bank", "search", "mtv", "eval"} <= set(report["stages"])
    assert report["stages"]["scan"]["forwards"] == 16
    mtv = load_artifact(Workspace(workspace).path("mtv"), "mtv")
    assert mtv["means"].shape[:2] == mtv["logits"].shape


def test_icl_that_does_not_fit_is_refused(bed, workspace, scanned):
    from stvcli.errors import DataError

    with pytest.raises(DataError, match="icl:30.*use at most"):
        evaluate_module.run_eval(EvalConfig(workspace=workspace, methods=["icl:30"], limit=2, quiet=True,
                                            model=bed["model"].model_copy(), data=bed["data"]))


def test_search_and_mtv_train_on_queries_disjoint_from_the_bank_and_scan_contexts(bed, workspace, scanned):
    from stvcli.stages.mtv import run_mtv

    run_bank(BankConfig(workspace=workspace, clusters=4, contexts=11, quiet=True))  # 8 kept + 3 new contexts
    run_search(SearchConfig(workspace=workspace, iterations=2, samples=4, select="best-of", best_of=2, holdout=3,
                            quiet=True))
    space = Workspace(workspace)
    scan_uids = set(space.load("scan").meta["extra"]["query_uids"])
    context_uids = set(space.load("bank").meta["extra"]["context_uids"])
    assert len(scan_uids) == 8 and context_uids == scan_uids  # the bank's extra contexts reuse the scan's queries
    queries = space.load("vectors").meta["extra"]["queries"]
    used = set(queries["train_uids"]) | set(queries["holdout_uids"])
    assert len(queries["holdout_uids"]) == 3 and queries["excluded"] == len(scan_uids | context_uids)
    assert not used & (scan_uids | context_uids)
    support = {item.uid for item in load_task_data(bed["data"]).support}
    assert used == support - scan_uids - context_uids

    result = run_mtv(workspace, get_adapter(bed["model"]), load_task_data(bed["data"]),
                     MTVConfig(iterations=2, samples=4, holdout=4, best_of=2), quiet=True)
    mtv_queries = space.load(result.kind).meta["extra"]["queries"]
    assert not (set(mtv_queries["train_uids"]) | set(mtv_queries["holdout_uids"])) & scan_uids


def test_too_few_support_queries_left_is_a_one_line_error(bed, workspace, scanned):
    run_bank(BankConfig(workspace=workspace, clusters=4, contexts=8, quiet=True))
    with pytest.raises(StvError, match="support items remain for the search.*lower --holdout"):
        run_search(SearchConfig(workspace=workspace, iterations=1, samples=2, select="best-of", holdout=10_000,
                                quiet=True))


def test_mtv_inserts_by_replacement_whatever_stv_uses(bed, workspace, scanned, monkeypatch):
    run_bank(BankConfig(workspace=workspace, clusters=4, contexts=8, quiet=True))
    run_search(SearchConfig(workspace=workspace, iterations=1, samples=2, insert="add", quiet=True))
    seen = []
    original = accuracy_module.generate_each  # the three methods see the same prompts: evaluated together

    def spy(adapter, prompts, max_new_tokens, interventions, final=None, timer=None):
        seen.extend(interventions)
        return original(adapter, prompts, max_new_tokens, interventions, final, timer)

    monkeypatch.setattr(accuracy_module, "generate_each", spy)
    report = evaluate_module.run_eval(EvalConfig(
        workspace=workspace, methods=["stv", "mtv", "mtv-add"], insert="add", limit=2, quiet=True, batch_size=2,
        mtv=MTVConfig(iterations=1, samples=2, holdout=2, best_of=2)))
    stv, mtv, mtv_add = seen
    assert (stv.mode, mtv.mode, mtv_add.mode) == ("add", "replace", "add")
    space = Workspace(workspace)
    assert space.load("mtv").settings["insert"] == "replace" and space.load("mtv-add").settings["insert"] == "add"
    paired = report["paired"]["vqa"]
    assert set(paired) == {"stv - mtv", "stv - mtv-add"} and paired["stv - mtv"]["n"] == 2
    table = evaluate_module.markdown_table(report)
    assert "STV - MTV:" in table and "build forwards" in table


def test_mean_and_keep_choices_start_from_the_mean_and_never_end_worse_on_the_holdout(bed, workspace, scanned,
                                                                                      tmp_path):
    from stvcli.stages.report import write_report

    run_bank(BankConfig(workspace=workspace, clusters=4, contexts=8, quiet=True))
    result = run_search(SearchConfig(workspace=workspace, iterations=3, samples=4, queries_per_iteration=2,
                                     mean_choice=True, keep_choice=True, mean_prior=0.5, holdout=4, quiet=True))
    vectors = Workspace(workspace).load("vectors")
    extra = vectors.meta["extra"]
    assert extra["choice_indices"] == {"mean": 4, "keep": 5}
    assert vectors["searched_logits"].shape == (5, 6) and result.logits.shape == (5, 6)
    written = vectors["searched_choices"] != 5
    assert torch.equal(vectors["locations"], vectors["searched_locations"][written])
    assert len(vectors["vectors"]) == int(written.sum())
    reward = extra["diagnostics"]["reward"]
    assert {"final", "random", "random_best", "mean", "none"} <= set(reward)
    assert extra["diagnostics"]["queries"] == 4
    assert reward["final"] >= reward["mean"] - 1e-6  # the start (mean everywhere) competed on the same hold-out
    history = extra["history"]
    assert len(history["rewards"]) == len(history["entropy"]) == len(history["changed"]) == 3
    assert all(0 <= share <= 1 for share in history["changed"])
    pictures = write_report(workspace, tmp_path / "pictures")
    assert (tmp_path / "pictures" / "search_diagnostics.png") in pictures


def test_the_mean_choice_starts_with_its_prior():
    from stvcli.stages.config import SearchConfig as Config
    from stvcli.stages.search import Choices

    bank, counts = torch.randn(2, 3, 4), torch.tensor([[2, 1, 0], [1, 1, 1]])
    choices = Choices.from_bank(bank, counts, Config(workspace="w", mean_choice=True, keep_choice=True,
                                                     mean_prior=0.25))
    probs = torch.softmax(choices.logits, -1)
    assert torch.allclose(probs[:, 3], torch.tensor([0.25, 0.25]))
    assert probs[0, 2] == 0  # the empty cluster stays impossible
    assert torch.allclose(choices.vectors[0, 3], (bank[0, 0] * 2 + bank[0, 1]) / 3)
    assert (choices.mean_index, choices.keep_index) == (3, 4)


def test_auto_scan_and_search_choose_on_support_data_and_say_why(bed, workspace):
    scan = run_scan(scan_config(bed, workspace, auto=True, auto_queries=6))
    extra = Workspace(workspace).load("scan").meta["extra"]
    auto = extra["auto"]
    assert auto["queries"] == 6 and len(auto["candidates"]) == 4 * 3 * 2  # (3 sensitivities + causal) x K x inserts
    chosen = auto["chosen"]
    assert auto["candidates"][0]["reward"] == max(row["reward"] for row in auto["candidates"])
    assert (extra["sensitivity"], extra["top_k"]) == (chosen["sensitivity"], chosen["top_k"])
    assert len(scan.locations) == chosen["top_k"] and "unused support queries" in auto["why"]
    assert extra["stats"]["forwards"] == 2 * 8 + auto["forwards"] and auto["forwards"] > 0  # the checks count
    run_bank(BankConfig(workspace=workspace, clusters=4, contexts=8, quiet=True))
    run_search(SearchConfig(workspace=workspace, iterations=2, samples=4, holdout=4, auto=True, quiet=True))
    vectors = Workspace(workspace).load("vectors").meta["extra"]
    assert vectors["auto"]["insert"] in ("add", "replace") and set(vectors["auto"]["rewards"]) == {"add", "replace"}
    assert vectors["insert"] == vectors["auto"]["insert"] and vectors["choice_indices"]["keep"] is not None
    from stvcli.vectors import TaskVectors

    assert TaskVectors.load(Workspace(workspace).path("vectors")).mode == vectors["auto"]["insert"]


def test_auto_search_keeps_the_reward_whose_pick_answers_most_holdout_queries(bed, workspace, scanned):
    from stvcli.scoring import generate
    from stvcli.vectors import TaskVectors

    run_bank(BankConfig(workspace=workspace, clusters=4, contexts=8, quiet=True))
    run_search(SearchConfig(workspace=workspace, iterations=2, samples=4, holdout=4, auto=True, quiet=True))
    space = Workspace(workspace)
    artifact = space.load("vectors")
    judged = artifact.meta["extra"]["auto"]["judged"]
    accuracy = judged["holdout_accuracy"]
    assert judged["tried"] == [f"{pick}@{at}" for pick in ("first-token", "complete", "mean") for at in ("every", "prompt")]
    assert set(accuracy) == set(judged["tried"])
    best = max(accuracy.values())
    label = next(name for name in judged["tried"] if accuracy[name] == best)  # ties: the earlier
    assert label == f"{judged['kept']}@{judged['write_at']}"
    assert artifact.meta["extra"]["write_at"] == judged["write_at"]
    assert artifact["searched_choices"].tolist() == judged["final"]
    if judged["kept"] == "mean":
        assert set(judged["final"]) == {artifact.meta["extra"]["choice_indices"]["mean"]}
    else:
        assert judged["final"] == judged["searches"][judged["kept"]]["choices"]
        assert artifact.meta["extra"]["rewards"] == judged["searches"][judged["kept"]]["rewards"]
    # the kept pick's hold-out accuracy, recomputed the way eval would score it
    data = load_task_data(bed["data"])
    by_uid = {item.uid: item for item in data.support}
    holdout = [by_uid[uid] for uid in artifact.meta["extra"]["queries"]["holdout_uids"]]
    vectors = TaskVectors.load(space.path("vectors"))
    adapter = get_adapter(bed["model"])
    generations = generate(adapter, [data.task.build_prompt(q) for q in holdout], data.task.max_new_tokens,
                           vectors.intervention(), data.task.answer_final)
    scores = [float(data.task.score(data.task.extract(g), q)) for g, q in zip(generations, holdout)]
    assert vectors.write_at == judged["write_at"]
    assert accuracy[label] == pytest.approx(sum(scores) / len(scores))
    assert not [p.name for p in workspace.iterdir() if p.name.startswith("search-state")]


def judge_with(monkeypatch, searches, choices, config, values: list[float]) -> tuple[dict, list]:
    """judge_searches on 2 locations and 4 hold-out queries, with ``values`` as the
    candidates' hold-out accuracies; returns its verdict and the interventions it judged."""
    from stvcli.stages import search as search_module

    seen: list = []

    def accuracy(adapter, task, queries, interventions, meter, batch_size):
        seen[:] = interventions
        return values

    monkeypatch.setattr(search_module, "holdout_accuracy", accuracy)
    judged = search_module.judge_searches(None, None, searches, choices, torch.tensor([[0, 0], [1, 1]]),
                                          torch.zeros(2, 4), ["q"] * 4, config, None)
    return judged, seen


def test_judge_searches_keeps_the_best_generating_pick_and_ties_go_to_the_earlier_candidate(monkeypatch):
    from stvcli.stages import search as search_module
    from stvcli.stages.reinforce import History

    bank, counts = torch.randn(2, 3, 4), torch.tensor([[1, 2, 0], [1, 1, 1]])
    config = SearchConfig(workspace="w", keep_choice=True, mean_choice=True, auto_write_at=["every"])
    choices = search_module.Choices.from_bank(bank, counts, config)  # clusters 0-2, mean 3, keep 4
    searches = [search_module.Searched(reward, None, None, History(), torch.tensor(final))
                for reward, final in (("first-token", [0, 1]), ("complete", [4, 4]))]
    names = ("first-token", "complete", "mean")
    for values, kept in (([0.5, 0.5, 0.5], "first-token"), ([0.25, 0.5, 0.5], "complete"),
                         ([0.75, 0.5, 0.8], "mean")):
        judged, seen = judge_with(monkeypatch, searches, choices, config, values)
        assert judged["kept"] == kept and judged["holdout_accuracy"] == dict(zip(names, values))
        assert judged["final"] == {"first-token": [0, 1], "complete": [4, 4], "mean": [3, 3]}[kept]
        assert "of 4 held-out support queries" in judged["why"]
    first, keep_all, mean = seen  # what each pick writes: its vectors where it does not keep
    assert torch.equal(first.vectors, bank[[0, 1], [0, 1]]) and keep_all is None
    assert torch.allclose(mean.vectors, torch.stack([(bank[0, 0] + 2 * bank[0, 1]) / 3, bank[1].mean(0)]))
    assert torch.equal(first.locations, torch.tensor([[0, 0], [1, 1]]))


def test_judge_writes_every_pick_at_every_position_and_keeps_the_best_pair(monkeypatch):
    from stvcli.stages import search as search_module
    from stvcli.stages.reinforce import History

    bank, counts = torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.long)
    config = SearchConfig(workspace="w", keep_choice=True, mean_choice=True)  # auto_write_at: every, prompt
    choices = search_module.Choices.from_bank(bank, counts, config)
    searches = [search_module.Searched("first-token", None, None, History(), torch.tensor([0, 1]))]
    labels = ["first-token@every", "first-token@prompt", "mean@every", "mean@prompt"]
    for values, kept, write_at in (([0.5, 0.5, 0.5, 0.5], "first-token", "every"),
                                   ([0.25, 0.5, 0.5, 0.75], "mean", "prompt"),
                                   ([0.25, 0.75, 0.5, 0.75], "first-token", "prompt")):
        judged, seen = judge_with(monkeypatch, searches, choices, config, values)
        assert judged["tried"] == labels and judged["holdout_accuracy"] == dict(zip(labels, values))
        assert (judged["kept"], judged["write_at"]) == (kept, write_at)
        assert judged["why"].startswith(f"{kept}@{write_at} answers")
    assert [i.write_at for i in seen] == ["every", "prompt", "every", "prompt"]
    assert torch.equal(seen[0].vectors, seen[1].vectors)


def test_causal_scores_are_single_head_reward_gains(bed, workspace, scanned):
    from stvcli.engine import Intervention
    from stvcli.stages.auto import causal_scores
    from stvcli.stages.common import Meter
    from stvcli.stages.reinforce import candidate_rewards

    adapter, data = get_adapter(bed["model"]), load_task_data(bed["data"])
    scan = Workspace(workspace).load("scan")
    zero, many = scan["zero_mean"], scan["many_mean"]
    queries = data.support[-4:]
    scores = {"l2": scan["scores"]}
    causal = causal_scores(adapter, data, queries, scores, 3, zero, many, "add", Meter(), None)
    pool = top_locations_of(scan["scores"], 3)
    others = torch.ones_like(causal, dtype=torch.bool)
    others[pool[:, 0], pool[:, 1]] = False
    assert causal[others].max() < causal[pool[:, 0], pool[:, 1]].min()  # only the scan's top heads rank
    layer, head = pool[1].tolist()
    bare = candidate_rewards(adapter, data.task, queries, Intervention(pool[1:2], torch.zeros(1, adapter.head_dim),
                                                                       "add"), 1, "first-token", Meter(), None)
    one = candidate_rewards(adapter, data.task, queries,
                            Intervention(pool[1:2], (many - zero)[layer, head][None], "add"), 1, "first-token",
                            Meter(), None)
    assert float(causal[layer, head]) == pytest.approx(float(one[0] - bare[0]), abs=1e-4)


def top_locations_of(scores, k):
    from stvcli.stages.scan import top_locations

    return top_locations(scores, k)


def _refingerprint(path, **changes):
    """Rewrite an artifact as if made for a model with other ``changes`` in its fingerprint."""
    from stvcli.artifacts import save_artifact

    artifact = load_artifact(path, path.name.split(".")[0])
    save_artifact(path, artifact.kind, artifact.tensors, model=artifact.meta["model"],
                  fingerprint={**artifact.fingerprint, **changes}, settings=artifact.settings,
                  data=artifact.meta.get("data"), seed=artifact.meta.get("seed"), extra=artifact.meta.get("extra"))


def test_bank_and_search_check_the_loaded_models_fingerprint(bed, workspace, scanned):
    from stvcli.errors import ArtifactError

    _refingerprint(workspace / "scan.safetensors", weights="another")
    with pytest.raises(ArtifactError, match="another model"):  # extra contexts need the model
        run_bank(BankConfig(workspace=workspace, clusters=4, contexts=11, quiet=True))
    run_scan(scan_config(bed, workspace, force=True))
    run_bank(BankConfig(workspace=workspace, clusters=4, contexts=11, quiet=True))
    _refingerprint(workspace / "bank.safetensors", weights="another")
    with pytest.raises(ArtifactError, match="another model"):
        run_search(SearchConfig(workspace=workspace, iterations=1, samples=2, queries_per_iteration=1, holdout=0,
                                quiet=True))


def test_complete_reward_is_the_likelihood_of_the_answer_and_its_end(bed):
    """reward=complete: log p(" answer\\n"), the answer and the separator that ends it,
    against a direct teacher-forced computation on the same intervention."""
    from stvcli.engine import Intervention
    from stvcli.scoring import answer_scores
    from stvcli.stages.common import Meter
    from stvcli.stages.reinforce import candidate_rewards

    adapter, data = get_adapter(bed["model"]), load_task_data(bed["data"])
    queries = data.support[:3]
    assert data.task.complete_target(queries[0]) == " " + queries[0].answer + "\n"
    candidate = Intervention(torch.tensor([[0, 1]]), torch.randn(1, 1, adapter.head_dim), "replace")
    complete = candidate_rewards(adapter, data.task, queries, candidate, 1, "complete", Meter(), None)
    answer = candidate_rewards(adapter, data.task, queries, candidate, 1, "answer", Meter(), None)
    one = Intervention(candidate.locations, candidate.vectors[0], "replace")
    prompts = [data.task.build_prompt(q) for q in queries]
    direct = answer_scores(adapter, prompts, [" " + q.answer + "\n" for q in queries], one).total.mean()
    assert float(complete[0]) == pytest.approx(float(direct), abs=1e-4)
    assert float(complete[0]) < float(answer[0])  # one more token's log-probability
