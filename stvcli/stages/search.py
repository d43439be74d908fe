"""Stage 3, the REINFORCE search: one bank vector per location (docs/method.md §4).

Policy: logits theta [K, M'] (one categorical per location over its M clusters, plus,
as options, the location's mean vector and "keep", i.e. no edit), trained by the
shared loop (``reinforce``): each iteration draws a batch of zero-shot support queries
and S samples (one choice per location), runs every query with every sample's vectors
inserted, and rewards each sample with minus the cross-entropy of the first answer
token (or the answer's log-likelihood). Final vectors: the per-location argmax of
theta, or the best of N draws, on a held-out support slice; with the mean choice the
final pick is never worse there than the policy's start (the mean everywhere). With
``--auto`` one search runs per reward and the pick whose generations answer most
hold-out queries (or the mean start, if it answers more) is kept (``judge_searches``).
The search checkpoints its state and resumes from it when rerun.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from stvcli import distributed as dist
from stvcli.artifacts import check_fingerprint
from stvcli.config import ModelOptions
from stvcli.console import say
from stvcli.data.loading import load_task_data
from stvcli.data.options import DataOptions
from stvcli.engine import InsertMode, Intervention, WriteAt
from stvcli.stages.accuracy import generate_and_score_each
from stvcli.stages.common import Meter, check_inputs, get_adapter
from stvcli.stages.config import SearchConfig
from stvcli.stages.reinforce import (
    CandidateScorer,
    CategoricalPolicy,
    Checkpoint,
    History,
    best_draw,
    candidate_rewards,
    reinforce,
    search_queries,
)
from stvcli.vectors import make_intervention
from stvcli.workspace import Provenance, Workspace


@dataclass
class SearchResult:
    vectors: torch.Tensor  # [K', D] at the locations the final pick edits
    choices: torch.Tensor  # [K] the final choice at every searched location
    logits: torch.Tensor  # [K, M'] the policy
    rewards: list[float]  # mean reward per iteration
    reused: bool
    stats: dict[str, Any]
    diagnostics: dict[str, Any] | None = None


def gather_vectors(bank: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
    """bank [K, M, D], choices [S, K] -> [S, K, D]."""
    return bank[torch.arange(bank.shape[0])[None, :], choices]


def bank_means(bank: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Each location's count-weighted mean of its centroids (about the mean of its T
    contexts): bank [K, M, D], counts [K, M] -> [K, D]. What mean-at-stv writes."""
    weights = counts.float().unsqueeze(-1)
    return (bank * weights).sum(1) / weights.sum(1).clamp_min(1)


def initial_logits(counts: torch.Tensor) -> torch.Tensor:
    """Uniform over each location's non-empty clusters: [K, M] zeros, -inf where count is 0."""
    logits = torch.zeros(counts.shape)
    logits[counts == 0] = float("-inf")
    return logits


@dataclass(frozen=True)
class Choices:
    """What the policy picks from at each location: ``vectors`` [K, M', D] (the M
    clusters, then the mean if offered, then a placeholder row for keep) and the
    policy's starting logits [K, M']."""

    vectors: torch.Tensor
    logits: torch.Tensor
    mean_index: int | None
    keep_index: int | None

    @classmethod
    def from_bank(cls, bank: torch.Tensor, counts: torch.Tensor, config: SearchConfig) -> "Choices":
        vectors, logits = [bank], [initial_logits(counts)]
        valid = (counts > 0).sum(1, keepdim=True).double()  # [K, 1] choices at logit 0
        mean_index = keep_index = None
        if config.keep_choice:
            valid = valid + 1
        if config.mean_choice:
            vectors.append(bank_means(bank, counts)[:, None])
            # logit a with e^a / (e^a + valid) = mean_prior
            logits.append(torch.log(config.mean_prior * valid / (1 - config.mean_prior)).float())
            mean_index = bank.shape[1]
        if config.keep_choice:
            vectors.append(torch.zeros_like(bank[:, :1]))
            logits.append(torch.zeros(bank.shape[0], 1))
            keep_index = bank.shape[1] + int(config.mean_choice)
        return cls(torch.cat(vectors, 1), torch.cat(logits, 1), mean_index, keep_index)

    def intervention(self, locations: torch.Tensor, baseline: torch.Tensor, choices: torch.Tensor,
                     insert: InsertMode, write_at: WriteAt = "every") -> Intervention:
        """Per-row vectors for draws [S, K]; where a draw keeps, that row's head is left as it is."""
        mask = None if self.keep_index is None else choices != self.keep_index
        return make_intervention(locations, gather_vectors(self.vectors, choices), baseline, insert, row_mask=mask,
                                 write_at=write_at)

    def written(self, final: torch.Tensor) -> torch.Tensor:
        """Which locations a final pick [K] edits: [K] bool (every one that does not keep)."""
        return final != self.keep_index if self.keep_index is not None else torch.ones_like(final, dtype=torch.bool)

    def final_intervention(self, locations: torch.Tensor, baseline: torch.Tensor, final: torch.Tensor,
                           insert: InsertMode, write_at: WriteAt = "every") -> Intervention | None:
        """What eval writes for a final pick [K]: its vectors at the locations it edits
        (None when it keeps every location)."""
        written = self.written(final)
        if not written.any():
            return None
        return make_intervention(locations[written], gather_vectors(self.vectors, final[None])[0][written],
                                 baseline[written], insert, write_at=write_at)

    def everywhere(self, index: int | None) -> torch.Tensor | None:
        """The draw [K] choosing ``index`` at every location (None when not offered)."""
        return None if index is None else torch.full((self.vectors.shape[0],), index, dtype=torch.long)


def run_search(config: SearchConfig) -> SearchResult:
    """Run (or reuse, or resume) the search and write ``vectors``; rank 0 writes."""
    dist.init()
    workspace = Workspace(config.workspace, config.force, config.quiet)
    start = workspace.begin("vectors", config.settings(), upstream="bank")
    bank_artifact, settings, done = start.upstream, start.settings, start.done
    if done is not None:
        extra = done.meta["extra"]
        return SearchResult(done["vectors"], done.tensors.get("searched_choices", done["choices"]),
                            done.tensors.get("searched_logits", done["logits"]), extra.get("rewards", []), True,
                            extra.get("stats", {}), extra.get("diagnostics"))

    locations, baseline = bank_artifact["locations"], bank_artifact["baseline"]
    task_data = load_task_data(DataOptions(**bank_artifact.settings["data"]))
    scan = workspace.load("scan")
    context_uids = set(scan.meta["extra"].get("query_uids", [])) | set(bank_artifact.meta["extra"].get("context_uids", []))
    checked = config.select == "best-of" or config.mean_choice or config.auto
    queries = search_queries(task_data.support, context_uids, config.seed, config.holdout if checked else 0,
                             config.queries_per_iteration,
                             fix="lower --holdout or --queries-per-iteration, scan fewer --queries, build the bank "
                                 "from fewer --contexts, or give more support data")
    holdout, train = queries.holdout, queries.train
    adapter = get_adapter(ModelOptions(**bank_artifact.settings["model"]))
    check_fingerprint(bank_artifact, adapter.fingerprint())
    check_inputs(adapter, task_data.task, holdout + train, stage="search", answers=True)

    meter = Meter()
    auto = None
    rewards = [config.reward]
    if config.auto:
        auto = _auto_options(adapter, task_data.task, bank_artifact, holdout or train[: config.holdout], config, meter)
        config = config.model_copy(update={"insert": auto["insert"], "mean_choice": True, "keep_choice": True,
                                           "select": "best-of"})
        rewards = list(config.auto_rewards)
    choices = Choices.from_bank(bank_artifact["bank"], bank_artifact["counts"], config)
    provenance = Provenance.of(bank_artifact)
    searches = []
    several = len(rewards) > 1
    for reward in rewards:
        score = CandidateScorer(adapter, task_data.task,
                                lambda draws: choices.intervention(locations, baseline, draws, config.insert,
                                                                   config.write_at),
                                reward, meter, config.batch_size)
        policy = CategoricalPolicy(choices.logits)
        history = reinforce(
            policy, score, train, iterations=config.iterations, samples=config.samples,
            queries_per_iteration=config.queries_per_iteration, lr=config.lr, seed=config.seed,
            label=f"search ({reward})" if several else "search",
            checkpoint=Checkpoint(workspace, f"search-state-{reward}" if several else "search-state",
                                  {**settings, "reward": reward, "insert": config.insert}, provenance,
                                  config.checkpoint_every, meter),
            quiet=config.quiet,
        )
        searches.append(Searched(reward, policy, score, history, select_final(policy, choices, holdout, score, config)))
    searched, final = searches[0], searches[0].final
    if config.auto:
        judged = judge_searches(adapter, task_data.task, searches, choices, locations, baseline, holdout, config, meter)
        auto["judged"] = judged
        searched = next((s for s in searches if s.reward == judged["kept"]), searched)  # the mean: the first's history
        final = torch.tensor(judged["final"])
        config = config.model_copy(update={"write_at": judged["write_at"]})
        say(f"search: --auto kept {judged['why']}", config.quiet)
    policy, score, history = searched.policy, searched.score, searched.history
    diagnostics = diagnose(choices, final, holdout or train[: config.holdout], score, config, history, locations)
    written = choices.written(final)
    vectors = gather_vectors(choices.vectors, final[None])[0][written]
    logits = policy.logits.detach()
    stats = dist.merge_stats(dist.all_gather_object(meter.summary()))
    result = SearchResult(vectors, final, logits, history.rewards, False, stats, diagnostics)
    if dist.is_main():  # every rank holds the same result; rank 0 writes it
        workspace.save(
            "vectors",
            {"vectors": vectors, "locations": locations[written], "logits": logits[written],
             "choices": final[written], "baseline": baseline[written], "searched_locations": locations,
             "searched_choices": final, "searched_logits": logits},
            settings=settings, provenance=provenance, seed=config.seed,
            extra={"stats": stats, "rewards": history.rewards, "history": history.as_dict(),
                   "diagnostics": diagnostics, "queries": queries.record(),
                   "choice_indices": {"mean": choices.mean_index, "keep": choices.keep_index},
                   "insert": config.insert, "write_at": config.write_at, **({"auto": auto} if auto else {})},
        )
        for kind in ("search-state", *(f"search-state-{reward}" for reward in rewards)):
            workspace.discard(kind)
        kept = f", {int((~written).sum())} of {len(final)} locations kept as they are" if choices.keep_index is not None else ""
        say(f"search: {config.iterations} iterations x {config.samples} samples{kept} -> {workspace.path('vectors')}",
            config.quiet)
    dist.barrier()  # the artifact exists before any rank moves on
    return result


@dataclass
class Searched:
    """One finished search: its reward, policy, scorer, history and final pick [K]."""

    reward: str
    policy: CategoricalPolicy
    score: CandidateScorer
    history: History
    final: torch.Tensor


def judge_searches(adapter, task, searches: list[Searched], choices: Choices, locations: torch.Tensor,
                   baseline: torch.Tensor, holdout: list, config: SearchConfig, meter: Meter) -> dict[str, Any]:
    """``--auto``: each search's final pick, and the mean vector everywhere (the searches'
    common start), each written at every position in ``auto_write_at``, generate answers
    to the hold-out queries, scored by the task's metric; the best mean score wins, ties
    going to the earlier candidate (the rewards in ``--auto-rewards`` order, then the
    mean; for each, the positions in order). Picks are judged by what eval measures
    because no reward can: the first-token reward cannot see an answer that does not
    stop, and a pick can beat the mean on its reward yet answer fewer queries."""
    picks = {searched.reward: searched.final for searched in searches}
    start = choices.everywhere(choices.mean_index)
    if start is not None:
        picks["mean"] = start
    several = len(config.auto_write_at) > 1
    tried = [(name, write_at) for name in picks for write_at in config.auto_write_at]
    labels = [f"{name}@{write_at}" if several else name for name, write_at in tried]
    interventions = [choices.final_intervention(locations, baseline, picks[name], config.insert, write_at)
                     for name, write_at in tried]
    accuracy = dict(zip(labels, holdout_accuracy(adapter, task, holdout, interventions, meter, config.batch_size)))
    best = max(range(len(tried)), key=lambda i: (accuracy[labels[i]], -i))
    kept, write_at = tried[best]
    others = ", ".join(f"{label} {value:.1%}" for label, value in accuracy.items() if label != labels[best])
    return {"kept": kept, "write_at": write_at, "final": picks[kept].tolist(), "tried": labels,
            "holdout_accuracy": accuracy,
            "why": f"{labels[best]} answers {accuracy[labels[best]]:.1%} of {len(holdout)} held-out support queries "
                   f"({others})",
            "searches": {s.reward: {"rewards": s.history.rewards, "choices": s.final.tolist()} for s in searches}}


def holdout_accuracy(adapter, task, queries: list, interventions: list[Intervention | None], meter: Meter,
                     batch_size: int | None) -> list[float]:
    """Per intervention (None: the bare model), the mean task score of greedy generations
    for the zero-shot ``queries`` with it written; the interventions share each batch's
    prompt prefix (``generate_and_score_each``), ranks share the queries."""
    def scores(start: int, stop: int) -> torch.Tensor:  # [queries, interventions]
        part = queries[start:stop]
        generated = generate_and_score_each(adapter, task, part, [task.build_prompt(q) for q in part],
                                            interventions, [meter] * len(interventions), batch_size)
        return torch.tensor([g.scores for g in generated], dtype=torch.float64).T.reshape(len(part), -1)

    return dist.gather_shares(len(queries), scores).mean(0).tolist()


def _auto_options(adapter, task, bank_artifact, queries: list, config: SearchConfig, meter: Meter) -> dict[str, Any]:
    """``--auto``: the insertion under which the bank's mean vectors do best on ``queries``;
    the mean and keep choices and best-of selection are then on (their start check makes
    the final pick no worse than the mean on the hold-out)."""
    from stvcli.stages.auto import choose_insert

    means = bank_means(bank_artifact["bank"], bank_artifact["counts"])  # [K, D]
    rewards = {}
    for mode in ("add", "replace"):
        candidate = make_intervention(bank_artifact["locations"], means, bank_artifact["baseline"], mode,
                                      write_at=config.write_at)
        rewards[mode] = float(dist.gather_shares(1, lambda a, b: candidate_rewards(  # one rank runs it
            adapter, task, queries, candidate, b - a, config.reward, meter, config.batch_size))[0])
    choice = choose_insert(rewards)
    choice["why"] += "; mean and keep choices on, best-of selection"
    say(f"search: --auto chose {choice['insert']} insertion: {choice['why']}", config.quiet)
    return choice


def select_final(policy: CategoricalPolicy, choices: Choices, holdout: list, score: CandidateScorer,
                 config: SearchConfig) -> torch.Tensor:
    """The final choice per location [K]: the policy's argmax, or with ``best-of`` the
    best of it and N - 1 draws on the hold-out; with the mean choice the start (the
    mean everywhere) competes too, so the pick is never worse than it on the hold-out."""
    candidates = [policy.greedy()]
    if config.select == "best-of":
        candidates += [policy.sample(1, torch.Generator().manual_seed(config.seed + i))[0]
                       for i in range(config.best_of - 1)]
    start = choices.everywhere(choices.mean_index)
    if start is not None:
        candidates.append(start)
    if len(candidates) == 1 or not holdout:
        return candidates[0]
    return candidates[best_draw(torch.stack(candidates), holdout, score)]


def diagnose(choices: Choices, final: torch.Tensor, queries: list, score: CandidateScorer,
             config: SearchConfig, history: History, locations: torch.Tensor) -> dict[str, Any]:
    """Mean reward on ``queries`` (the hold-out, else training queries) at the searched
    locations of: the final pick, 8 uniformly random cluster picks, the mean vector,
    and no edit (the bare model); "RL no better than random" means the reward is too
    sparse (docs/method.md §4.7)."""
    if not queries:
        return {}
    n_clusters = choices.vectors.shape[1] - int(choices.mean_index is not None) - int(choices.keep_index is not None)
    uniform = torch.softmax(choices.logits[:, :n_clusters].isfinite().float().log(), -1)  # [K, M] over non-empty
    random_draws = torch.multinomial(uniform, 8, replacement=True,
                                     generator=torch.Generator().manual_seed(config.seed + 99_991)).T
    named = [("final", final[None]), ("random", random_draws)]
    if choices.mean_index is not None:
        named.append(("mean", torch.full((1, len(final)), choices.mean_index, dtype=torch.long)))
    draws = torch.cat([draw for _, draw in named])
    rewards = dist.gather_shares(len(draws), lambda a, b: score(draws[a:b], queries)).tolist()
    reward: dict[str, float] = {}
    start = 0
    for name, draw in named:
        values = rewards[start : start + len(draw)]
        reward[name] = sum(values) / len(values)
        if name == "random":
            reward["random_best"] = max(values)
        start += len(draw)
    bare = Intervention(locations, torch.zeros(len(locations), choices.vectors.shape[-1]), "add",
                        torch.zeros(1, len(locations), dtype=torch.bool))
    reward["none"] = float(dist.gather_shares(1, lambda a, b: score.rewards_of(bare, b - a, queries))[0])
    return {
        "queries": len(queries),
        "reward": reward,
        "entropy": [history.entropy[0], history.entropy[-1]] if history.entropy else [],
        "changed_from_start": float((final != choices.logits.argmax(-1)).float().mean()),
    }
