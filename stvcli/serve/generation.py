"""One batched generation with per-row controls, on top of ``model.generate``.

Every row has its own token budget, stop strings, temperature/top-p and seed, and may
stream its text. The batch runs ``generate`` greedily with the same arguments as
``stvcli.scoring.generate``, so a greedy row gives exactly what ``scoring.generate``
gives for that prompt and intervention. Sampled rows draw their token in a logits
processor from their own seeded ``torch.Generator`` (on the CPU, so a seed gives the
same draw on any device) and pin the scores to it, so greedy and sampled rows share a
forward. A stopping criterion does the per-row bookkeeping: end of sequence, budget,
stop strings, cancellation, and the streamed text (held back while it could still be
the start of a stop string). A guard checks every step's scores: rows whose scores turn
NaN (broken vectors, an overflow) raise ``RowsFailed`` naming them, so the caller can
fail those rows alone and rerun the rest.

Rows may also come as token ids (``/v1/completions``), may ask for the log-probability
of every generated token (``logprobs``: the model's own distribution, recorded by a
logits processor before any sampling touches the scores) and may have the vectors
written at more than the last prompt token (``trailing``: the positions of a
continuation already in the prompt, see ``stvcli.serve.echo``). ``first_tokens`` makes
the first decoding step from logits a caller already has, with the same bookkeeping.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from stvcli.engine import Intervention, applied
from stvcli.models.base import ModelAdapter
from stvcli.prompt import Prompt
from stvcli.serve.logprobs import TokenLogprob, pick
from stvcli.serve.schema import FinishReason


@dataclass
class Row:
    """What one request (one prompt of it) asks of the model."""

    prompt: Prompt | None  # None when the row comes as ``token_ids``
    max_tokens: int  # 0: no generation (an echo row that only scores its prompt)
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    stops: Sequence[str] = ()
    on_text: Callable[[str], None] | None = None  # called with each new piece of text (streaming)
    is_cancelled: Callable[[], bool] = field(default=lambda: False)
    token_ids: Sequence[int] | None = None  # the prompt as token ids, used as they are
    logprobs: int | None = None  # top alternatives per returned token; None: no log-probabilities
    echo: bool = False  # score the prompt's own tokens (token rows only)
    continuation_start: int | None = None  # token index where the vectors' continuation starts

    @property
    def n_prompt_tokens(self) -> int | None:
        return None if self.token_ids is None else len(self.token_ids)

    @property
    def trailing(self) -> int:
        """Prompt positions that get the vectors: from the token before ``continuation_start``."""
        n = self.n_prompt_tokens
        if n is None or self.continuation_start is None:
            return 1
        return n - self.continuation_start + 1


class RowsFailed(RuntimeError):
    """Generation cannot go on for ``rows`` (indices into the batch); the others were fine."""

    def __init__(self, rows: Sequence[int], reason: str) -> None:
        super().__init__(f"{reason} (rows {list(rows)})")
        self.rows = list(rows)
        self.reason = reason


@dataclass
class RowResult:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int] = field(default_factory=list)  # generated, with the end-of-sequence token that ended them
    logprobs: list[TokenLogprob] | None = None  # one per ``token_ids`` entry, when the row asked
    prompt_logprobs: list[TokenLogprob | None] | None = None  # echo: one per prompt token (the first None)


def generate_rows(
    adapter: ModelAdapter,
    inputs: dict[str, torch.Tensor],
    rows: Sequence[Row],
    intervention: Intervention | None = None,
    trailing: torch.Tensor | None = None,
) -> list[RowResult]:
    """Run ``rows`` (already encoded into ``inputs``, left padded) as one batch.

    ``trailing`` [B]: prompt positions (from the end) that get the vectors in the
    prefill (default: the last one); every generated token gets them.
    """
    tokenizer = adapter.tokenizer
    recorder = _LogprobRecorder() if any(r.logprobs is not None for r in rows) else None
    tracker = _Tracker(rows, tokenizer, _eos_ids(adapter), recorder)
    processors = LogitsProcessorList([_NanGuard(tracker)])
    if recorder is not None:
        processors.append(recorder)  # before the sampler pins the scores
    if any(r.temperature > 0 for r in rows):
        processors.append(_Sampler(rows, tracker))
    with applied(adapter, intervention, trailing=trailing), torch.inference_mode():
        adapter.model.generate(
            **inputs,
            max_new_tokens=max(r.max_tokens for r in rows),
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([tracker]),
        )
    prompt_tokens = inputs["attention_mask"].sum(1).tolist()
    return [tracker.finish(b, int(n)) for b, n in enumerate(prompt_tokens)]


def first_tokens(adapter: ModelAdapter, rows: Sequence[Row], logits: torch.Tensor,
                 prompt_tokens: Sequence[int]) -> list[RowResult]:
    """Rows of ``max_tokens`` 1 finished from ``logits`` [B, V] (float32) of their last
    prompt position: the token ``generate_rows`` would pick (greedy, or the row's
    seeded draw), with the same end-of-sequence, stop-string and log-prob handling."""
    if any(row.max_tokens != 1 for row in rows):
        raise ValueError("first_tokens finishes rows of max_tokens 1 only")
    recorder = _LogprobRecorder() if any(r.logprobs is not None for r in rows) else None
    tracker = _Tracker(rows, adapter.tokenizer, _eos_ids(adapter), recorder)
    scores = logits.float().clone()
    _NanGuard(tracker)(None, scores)
    if recorder is not None:
        recorder(None, scores)
    if any(r.temperature > 0 for r in rows):
        scores = _Sampler(rows, tracker)(None, scores)
    tracker(scores.argmax(-1)[:, None], scores)
    return [tracker.finish(b, int(n)) for b, n in enumerate(prompt_tokens)]


def _eos_ids(adapter: ModelAdapter) -> set[int]:
    """The end-of-sequence ids ``generate`` stops at (the generation config's)."""
    eos = getattr(adapter.model.generation_config, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


class _NanGuard(LogitsProcessor):
    """Raise ``RowsFailed`` for the unfinished rows whose next-token scores hold NaN."""

    def __init__(self, tracker: "_Tracker") -> None:
        self.tracker = tracker

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        broken = torch.isnan(scores).any(dim=-1)
        if bool(broken.any()):
            rows = [b for b in broken.nonzero().flatten().tolist() if self.tracker.states[b].finish_reason is None]
            if rows:
                raise RowsFailed(rows, "the model's scores turned NaN (are its vectors broken?)")
        return scores


class _LogprobRecorder(LogitsProcessor):
    """Keeps the current step's log-softmax of the raw scores, for the tracker to read
    the chosen tokens' log-probabilities from."""

    def __init__(self) -> None:
        self.latest: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.latest = torch.log_softmax(scores.float(), dim=-1)
        return scores


class _Sampler(LogitsProcessor):
    """Temperature/top-p sampling per row from per-row generators; greedy rows untouched."""

    def __init__(self, rows: Sequence[Row], tracker: "_Tracker") -> None:
        self.rows = rows
        self.tracker = tracker
        self.generators = [
            torch.Generator().manual_seed(row.seed if row.seed is not None else secrets.randbits(63))
            for row in rows
        ]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for b, row in enumerate(self.rows):
            if row.temperature <= 0 or self.tracker.states[b].finish_reason is not None:
                continue
            logits = scores[b].double().cpu()  # float64 and shifted: a tiny temperature picks the top token
            probs = torch.softmax((logits - logits.max()) / row.temperature, dim=-1)
            if row.top_p < 1.0:
                probs = _nucleus(probs, row.top_p)
            token = int(torch.multinomial(probs, 1, generator=self.generators[b]))
            scores[b] = float("-inf")
            scores[b, token] = 0.0
        return scores


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p``."""
    sorted_probs, order = probs.sort(descending=True)
    before = sorted_probs.cumsum(0) - sorted_probs  # mass of the tokens ranked above
    sorted_probs[before >= top_p] = 0.0
    return torch.zeros_like(probs).scatter(0, order, sorted_probs)


@dataclass
class _RowState:
    tokens: list[int] = field(default_factory=list)  # generated, without the end-of-sequence token
    ids: list[int] = field(default_factory=list)  # generated, with it
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    text: str | None = None  # the final text once finished (cut at a stop string)
    emitted: int = 0  # characters handed to on_text


class _Tracker(StoppingCriteria):
    """Collects each row's new tokens and decides, per row, when it is done."""

    def __init__(self, rows: Sequence[Row], tokenizer, eos_ids: set[int],
                 recorder: _LogprobRecorder | None = None) -> None:
        self.rows = rows
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.recorder = recorder
        self.states = [_RowState() for _ in rows]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        new_tokens = input_ids[:, -1].tolist()
        done = []
        for b, (row, state, token) in enumerate(zip(self.rows, self.states, new_tokens, strict=True)):
            if state.finish_reason is None:
                self._step(b, row, state, token)
            done.append(state.finish_reason is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _step(self, b: int, row: Row, state: _RowState, token: int) -> None:
        if row.is_cancelled():
            self._close(row, state, "stop")
            return
        state.ids.append(token)
        if row.logprobs is not None and self.recorder is not None and self.recorder.latest is not None:
            state.logprobs += pick(self.recorder.latest[b : b + 1], torch.tensor([token]), row.logprobs)
        if token in self.eos_ids:
            self._close(row, state, "stop")
            return
        state.tokens.append(token)
        if row.stops or row.on_text is not None:
            text = self._decode(state.tokens)
            cut = _first_stop(text, row.stops)
            if cut is not None:
                self._close(row, state, "stop", text[:cut])
                return
            if row.on_text is not None:
                safe = len(text) - _held_back(text, row.stops)
                if safe > state.emitted:
                    row.on_text(text[state.emitted:safe])
                    state.emitted = safe
        if len(state.tokens) >= row.max_tokens:
            self._close(row, state, "length")

    def _close(self, row: Row, state: _RowState, reason: FinishReason, text: str | None = None) -> None:
        state.finish_reason = reason
        state.text = text if text is not None else self._decode(state.tokens)
        if row.on_text is not None and len(state.text) > state.emitted:
            row.on_text(state.text[state.emitted:])
            state.emitted = len(state.text)

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def finish(self, b: int, prompt_tokens: int) -> RowResult:
        """Row b's result (a row ``generate`` stopped by its own length limit ends by length)."""
        row, state = self.rows[b], self.states[b]
        if state.finish_reason is None:
            self._close(row, state, "length")
        return RowResult(state.text or "", state.finish_reason, prompt_tokens, len(state.tokens), list(state.ids),
                         list(state.logprobs) if row.logprobs is not None else None)


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string starts in ``text``; None without one."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters not to stream yet: an unfinished UTF-8 character
    (decoded as U+FFFD), or the longest tail that could still grow into a stop string."""
    longest = len(text) - len(text.rstrip("\ufffd"))
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest
