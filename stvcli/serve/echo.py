"""Rows given as token ids (``/v1/completions``): the echo forward that scores a prompt's
own tokens, then generation.

Where the vectors go. ``stv`` writes a task's vectors at the last prompt token and at
every answer token: generating, at the last prompt token and each generated token
(``scoring.generate``); scoring an answer, at the last prompt token and every answer
token (``scoring.answer_scores``, ``trailing = n_answer + 1``), that is, at the position
that predicts each scored token. An echo request sends context and continuation as ONE
prompt (lm-evaluation-harness's loglikelihood sends ``context + continuation`` tokens and
only itself knows where the continuation starts), so the row says where its
continuation starts with ``continuation_start`` (a token index into the prompt: the
harness's ``ctxlen``), and the vectors are written at every prompt position from
``continuation_start - 1`` on, then at every generated token. Then the echoed
log-probabilities of tokens ``continuation_start..`` are exactly ``answer_scores(adapter,
[context], [continuation], intervention)``'s (``first_token`` at index
``continuation_start``, ``total`` their sum), and those before it are the bare model's.

Without ``continuation_start``: a row that asks for its prompt's log-probabilities
(``echo`` with ``logprobs``) scores every prompt token after the first with the vectors
(``continuation_start`` 1: vectors at every position: ``answer_scores`` with the first
token as the prompt and the rest as the answer); any other row treats its whole prompt
as context (vectors at its last token and the generated ones, as ``scoring.generate``).
Without vectors, none of this matters: the log-probabilities are the model's.

The echo forward is one left-padded batch (split so that the logits of a batch stay
within ``LOGIT_ELEMENTS``); an echo row of ``max_tokens`` 1 (what the harness sends)
takes its one generated token from that forward's last position (``first_tokens``);
other rows generate with ``generate_rows``, their prefill writing the same positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from stvcli.engine import applied
from stvcli.models.base import ModelAdapter
from stvcli.prompt import Prompt
from stvcli.scoring import model_kwargs
from stvcli.serve.catalog import VectorSet, batch_intervention
from stvcli.serve.generation import Row, RowResult, RowsFailed, first_tokens, generate_rows
from stvcli.serve.logprobs import TokenLogprob, pick

LOGIT_ELEMENTS = 2**27  # batch x positions x vocabulary of one echo forward's logits (512 MiB in fp32)


class TokenInputs:
    """Model inputs for token-id prompts, shaped as the adapter's own ``encode`` shapes a
    text-only prompt (left padded; extra per-token inputs a family adds, such as Qwen2-VL's
    ``mm_token_type_ids``, are zeros: the ids hold no image tokens)."""

    def __init__(self, adapter: ModelAdapter) -> None:
        self.adapter = adapter
        probe = adapter.encode([Prompt("a")])  # at start-up: which per-token inputs the family adds
        shape = probe["input_ids"].shape
        self.extra_keys = tuple(key for key, value in probe.items()
                                if key not in ("input_ids", "attention_mask") and isinstance(value, torch.Tensor)
                                and value.shape == shape)
        self.pad_id = int(adapter.tokenizer.pad_token_id)

    def __call__(self, token_lists: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids in token_lists)
        input_ids = torch.full((len(token_lists), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(token_lists), width), dtype=torch.long)
        for b, ids in enumerate(token_lists):
            input_ids[b, width - len(ids):] = torch.as_tensor(list(ids), dtype=torch.long)
            mask[b, width - len(ids):] = 1
        inputs = {"input_ids": input_ids, "attention_mask": mask}
        inputs.update({key: torch.zeros_like(input_ids) for key in self.extra_keys})
        device = self.adapter.device
        return {key: value.to(device) for key, value in inputs.items()}


def scores_prompt(row: Row) -> bool:
    """Whether the row asks for its prompt tokens' log-probabilities."""
    return row.echo and row.logprobs is not None


def default_continuation_start(n_tokens: int, echo: bool, logprobs: int | None) -> int:
    """``continuation_start`` for a row that names none (see the module doc)."""
    return 1 if echo and logprobs is not None else n_tokens


def run_token_rows(adapter: ModelAdapter, token_inputs: TokenInputs, rows: Sequence[Row],
                   sets: Sequence[VectorSet | None]) -> list[RowResult]:
    """Every row's result: the prompt's log-probabilities where asked, then its generation.

    ``RowsFailed`` names (by index into ``rows``) the rows whose scores turned NaN.
    """
    scored = [b for b, row in enumerate(rows) if scores_prompt(row)]
    prompt_logprobs, last_logits = _echo_forward(adapter, token_inputs, rows, sets, scored)
    one_step = [b for b in scored if rows[b].max_tokens == 1]
    generating = [b for b, row in enumerate(rows) if row.max_tokens >= 1 and b not in one_step]
    results: dict[int, RowResult] = {}
    if one_step:
        with _renumbered(one_step):
            finished = first_tokens(adapter, [rows[b] for b in one_step],
                                    torch.stack([last_logits[b] for b in one_step]),
                                    [rows[b].n_prompt_tokens for b in one_step])
        results.update(zip(one_step, finished, strict=True))
    if generating:
        inputs = token_inputs([rows[b].token_ids for b in generating])
        trailing = torch.tensor([rows[b].trailing for b in generating], dtype=torch.long)
        with _renumbered(generating):
            generated = generate_rows(adapter, inputs, [rows[b] for b in generating],
                                      batch_intervention([sets[b] for b in generating]),
                                      None if bool((trailing == 1).all()) else trailing)
        results.update(zip(generating, generated, strict=True))
    out = []
    for b, row in enumerate(rows):
        result = results.get(b) or RowResult("", "length", row.n_prompt_tokens, 0,
                                             logprobs=[] if row.logprobs is not None else None)
        result.prompt_logprobs = prompt_logprobs.get(b)
        out.append(result)
    return out


def _echo_forward(adapter: ModelAdapter, token_inputs: TokenInputs, rows: Sequence[Row],
                  sets: Sequence[VectorSet | None], scored: Sequence[int],
                  ) -> tuple[dict[int, list[TokenLogprob | None]], dict[int, torch.Tensor]]:
    """Per scored row: its prompt tokens' log-probabilities, and its last position's logits."""
    prompt_logprobs: dict[int, list[TokenLogprob | None]] = {}
    last_logits: dict[int, torch.Tensor] = {}
    broken: list[int] = []
    for chunk in _chunks(adapter, [rows[b] for b in scored], scored):
        ids = [rows[b].token_ids for b in chunk]
        inputs = token_inputs(ids)
        width = inputs["input_ids"].shape[1]
        trailing = torch.tensor([rows[b].trailing for b in chunk], dtype=torch.long)
        intervention = batch_intervention([sets[b] for b in chunk])
        with applied(adapter, intervention, trailing=trailing), torch.inference_mode():
            output = adapter.model(**inputs, **model_kwargs(adapter.model, keep=width))
        logits = output.logits[:, -width:]
        for i, b in enumerate(chunk):
            n = len(ids[i])
            row_logits = logits[i, width - n:].float()  # position t predicts token t+1
            if bool(torch.isnan(row_logits).any()):
                broken.append(b)
                continue
            targets = torch.as_tensor(list(ids[i][1:]), dtype=torch.long)
            log_probs = torch.log_softmax(row_logits[:-1], dim=-1)
            prompt_logprobs[b] = [None, *pick(log_probs, targets, rows[b].logprobs or 0)]
            last_logits[b] = row_logits[-1]
        del output, logits
    if broken:
        raise RowsFailed(broken, "the model's scores turned NaN (are its vectors broken?)")
    return prompt_logprobs, last_logits


def _chunks(adapter: ModelAdapter, rows: Sequence[Row], indices: Sequence[int]) -> list[list[int]]:
    """``indices`` in batches whose logits stay within ``LOGIT_ELEMENTS`` (at least one row each)."""
    vocab = int(getattr(adapter.text_config, "vocab_size", 0) or len(adapter.tokenizer))
    chunks: list[list[int]] = []
    current: list[int] = []
    width = 0
    for row, b in zip(rows, indices, strict=True):
        wider = max(width, row.n_prompt_tokens)
        if current and (len(current) + 1) * wider * vocab > LOGIT_ELEMENTS:
            chunks.append(current)
            current, wider = [], row.n_prompt_tokens
        current.append(b)
        width = wider
    if current:
        chunks.append(current)
    return chunks


class _renumbered:
    """Re-raise a ``RowsFailed`` of a subset of the rows with their indices in all rows."""

    def __init__(self, subset: Sequence[int]) -> None:
        self.subset = list(subset)

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if isinstance(error, RowsFailed):
            raise RowsFailed([self.subset[i] for i in error.rows], error.reason) from None
        return False
