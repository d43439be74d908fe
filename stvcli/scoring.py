"""Scoring helpers every stage uses: next-token log-probs, answer log-likelihood and
greedy generation, each optionally with vectors inserted (``stvcli.engine``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from stvcli.engine import Intervention, applied
from stvcli.models.base import ModelAdapter
from stvcli.prompt import Prompt


def forward_logits(adapter: ModelAdapter, inputs: dict[str, torch.Tensor], keep: int = 1) -> torch.Tensor:
    """Logits of the last ``keep`` positions: [B, keep, V] float32."""
    with torch.inference_mode():
        output = adapter.model(**inputs, logits_to_keep=keep, use_cache=False)
    return output.logits[:, -keep:].float()


@dataclass
class AnswerScores:
    """Per-row log-likelihoods of a target answer: all [B] float32."""

    first_token: torch.Tensor  # log p(first answer token | prompt)
    total: torch.Tensor  # sum of log p over the answer's tokens
    n_tokens: torch.Tensor  # answer length in tokens

    @property
    def first_token_ce(self) -> torch.Tensor:
        return -self.first_token


def answer_scores(
    adapter: ModelAdapter,
    prompts: Sequence[Prompt],
    answers: Sequence[str],
    intervention: Intervention | None = None,
) -> AnswerScores:
    """Teacher-forced log-likelihood of ``answers`` after ``prompts``, in one batch.

    With an intervention, vectors are written at the last prompt token and at every
    answer token, as they would be during generation.
    """
    inputs, n_answer = adapter.encode_with_answers(prompts, answers)
    keep = int(n_answer.max()) + 1
    with applied(adapter, intervention, trailing=n_answer + 1):
        logits = forward_logits(adapter, inputs, keep=keep)  # [B, keep, V]
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)  # position t predicts token t+1
    targets = inputs["input_ids"][:, -keep + 1 :].to(log_probs.device)  # [B, keep-1]
    token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, keep-1]
    positions = torch.arange(keep - 1, device=token_lp.device)
    n = n_answer.to(token_lp.device)
    mask = positions[None, :] >= (keep - 1 - n)[:, None]
    total = (token_lp * mask).sum(1)
    first_index = (keep - 1 - n).clamp(min=0)
    first = token_lp.gather(1, first_index[:, None]).squeeze(1)
    return AnswerScores(first.cpu(), total.cpu(), n_answer.cpu())


def generate(
    adapter: ModelAdapter,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 20,
    intervention: Intervention | None = None,
) -> list[str]:
    """Greedy continuations of ``prompts`` (one batch, left padded), decoded to text."""
    inputs = adapter.encode(prompts)
    tokenizer = adapter.tokenizer
    with applied(adapter, intervention), torch.inference_mode():
        output = adapter.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
