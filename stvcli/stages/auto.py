"""``--auto``: choose the method's settings for this model and task on support data
(docs/method.md §2.7 and §4.8), never on evaluation items.

The scan's choice: for each sensitivity (l2, relative, layer), each K in {K/2, K, 2K}
and each insertion (add, replace), write the many-shot mean at that candidate's
locations into zero-shot prompts of support queries the scan did not use, and keep the
candidate with the best mean first-token reward. The search's choice: the insertion
under which the bank's mean vectors earn the best reward on the search's hold-out.
Every candidate's reward is recorded with the choice, so a reader can see why.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from stvcli.data.types import Item, TaskData
from stvcli.engine import InsertMode, Intervention
from stvcli.errors import StvError
from stvcli.models.base import ModelAdapter
from stvcli.stages.common import Meter
from stvcli.stages.config import ScanConfig
from stvcli.stages.reinforce import candidate_rewards
from stvcli.stages.scan import SENSITIVITIES, top_locations

INSERTS: tuple[InsertMode, ...] = ("add", "replace")


def choose_locations(adapter: ModelAdapter, task_data: TaskData, scores: dict[str, torch.Tensor],
                     zero_mean: torch.Tensor, many_mean: torch.Tensor, k: int, scan_uids: set[str],
                     config: ScanConfig) -> dict[str, Any]:
    """The scan's ``--auto`` choice among sensitivities, K and insertions (see the module).

    scores: sensitivity -> mean scores [L, H]; zero_mean, many_mean: [L, H, D].
    """
    pool = [item for item in task_data.support if item.uid not in scan_uids]
    if not pool:
        raise StvError("--auto needs support items the scan did not use; scan fewer --queries or give more support data")
    queries = random.Random(f"auto:{config.seed}").sample(pool, min(config.auto_queries, len(pool)))
    n_layers, n_heads = scores["l2"].shape
    sizes = sorted({max(1, k // 2), k, min(n_layers * n_heads, 2 * k)})
    meter = Meter()
    rows = []
    causal: dict[str, torch.Tensor] = {}
    for insert in INSERTS:
        causal[insert] = causal_scores(adapter, task_data, queries, scores, 2 * k, zero_mean, many_mean,
                                       insert, meter, config.batch_size)
        by_mode = {**scores, "causal": causal[insert]}
        sets = [(mode, size, top_locations(by_mode[mode], size)) for mode in (*SENSITIVITIES, "causal")
                for size in sizes]
        rewards = location_set_rewards(adapter, task_data, queries, [locations for *_, locations in sets],
                                       zero_mean, many_mean, insert, meter, config.batch_size)
        rows += [{"sensitivity": mode, "top_k": size, "insert": insert, "reward": float(reward)}
                 for (mode, size, _), reward in zip(sets, rewards[1:])]
        zero_shot = float(rewards[0])
    rows.sort(key=lambda row: row["reward"], reverse=True)
    best = rows[0]
    runner_up = next((row for row in rows[1:] if row["sensitivity"] != best["sensitivity"]), None)
    why = (f"mean-vector reward {best['reward']:.3f} on {len(queries)} unused support queries at K={best['top_k']} "
           f"with {best['insert']} (zero-shot {zero_shot:.3f}"
           + (f"; best {runner_up['sensitivity']}: {runner_up['reward']:.3f})" if runner_up else ")"))
    return {"chosen": {key: best[key] for key in ("sensitivity", "top_k", "insert")}, "why": why,
            "candidates": rows, "zero_shot_reward": zero_shot, "queries": len(queries),
            "forwards": meter.forwards, "causal_scores": causal[best["insert"]]}


def causal_scores(adapter: ModelAdapter, task_data: TaskData, queries: list[Item], scores: dict[str, torch.Tensor],
                  pool_size: int, zero_mean: torch.Tensor, many_mean: torch.Tensor, insert: InsertMode, meter: Meter,
                  batch_size: int | None) -> torch.Tensor:
    """The scan re-ranked by cause: each head among the top ``pool_size`` of every
    sensitivity (the paper's scan as the first filter) gets the reward gain of writing
    its many-shot mean alone over the bare model; other heads rank below all of them.
    Returns scores [L, H] whose top-k are the k heads of largest gain."""
    pool = torch.unique(torch.cat([top_locations(values, pool_size) for values in scores.values()]), dim=0)
    rewards = location_set_rewards(adapter, task_data, queries, [location[None] for location in pool], zero_mean,
                                   many_mean, insert, meter, batch_size)
    gains = rewards[1:] - rewards[0]
    result = torch.full(scores["l2"].shape, float(gains.min()) - 1.0)
    result[pool[:, 0], pool[:, 1]] = gains.float()
    return result


def location_set_rewards(adapter: ModelAdapter, task_data: TaskData, queries: list[Item],
                         location_sets: list[torch.Tensor], zero_mean: torch.Tensor, many_mean: torch.Tensor,
                         insert: InsertMode, meter: Meter, batch_size: int | None) -> torch.Tensor:
    """Mean reward of writing the many-shot mean at each location set, after the bare
    model's: [1 + len(location_sets)]. All sets run as rows of one batch over the union
    of their locations, each row masked to its own set."""
    union = torch.unique(torch.cat(location_sets), dim=0)  # [U, 2]
    index = {tuple(location): i for i, location in enumerate(union.tolist())}
    mask = torch.zeros(1 + len(location_sets), len(union), dtype=torch.bool)  # row 0: the bare model
    for row, locations in enumerate(location_sets, start=1):
        mask[row, [index[tuple(location)] for location in locations.tolist()]] = True
    many = many_mean[union[:, 0], union[:, 1]]
    vectors = many - zero_mean[union[:, 0], union[:, 1]] if insert == "add" else many
    candidates = Intervention(union, vectors, insert, mask)
    return candidate_rewards(adapter, task_data.task, queries, candidates, len(mask), "first-token", meter, batch_size)


def choose_insert(mean_rewards: dict[InsertMode, float]) -> dict[str, Any]:
    """The search's ``--auto`` insertion: the one whose mean vectors earned the most."""
    best = max(mean_rewards, key=lambda mode: mean_rewards[mode])
    others = ", ".join(f"{mode} {reward:.3f}" for mode, reward in mean_rewards.items() if mode != best)
    return {"insert": best, "why": f"the bank's mean vectors earn {mean_rewards[best]:.3f} on the hold-out with "
                                   f"{best} ({others})", "rewards": mean_rewards}
