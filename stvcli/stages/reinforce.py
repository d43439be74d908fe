"""The REINFORCE policy search shared by STV (which bank cluster at each location) and
MTV (which heads), docs/method.md §4 and §6.

A policy holds leaf logits and turns them into draws: ``CategoricalPolicy`` (STV,
logits [K, M], draws [S, K] cluster indices) or ``BernoulliPolicy`` (MTV, logits
[L, H], draws [S, L*H] 0/1 masks). ``reinforce`` runs the loop both use: per
iteration a seeded draw of S candidates and of the training queries, every candidate's
reward averaged over the queries (each rank scores its slice under torchrun), the
normalised advantage, a float64 policy-gradient loss and an Adam step; it checkpoints
its state into the workspace and resumes from it. ``best_draw`` picks among final
candidates on held-out support queries.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from stvcli import distributed as dist
from stvcli.console import progress, say
from stvcli.data.types import Item, Task
from stvcli.engine import Intervention
from stvcli.errors import StvError
from stvcli.models.base import ModelAdapter
from stvcli.prefix import can_share_prefix
from stvcli.scoring import answer_scores, shared_answer_scores
from stvcli.stages.common import Meter, run_batched
from stvcli.workspace import Provenance, Workspace

#: first-token: log p(first answer token) (the paper's); answer: log p(the answer's tokens);
#: complete: log p(the answer's tokens, then the end of the answer): it also rewards
#: stopping there, which a zero-shot prompt does not teach (docs/method.md §4.9).
Reward = Literal["first-token", "answer", "complete"]
P_MIN, P_MAX = 1e-3, 1 - 1e-3  # MTV's clamp of the Bernoulli probabilities


def advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(r - mean(r)) / (std(r) + 1e-3) over the samples. rewards: [S] -> [S]."""
    return (rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-3)


class Policy(Protocol):
    logits: torch.Tensor  # the leaf the optimizer updates

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor: ...

    def log_prob(self, draws: torch.Tensor) -> torch.Tensor: ...

    def greedy(self) -> torch.Tensor: ...

    def entropy(self) -> float: ...


class CategoricalPolicy:
    """One categorical per location over its M clusters: logits [K, M] (-inf = never)."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits.detach().clone().requires_grad_(True)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n draws of one cluster per location: [n, K] int64."""
        probs = torch.softmax(self.logits.detach(), dim=-1)
        return torch.multinomial(probs, n, replacement=True, generator=generator).T

    def log_prob(self, draws: torch.Tensor) -> torch.Tensor:
        """log pi(draw) for draws [S, K]: [S] float64."""
        log_probs = torch.log_softmax(self.logits.double(), dim=-1)  # [K, M]
        return log_probs.gather(1, draws.T).T.sum(1)

    def greedy(self) -> torch.Tensor:
        """The most probable cluster at every location: [K]."""
        return self.logits.detach().argmax(-1)

    def entropy(self) -> float:
        """Mean entropy (nats) of the locations' categoricals."""
        log_p = torch.log_softmax(self.logits.detach().double(), -1)
        return float(-(log_p.exp() * log_p.nan_to_num(neginf=0.0)).sum(-1).mean())


class BernoulliPolicy:
    """One Bernoulli per head (insert there or not): logits [L, H], p clamped to
    [P_MIN, P_MAX]; draws are masks [S, L*H] over the heads in flat order."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits.detach().clone().requires_grad_(True)

    def _p(self, dtype: torch.dtype) -> torch.Tensor:
        return torch.sigmoid(self.logits.to(dtype).flatten()).clamp(P_MIN, P_MAX)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n draws of the head set: [n, L*H] float (1 = insert at that head)."""
        return torch.bernoulli(self._p(torch.float32).detach().expand(n, -1), generator=generator)

    def log_prob(self, draws: torch.Tensor) -> torch.Tensor:
        p = self._p(torch.float64)
        masks = draws.double()
        return (masks * p.log() + (1 - masks) * (1 - p).log()).sum(1)

    def greedy(self) -> torch.Tensor:
        """The most probable head set: [L*H] float."""
        return (self._p(torch.float32).detach() > 0.5).float()

    def entropy(self) -> float:
        """Mean entropy (nats) of the heads' Bernoullis."""
        p = self._p(torch.float64).detach()
        return float(-(p * p.log() + (1 - p) * (1 - p).log()).mean())


def policy_step(policy: Policy, optimizer: torch.optim.Optimizer, draws: torch.Tensor,
                rewards: torch.Tensor) -> None:
    """One REINFORCE update: loss = -sum_s advantage_s * log pi(draw_s).

    In float64: the gradient of a choice no sample made is -p * sum(advantages), zero
    in exact arithmetic; in float32 it is rounding noise (~1e-9), which Adam's
    normalised first steps would turn into random moves of +-lr.
    """
    loss = -(advantages(rewards.double()) * policy.log_prob(draws)).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


Score = Callable[[torch.Tensor, Sequence[Item]], torch.Tensor]  # (draws [S, ...], queries) -> rewards [S]


@dataclass
class Checkpoint:
    """Where and how often the loop saves its state (``search-state`` or ``mtv-state``)."""

    workspace: Workspace
    kind: str
    settings: dict
    provenance: Provenance
    every: int = 25
    meter: Meter | None = None  # this loop's forwards are saved and restored, so a resumed run counts them all
    start_forwards: int = 0  # the meter's count when this loop began (set by ``reinforce``)


@dataclass
class History:
    """Per iteration: the candidates' mean reward and its spread, the policy's mean
    entropy after the step, and the share of choices (locations or heads) whose most
    probable value the step changed; docs/method.md §4.7."""

    rewards: list[float] = field(default_factory=list)
    spread: list[float] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    changed: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[float]]:
        return {"rewards": self.rewards, "spread": self.spread, "entropy": self.entropy, "changed": self.changed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        rewards = list(data.get("rewards", []))
        return cls(rewards, *(list(data.get(key, [float("nan")] * len(rewards))) for key in ("spread", "entropy",
                                                                                               "changed")))


def reinforce(policy: Policy, score: Score, train: Sequence[Item], *, iterations: int, samples: int,
              queries_per_iteration: int, lr: float, seed: int, checkpoint: Checkpoint, label: str,
              quiet: bool = False) -> History:
    """Train ``policy`` in place; returns the history of every iteration (``History``).

    Iteration i draws its candidates and queries from generators seeded with
    ``seed * 1_000_003 + i``, so a resumed run takes exactly the steps an uninterrupted
    one does. Under torchrun every rank holds the same policy and draws, scores its
    slice of the candidates, and takes the same step; rank 0 writes checkpoints.
    """
    optimizer = torch.optim.Adam([policy.logits], lr=lr)
    history = History()
    if checkpoint.meter is not None:  # the meter may already count other work (search --auto runs several loops)
        checkpoint.start_forwards = checkpoint.meter.forwards
    start = _resume(policy, optimizer, history, checkpoint, label, quiet)
    if len(set(dist.all_gather_object(start))) > 1:
        raise StvError("the ranks resumed the search from different checkpoints; is the workspace on a file system "
                       "every rank sees?")
    with progress(quiet) as bar:
        job = bar.add_task(label, total=iterations, completed=start)
        for iteration in range(start, iterations):
            iteration_seed = seed * 1_000_003 + iteration
            draws = policy.sample(samples, torch.Generator().manual_seed(iteration_seed))
            queries = random.Random(iteration_seed).sample(list(train), queries_per_iteration)
            rewards = dist.gather_shares(samples, lambda a, b: score(draws[a:b], queries))  # this rank's slice
            before = policy.greedy()
            policy_step(policy, optimizer, draws, rewards)
            history.rewards.append(float(rewards.mean()))
            history.spread.append(float(rewards.std(unbiased=False)))
            history.entropy.append(policy.entropy())
            history.changed.append(float((policy.greedy() != before).float().mean()))
            bar.advance(job)
            done = iteration + 1
            if done % checkpoint.every == 0 and done < iterations and dist.is_main():
                _save_state(policy, optimizer, history, done, checkpoint)
    return history


def best_draw(draws: torch.Tensor, queries: Sequence[Item], score: Score) -> int:
    """Index of the draw with the highest mean reward on ``queries`` (ranks share the work)."""
    rewards = dist.gather_shares(len(draws), lambda a, b: score(draws[a:b], queries))
    return int(rewards.argmax())


def split_support(pool: Sequence[Item], seed: int, holdout: int) -> tuple[list[Item], list[Item]]:
    """The support pool shuffled by ``seed``: (the first ``holdout`` items, the rest)."""
    shuffled = list(pool)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:holdout], shuffled[holdout:]


@dataclass(frozen=True)
class SearchQueries:
    """The support queries a search trains on and selects with, disjoint from the
    queries whose many-shot contexts built its vectors (docs/method.md §4.2)."""

    train: list[Item]
    holdout: list[Item]
    excluded: int  # support items left out because their contexts built the scan or bank

    def record(self) -> dict[str, object]:
        """What the artifact records: the uids trained and selected on, and how many were left out."""
        return {"train_uids": [q.uid for q in self.train], "holdout_uids": [q.uid for q in self.holdout],
                "excluded": self.excluded}


def search_queries(support: Sequence[Item], context_uids: set[str], seed: int, holdout: int, need: int,
                   fix: str) -> SearchQueries:
    """The support pool less the items in ``context_uids``, split by ``seed`` into a
    hold-out of ``holdout`` items and the training rest; a one-line error naming
    ``fix`` when fewer than ``need`` training items remain."""
    pool = [item for item in support if item.uid not in context_uids]
    held, train = split_support(pool, seed, holdout)
    if len(train) < need:
        raise StvError(
            f"only {len(train)} support items remain for the search after holding out {len(held)} and leaving out "
            f"the {len(support) - len(pool)} queries whose many-shot contexts built the vectors; {fix}"
        )
    return SearchQueries(train, held, len(support) - len(pool))


def _save_state(policy: Policy, optimizer: torch.optim.Optimizer, history: History, iteration: int,
                checkpoint: Checkpoint) -> None:
    state = optimizer.state[policy.logits]
    checkpoint.workspace.save(
        checkpoint.kind,
        {"logits": policy.logits.detach(), "exp_avg": state["exp_avg"], "exp_avg_sq": state["exp_avg_sq"]},
        settings=checkpoint.settings,
        provenance=checkpoint.provenance,
        extra={"iteration": iteration, "adam_step": float(state["step"]), "history": history.as_dict(),
               "forwards": checkpoint.meter.forwards - checkpoint.start_forwards if checkpoint.meter else 0},
    )


def _resume(policy: Policy, optimizer: torch.optim.Optimizer, history: History, checkpoint: Checkpoint,
            label: str, quiet: bool) -> int:
    """Load a matching checkpoint into the policy and optimizer; the iteration to start at."""
    state = checkpoint.workspace.load_state(checkpoint.kind, checkpoint.settings)
    if state is None or state["logits"].shape != policy.logits.shape:
        return 0
    extra = state.meta["extra"]
    with torch.no_grad():
        policy.logits.copy_(state["logits"])
    optimizer.state[policy.logits] = {
        "step": torch.tensor(extra["adam_step"]),
        "exp_avg": state["exp_avg"].clone(),
        "exp_avg_sq": state["exp_avg_sq"].clone(),
    }
    if checkpoint.meter is not None:
        checkpoint.meter.forwards += int(extra.get("forwards", 0))
    restored = History.from_dict(extra.get("history", {}))
    for mine, theirs in zip(history.as_dict().values(), restored.as_dict().values()):
        mine.extend(theirs)
    say(f"{label}: resuming from iteration {extra['iteration']} ({state.path})", quiet)
    return int(extra["iteration"])


@dataclass
class CandidateScorer:
    """Rewards of candidate draws: each draw becomes an intervention (``build``), and its
    reward is averaged over the queries (``candidate_rewards``)."""

    adapter: ModelAdapter
    task: Task
    build: Callable[[torch.Tensor], Intervention]
    reward: Reward
    meter: Meter
    batch_size: int | None

    def __call__(self, draws: torch.Tensor, queries: Sequence[Item]) -> torch.Tensor:
        return self.rewards_of(self.build(draws), len(draws), queries)

    def rewards_of(self, candidates: Intervention, n_candidates: int, queries: Sequence[Item]) -> torch.Tensor:
        """Rewards [n_candidates] of ready-made candidates (per-row vectors or masks)."""
        return candidate_rewards(self.adapter, self.task, queries, candidates, n_candidates, self.reward, self.meter,
                                 self.batch_size)


def candidate_rewards(
    adapter: ModelAdapter,
    task: Task,
    queries: Sequence[Item],
    candidates: Intervention,
    n_candidates: int,
    reward: Reward,
    meter: Meter,
    batch_size: int | None,
) -> torch.Tensor:
    """Reward of each candidate, averaged over the zero-shot ``queries``: [S].

    ``candidates`` holds per-candidate rows (vectors [S, K, D] and/or row_mask [S, K]);
    every query is run with every candidate, queries x candidates rows in batches: over
    each query's shared prefix where the family allows it (``stvcli.prefix``), else as
    full forwards (the straightforward path, also under ``prefix.straightforward()``).
    Reward: minus the cross-entropy of the first answer token, or the answer's total
    log-likelihood (``complete``: with the end of the answer appended).
    """
    prompts = [task.build_prompt(q) for q in queries]
    targets = [task.complete_target(q) if reward == "complete" else task.target(q) for q in queries]
    if can_share_prefix(adapter):
        # Each query's prompt runs once up to its last token (KV cache); all candidates x
        # queries then run as one batched step over it (stvcli.prefix). Exact.
        shared = shared_answer_scores(adapter, prompts, targets, candidates, n_candidates,
                                      full_answer=reward != "first-token", batch_size=batch_size,
                                      timer=meter.forward)
        if shared is not None:
            values = shared.first_token if reward == "first-token" else shared.total
            return values.view(len(queries), n_candidates).mean(0)
    rows = [(qi, si) for qi in range(len(queries)) for si in range(n_candidates)]

    def run(chunk):
        intervention = candidates.rows(torch.tensor([si for _, si in chunk]))
        with meter.forward(len(chunk)):
            scores = answer_scores(
                adapter, [prompts[qi] for qi, _ in chunk], [targets[qi] for qi, _ in chunk], intervention
            )
        values = scores.first_token if reward == "first-token" else scores.total
        return values.tolist()

    values = torch.tensor(run_batched(run, rows, batch_size))
    return values.view(len(queries), n_candidates).mean(0)
