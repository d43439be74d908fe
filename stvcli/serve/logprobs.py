"""Log-probabilities of chosen tokens and their top alternatives, as the completions
route returns them: the model's own distribution (log-softmax of the raw logits in
float32, before temperature or top-p), whatever the row's sampling settings."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability and the ``k`` most likely tokens at its position."""

    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, log-probability), most likely first


def pick(log_probs: torch.Tensor, tokens: torch.Tensor, k: int) -> list[TokenLogprob]:
    """``log_probs`` [N, V] (float32 log-softmax) at ``tokens`` [N], with the top ``k``."""
    if log_probs.shape[0] == 0:
        return []
    chosen = log_probs.gather(-1, tokens.to(log_probs.device).long()[:, None]).squeeze(-1).tolist()
    if k <= 0:
        return [TokenLogprob(value) for value in chosen]
    values, ids = log_probs.topk(min(k, log_probs.shape[-1]), dim=-1)
    return [TokenLogprob(value, tuple(zip(row_ids, row_values, strict=True)))
            for value, row_ids, row_values in zip(chosen, ids.tolist(), values.tolist(), strict=True)]
