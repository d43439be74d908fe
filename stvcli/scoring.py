"""Scoring helpers every stage uses: next-token log-probs, answer log-likelihood and
greedy generation, each optionally with vectors inserted (``stvcli.engine``)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from stvcli.engine import Intervention, applied
from stvcli.models.base import ModelAdapter
from stvcli.prompt import Prompt


# ------------------------------------------------------------------ transformers versions
#: The transformers release that renamed the KV cache ``past_key_values`` -> ``cache`` (the
#: forward keyword and the outputs' field; the old names warn from then on).
CACHE_RENAMED = (5, 24)


def _forward_parameters(model: Any) -> frozenset[str]:
    """The keyword names ``model``'s forward declares (its class's, or a patched/hooked
    instance forward's), looked up once per forward function."""
    forward = model.forward
    return _parameters_of(getattr(forward, "__func__", forward))


@lru_cache(maxsize=64)
def _parameters_of(function: Any) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return frozenset()


@lru_cache(maxsize=1)
def _transformers_version() -> tuple[int, int]:
    import transformers

    major, minor = (transformers.__version__.split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def model_kwargs(model: Any, *, keep: int | None = None, cache: Any = None, use_cache: bool = False) -> dict[str, Any]:
    """The keywords of one ``model(**inputs, ...)`` call, named as THIS model's forward names them.

    ``cache``: the KV cache to continue (``cache`` on transformers >= 5.24, ``past_key_values``
    before it and in remote code that only knows that name); ``keep``: logits of the last
    ``keep`` positions only (``logits_to_keep``, ``num_logits_to_keep`` on older remote code;
    omitted where the forward has neither: callers slice ``logits[:, -keep:]`` anyway).
    Decided from the forward's signature (once per forward function); a forward that takes
    neither cache name explicitly (``**kwargs`` only) gets the installed transformers' name.
    """
    names = _forward_parameters(model)
    kwargs: dict[str, Any] = {"use_cache": use_cache}
    if cache is not None:
        if "cache" in names:
            kwargs["cache"] = cache
        elif "past_key_values" in names or _transformers_version() < CACHE_RENAMED:
            kwargs["past_key_values"] = cache
        else:
            kwargs["cache"] = cache
    if keep is not None:
        for name in ("logits_to_keep", "num_logits_to_keep"):
            if name in names:
                kwargs[name] = keep
                break
    return kwargs


def output_cache(output: Any) -> Any:
    """The KV cache a ``use_cache=True`` forward returned (``output.cache`` on transformers
    >= 5.24, ``output.past_key_values`` before), read without the renamed field's warning."""
    if dataclasses.is_dataclass(output) and "cache" in {f.name for f in dataclasses.fields(output)}:
        return output.cache
    return output.past_key_values


def forward_logits(adapter: ModelAdapter, inputs: dict[str, torch.Tensor], keep: int = 1) -> torch.Tensor:
    """Logits of the last ``keep`` positions: [B, keep, V] float32."""
    with torch.inference_mode():
        output = adapter.model(**inputs, **model_kwargs(adapter.model, keep=keep))
    return output.logits[:, -keep:].float()


@dataclass
class AnswerScores:
    """Per-row log-likelihoods of a target answer: all [B] float32."""

    first_token: torch.Tensor  # log p(first answer token | prompt)
    total: torch.Tensor  # sum of log p over the answer's tokens
    n_tokens: torch.Tensor  # answer length in tokens


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
    final: Callable[[str], bool] | None = None,
) -> list[str]:
    """Greedy continuations of ``prompts`` (one batch, left padded), decoded to text.

    ``final(text)``: True once no continuation can change the row's extracted answer
    (``Task.answer_final``); generation stops when every row is final. Greedy tokens
    do not depend on when generation stops, so the answers are exactly those of the
    full ``max_new_tokens``.
    """
    inputs = adapter.encode(prompts)
    texts, _ = _generate(adapter, inputs, max_new_tokens, intervention, final)
    return texts


def _generate(
    adapter: ModelAdapter,
    inputs: dict[str, Any],
    max_new_tokens: int,
    intervention: Intervention | None,
    final: Callable[[str], bool] | None,
    cache: Any = None,
    keep_cache: bool = False,
) -> tuple[list[str], Any]:
    """One ``model.generate`` call: the decoded new tokens per row and, with ``keep_cache``,
    the KV cache it ended with. ``cache`` continues a cached prompt prefix."""
    tokenizer = adapter.tokenizer
    stopping = None
    if final is not None:
        from transformers import StoppingCriteriaList

        stopping = StoppingCriteriaList([_AnswersFinal(tokenizer, inputs["input_ids"].shape[1], final)])
    extra: dict[str, Any] = {}
    if cache is not None:
        extra["cache" if _transformers_version() >= CACHE_RENAMED else "past_key_values"] = cache
    if keep_cache:
        extra["return_dict_in_generate"] = True
    with applied(adapter, intervention), torch.inference_mode():
        output = adapter.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            stopping_criteria=stopping,
            **extra,
        )
    sequences = output.sequences if keep_cache else output
    new_tokens = sequences[:, inputs["input_ids"].shape[1] :]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True), (output_cache(output) if keep_cache else None)


def generate_each(
    adapter: ModelAdapter,
    prompts: Sequence[Prompt],
    max_new_tokens: int,
    interventions: Sequence[Intervention | None],
    final: Callable[[str], bool] | None = None,
    timer: Callable[[int], AbstractContextManager[Any]] | None = None,
) -> list[list[str]]:
    """``generate(adapter, prompts, max_new_tokens, i, final)`` for every intervention i,
    with the prompts' prefix computed once.

    Insertion starts at the last prompt token and attention is causal, so the KV cache
    of every column before it is the same under every intervention: the first
    intervention generates as ``generate`` does and keeps its cache; the others continue
    a copy of its first T - 1 columns (the last prompt token and the decode steps run,
    with their vectors). Same tokens, positions and masks as one ``generate`` each.
    Where that does not apply (the family does not declare ``prefix_sharing``,
    ``straightforward()``, 3-D M-RoPE positions, a cache layer other than a plain
    dynamic one, a prompt ending in an image token) every intervention runs ``generate``.
    ``timer(i)`` wraps intervention i's model work. Returns texts [intervention][row].
    """
    from stvcli.prefix import can_share_prefix, explicit_positions, image_token_ids, truncate_cache

    timer = timer or (lambda i: nullcontext())
    inputs = adapter.encode(prompts)
    ids = inputs["input_ids"]
    image_ids = image_token_ids(adapter)
    shareable = (
        len(interventions) > 1
        and can_share_prefix(adapter)
        and ids.shape[1] > 1
        and explicit_positions(adapter, inputs) is None
        and not (image_ids and bool(torch.isin(ids[:, -1], torch.tensor(image_ids, device=ids.device)).any()))
    )
    out: list[list[str]] = []
    prefix = None
    # only what the prefix's columns need: images live in the cache, the last token is plain text
    rest = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    for index, intervention in enumerate(interventions):
        with timer(index):
            if index == 0 or prefix is None:
                texts, cache = _generate(adapter, inputs, max_new_tokens, intervention, final,
                                         keep_cache=shareable and index == 0)
                if cache is not None:
                    prefix = truncate_cache(cache, ids.shape[1] - 1)
            else:
                texts, _ = _generate(adapter, rest, max_new_tokens, intervention, final,
                                     cache=truncate_cache(prefix, ids.shape[1] - 1))
        out.append(texts)
    return out


class _AnswersFinal:
    """Stopping criterion: every row's generated text is final (``generate``)."""

    def __init__(self, tokenizer: Any, prompt_length: int, final: Callable[[str], bool]) -> None:
        self.tokenizer, self.prompt_length, self.final = tokenizer, prompt_length, final

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        done = all(self.final(text) for text in texts)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def default_batch_size() -> int:
    """Rows per full forward when the user leaves ``--batch-size auto``."""
    return 32 if torch.cuda.is_available() else 8


def shared_answer_scores(
    adapter: ModelAdapter,
    prompts: Sequence[Prompt],
    answers: Sequence[str],
    candidates: Intervention | None,
    n_candidates: int,
    full_answer: bool = False,
    batch_size: int | None = None,
    timer: Callable[[int], AbstractContextManager[Any]] | None = None,
) -> AnswerScores | None:
    """``answer_scores`` of every (prompt, candidate) pair, sharing each prompt's prefix.

    Row ``q * n_candidates + s`` is prompt q with candidate s (``candidates`` holds per-
    candidate rows: vectors [S, K, D] and/or row_mask [S, K]). Each prompt (with its
    answer, tokenized exactly as ``answer_scores`` does) runs once up to its last prompt
    token with a KV cache; then all rows run one batched step over copies of their
    prompt's cache: the last prompt token only (``full_answer=False``: ``first_token`` is
    exact, ``total`` is NaN for answers of several tokens) or the last prompt token and
    the answer tokens but the final one (``full_answer=True``: both exact). Vectors are
    inserted at the step's positions, as ``answer_scores`` inserts them.

    ``timer(rows)`` wraps each model call (a stage meter). None when the prompts cannot
    be split (callers run ``answer_scores`` per row instead).
    """
    from stvcli.prefix import per_token_keys, realign, run_prefix

    timer = timer or (lambda rows: nullcontext())
    inputs, n_answer = adapter.encode_with_answers(prompts, answers)
    ids = inputs["input_ids"]
    width_full = ids.shape[1]
    lengths = inputs["attention_mask"].sum(1).cpu()
    n_answer = n_answer.cpu()
    steps = n_answer.clone() if full_answer else torch.ones_like(n_answer)  # step positions whose logits count
    drop = torch.ones_like(n_answer) if full_answer else n_answer  # tokens cut from the end of each row
    keys = per_token_keys(inputs)
    first_out = torch.empty(len(prompts), n_candidates)
    total_out = torch.empty(len(prompts), n_candidates)
    # Prompts whose steps have the same length share one prefix batch (then the step's
    # columns are exactly each row's last prompt token and answer tokens, never images).
    for n in sorted(set(steps.tolist())):
        same = (steps == n).nonzero().flatten()
        # prefixes are full forwards: as many rows as a full-forward batch
        for chunk in same.split(batch_size or default_batch_size()):
            keep_lengths = lengths[chunk] - drop[chunk]
            part = {k: (v[chunk.to(v.device)] if k in keys else v) for k, v in inputs.items()}
            if len(chunk) != len(prompts) and any(k not in keys and isinstance(v, torch.Tensor) for k, v in inputs.items()):
                # image tensors cannot be split by row generically: encode the chunk on its own
                sub, sub_answers = adapter.encode_with_answers([prompts[int(q)] for q in chunk],
                                                               [answers[int(q)] for q in chunk])
                part, sub_lengths = sub, sub["attention_mask"].sum(1).cpu()
                if not torch.equal(sub_answers.cpu(), n_answer[chunk]):
                    return None
                keep_lengths = sub_lengths - drop[chunk]
                part_lengths, part_width = sub_lengths, sub["input_ids"].shape[1]
            else:
                part_lengths, part_width = lengths[chunk], width_full
            truncated = realign(part, per_token_keys(part), keep_lengths, part_width - part_lengths,
                                int(keep_lengths.max()), adapter)
            answer_ids = torch.stack([part["input_ids"][b, part_width - int(n_answer[q]) :][:n].cpu()
                                      for b, q in enumerate(chunk.tolist())])  # [Qc, n]
            with timer(0):
                state = run_prefix(adapter, truncated, n)
            if state is None:
                return None
            scored = _score_rows(adapter, state, candidates, n_candidates, answer_ids, n, batch_size, timer)
            first_out[chunk], total_out[chunk] = scored
    first_out, total_out = first_out.flatten(), total_out.flatten()
    n_tokens = n_answer.repeat_interleave(n_candidates)
    if not full_answer:
        total_out = torch.where(n_tokens == 1, first_out, torch.full_like(first_out, float("nan")))
    return AnswerScores(first_out, total_out, n_tokens)


def _score_rows(adapter, state, candidates, n_candidates, answer_ids, n, batch_size, timer):
    """First-token and summed log-probs [Qc, S] of every (prompt, candidate) row of a prefix batch."""
    from stvcli.prefix import step

    n_queries = len(answer_ids)
    total_rows = n_queries * n_candidates
    query_of = torch.arange(n_queries).repeat_interleave(n_candidates)
    candidate_of = torch.arange(n_candidates).repeat(n_queries)
    first_out = torch.empty(total_rows)
    total_out = torch.empty(total_rows)
    trailing = torch.full((total_rows,), n, dtype=torch.long)
    size = batch_size or total_rows
    start = 0
    while start < total_rows:
        rows = slice(start, min(total_rows, start + size))
        q_index, s_index = query_of[rows], candidate_of[rows]
        intervention = None if candidates is None else candidates.rows(s_index)
        try:
            with timer(len(q_index)), applied(adapter, intervention, trailing=trailing[rows]):
                logits = step(adapter, state, q_index, keep=n)  # [R, n, V]
        except torch.cuda.OutOfMemoryError:
            if batch_size is not None or size == 1:
                raise
            torch.cuda.empty_cache()
            size = max(1, size // 2)
            continue
        log_probs = torch.log_softmax(logits, dim=-1)
        targets = answer_ids[q_index].to(log_probs.device)
        token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()  # [R, n]
        first_out[rows] = token_lp[:, 0]
        total_out[rows] = token_lp.sum(1)
        start = rows.stop
    return first_out.view(n_queries, n_candidates), total_out.view(n_queries, n_candidates)
