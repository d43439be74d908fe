"""Stage 3, the REINFORCE search: one bank vector per location.

Policy: logits theta [K, M] (init 0), one categorical per location. Each iteration
draws a batch of zero-shot support queries and S samples (one cluster per location),
runs every query with every sample's vectors inserted, and rewards each sample with
minus the cross-entropy of the first answer token. Advantage = (r - mean) / (std +
1e-3); loss = -sum_s adv_s * sum_k log pi(choice_{s,k}); Adam. Final vectors: the
per-location argmax of theta (or the best of N draws on a held-out support slice).
The search checkpoints its state and resumes from it when rerun.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from stvcli import distributed as dist
from stvcli.artifacts import load_artifact, save_artifact
from stvcli.config import ModelOptions
from stvcli.data.loading import load_task_data
from stvcli.data.options import DataOptions
from stvcli.errors import StvError
from stvcli.stages.common import Meter, artifact_path, file_digest, get_adapter, progress, reusable, reuse_artifact, say
from stvcli.stages.config import SearchConfig
from stvcli.stages.reinforce import advantages, candidate_rewards
from stvcli.vectors import make_intervention


@dataclass
class SearchResult:
    vectors: torch.Tensor  # [K, D]
    choices: torch.Tensor  # [K]
    logits: torch.Tensor  # [K, M]
    rewards: list[float]  # mean reward per iteration
    reused: bool
    stats: dict[str, Any]


def policy_step(
    logits: torch.Tensor, optimizer: torch.optim.Optimizer, choices: torch.Tensor, rewards: torch.Tensor
) -> None:
    """One REINFORCE update of categorical logits [K, M] from choices [S, K] and rewards [S].

    The loss is computed in float64: the gradient of a cluster no sample chose is
    -p * sum(advantages), zero in exact arithmetic; in float32 it is rounding noise
    (~1e-9), which Adam's normalised first steps would turn into random moves of +-lr.
    """
    log_probs = torch.log_softmax(logits.double(), dim=-1)  # [K, M]
    chosen = log_probs.gather(1, choices.T).T  # [S, K]
    loss = -(advantages(rewards.double()) * chosen.sum(1)).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def sample_choices(logits: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n draws of one cluster per location: [n, K] int64."""
    probs = torch.softmax(logits.detach(), dim=-1)
    return torch.multinomial(probs, n, replacement=True, generator=generator).T


def gather_vectors(bank: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
    """bank [K, M, D], choices [S, K] -> [S, K, D]."""
    return bank[torch.arange(bank.shape[0])[None, :], choices]


def run_search(config: SearchConfig) -> SearchResult:
    """Run (or reuse, or resume) the search and write ``vectors``.

    Under torchrun every rank holds the same policy and draws the same choices (same
    seeded generator); each scores its slice of the S candidates, the rewards are
    gathered, and every rank takes the same Adam step. Rank 0 writes checkpoints and
    the artifact.
    """
    dist.init()
    bank_path = artifact_path(config.workspace, "bank")
    bank_artifact = load_artifact(bank_path, "bank")
    upstream = bank_artifact.settings
    settings = {
        **config.model_dump(mode="json", exclude={"workspace", "force", "batch_size", "quiet", "checkpoint_every"}),
        "bank": file_digest(bank_path),
        "task": upstream["task"],
        "model": upstream["model"],
        "data": upstream["data"],
    }
    path = artifact_path(config.workspace, "vectors")
    done = reuse_artifact(path, "vectors", settings, config.force, quiet=config.quiet,
                          why="same settings and bank; --force reruns")
    if done is not None:
        extra = done.meta["extra"]
        return SearchResult(done["vectors"], done["choices"], done["logits"], extra.get("rewards", []), True,
                            extra.get("stats", {}))

    bank, counts = bank_artifact["bank"], bank_artifact["counts"]
    locations, baseline = bank_artifact["locations"], bank_artifact["baseline"]
    adapter = get_adapter(ModelOptions(**upstream["model"]))
    task_data = load_task_data(DataOptions(**upstream["data"]))
    task = task_data.task
    pool = list(task_data.support)
    random.Random(config.seed).shuffle(pool)
    holdout = pool[: config.holdout] if config.select == "best-of" else []
    train = pool[len(holdout) :]
    if len(train) < config.queries_per_iteration:
        raise StvError(f"only {len(train)} support items remain for the search; lower --holdout")

    logits = torch.zeros(bank.shape[:2])
    logits[counts == 0] = float("-inf")  # empty clusters are never chosen
    logits.requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=config.lr)
    rewards_log: list[float] = []
    start = _resume(config, settings, logits, optimizer, rewards_log)
    if len(set(dist.all_gather_object(start))) > 1:
        raise StvError("the ranks resumed the search from different checkpoints; is the workspace on a file system "
                       "every rank sees?")
    meter = Meter()

    def candidates(choices: torch.Tensor):
        return make_intervention(locations, gather_vectors(bank, choices), baseline, config.insert)

    with progress(config.quiet) as bar:
        job = bar.add_task("search", total=config.iterations, completed=start)
        for iteration in range(start, config.iterations):
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + iteration)
            queries = random.Random(config.seed * 1_000_003 + iteration).sample(train, config.queries_per_iteration)
            choices = sample_choices(logits, config.samples, generator)
            rewards = dist.gather_shares(config.samples, lambda a, b: candidate_rewards(  # this rank's candidates
                adapter, task, queries, candidates(choices[a:b]), b - a, config.reward, meter, config.batch_size
            ))
            policy_step(logits, optimizer, choices, rewards)
            rewards_log.append(float(rewards.mean()))
            bar.advance(job)
            if (iteration + 1) % config.checkpoint_every == 0 and iteration + 1 < config.iterations and dist.is_main():
                _checkpoint(config, settings, logits, optimizer, rewards_log, iteration + 1, bank_artifact)

    final = logits.detach().argmax(-1)
    if config.select == "best-of" and holdout:
        draws = [final] + [sample_choices(logits, 1, torch.Generator().manual_seed(config.seed + i))[0]
                           for i in range(config.best_of - 1)]
        stacked = torch.stack(draws)
        scores = dist.gather_shares(len(draws), lambda a, b: candidate_rewards(
            adapter, task, holdout, candidates(stacked[a:b]), b - a, config.reward, meter, config.batch_size))
        final = draws[int(scores.argmax())]
    vectors = gather_vectors(bank, final[None])[0]
    stats = dist.merge_stats(dist.all_gather_object(meter.summary()))
    result = SearchResult(vectors, final, logits.detach(), rewards_log, False, stats)
    if not dist.is_main():  # rank 0 writes; every rank holds the same result
        dist.barrier()
        return result
    save_artifact(
        path,
        "vectors",
        {"vectors": vectors, "locations": locations, "logits": logits.detach(), "choices": final,
         "baseline": baseline},
        model=bank_artifact.meta["model"],
        fingerprint=bank_artifact.fingerprint,
        settings=settings,
        data=bank_artifact.meta.get("data"),
        seed=config.seed,
        extra={"stats": stats, "rewards": rewards_log},
    )
    artifact_path(config.workspace, "search-state").unlink(missing_ok=True)
    say(f"search: {config.iterations} iterations x {config.samples} samples -> {path}", config.quiet)
    dist.barrier()  # the artifact exists before any rank moves on
    return result


def _checkpoint(config, settings, logits, optimizer, rewards_log, iteration, bank_artifact) -> None:
    state = optimizer.state[logits]
    save_artifact(
        artifact_path(config.workspace, "search-state"),
        "search-state",
        {"logits": logits.detach(), "exp_avg": state["exp_avg"], "exp_avg_sq": state["exp_avg_sq"]},
        model=bank_artifact.meta["model"],
        fingerprint=bank_artifact.fingerprint,
        settings=settings,
        seed=config.seed,
        extra={"iteration": iteration, "adam_step": float(state["step"]), "rewards": rewards_log},
    )


def _resume(config, settings, logits, optimizer, rewards_log) -> int:
    """Load a matching checkpoint into logits/optimizer; returns the iteration to start at."""
    path = artifact_path(config.workspace, "search-state")
    if config.force or not reusable(path, "search-state", settings, False):
        return 0
    state = load_artifact(path, "search-state")
    extra = state.meta["extra"]
    with torch.no_grad():
        logits.copy_(state["logits"])
    optimizer.state[logits] = {
        "step": torch.tensor(extra["adam_step"]),
        "exp_avg": state["exp_avg"].clone(),
        "exp_avg_sq": state["exp_avg_sq"].clone(),
    }
    rewards_log.extend(extra["rewards"])
    say(f"search: resuming from iteration {extra['iteration']} ({path})", config.quiet)
    return int(extra["iteration"])
