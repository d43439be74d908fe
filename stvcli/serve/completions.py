"""``POST /v1/completions``: a request's prompts as rows, their results as OpenAI's
``text_completion``.

Each prompt of the request is one row (one choice, ``index`` in prompt order). Its
token budget: ``max_tokens`` as asked (0 only with ``echo``: score the prompt, generate
nothing), else the server's default cut to what the context still holds; over the
context is a 400. Where the vectors go (``continuation_start``) is decided here, by the
rule of ``stvcli.serve.echo``.

``logprobs`` (when asked) holds, per token of the choice (the echoed prompt's tokens,
then the generated ones, including an end-of-sequence token that ended the answer,
whose text the answer does not show): its text in context, its log-probability under
the model (None for the first prompt token), the ``logprobs`` most likely tokens with
theirs, and its offset in the concatenation of those token texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

from stvcli.serve.echo import default_continuation_start
from stvcli.serve.errors import bad_request
from stvcli.serve.generation import Row, RowResult
from stvcli.serve.schema import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Usage,
    new_completion_id,
    now,
)
from stvcli.serve.tokens import Tokens


def plan_rows(request: CompletionRequest, token_lists: Sequence[list[int]], *, context: int,
              default_max_tokens: int) -> list[Row]:
    """One row per prompt, or a 400 naming the field that cannot be served."""
    starts = request.continuation_start
    if isinstance(starts, list) and len(starts) != len(token_lists):
        raise bad_request(f"continuation_start has {len(starts)} entries for {len(token_lists)} prompts; give one "
                          "per prompt, or one number for all", param="continuation_start")
    if request.max_tokens == 0 and not request.echoes:
        raise bad_request("max_tokens 0 generates nothing; it is for echo requests (score the prompt only)",
                          param="max_tokens")
    rows = []
    for i, ids in enumerate(token_lists):
        n = len(ids)
        start = starts[i] if isinstance(starts, list) else starts
        if start is None:
            start = default_continuation_start(n, request.echoes, request.logprobs)
        elif start > n:
            raise bad_request(f"continuation_start {start} is past the end of prompt {i} ({n} tokens)",
                              param="continuation_start")
        budget = _token_budget(request.max_tokens, n, context, default_max_tokens, i, len(token_lists))
        rows.append(Row(None, budget, request.sampling_temperature, request.nucleus, request.seed, request.stops,
                        token_ids=ids, logprobs=request.logprobs, echo=request.echoes, continuation_start=start))
    return rows


def _token_budget(requested: int | None, n: int, context: int, default: int, index: int, count: int) -> int:
    room = context - n
    which = "the prompt" if count == 1 else f"prompt {index}"
    if requested is None:
        if room < 1:
            raise bad_request(f"{which} has {n} tokens, the model's context is {context}", param="prompt",
                              code="context_length_exceeded")
        return min(default, room)
    if requested > room:
        raise bad_request(f"this model's context is {context} tokens; {which} has {n} and max_tokens asks for "
                          f"{requested} more", param="max_tokens", code="context_length_exceeded")
    return requested


def build_completion(request: CompletionRequest, prompts: Sequence[str] | Sequence[Sequence[int]],
                     rows: Sequence[Row], results: Sequence[RowResult], tokens: Tokens, model: str,
                     fingerprint: str) -> Completion:
    """The response (tokenizer work: run it off the event loop)."""
    choices = [_choice(index, request, prompt, row, result, tokens)
               for index, (prompt, row, result) in enumerate(zip(prompts, rows, results, strict=True))]
    prompt_tokens = sum(result.prompt_tokens for result in results)
    completion_tokens = sum(result.completion_tokens for result in results)
    return Completion(id=new_completion_id("cmpl"), created=now(), model=model, system_fingerprint=fingerprint,
                      choices=choices, usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                                   total_tokens=prompt_tokens + completion_tokens))


def _choice(index: int, request: CompletionRequest, prompt: str | Sequence[int], row: Row, result: RowResult,
            tokens: Tokens) -> CompletionChoice:
    ids = list(row.token_ids or ())
    text = result.text
    if request.echoes:
        text = (prompt if isinstance(prompt, str) else tokens.decode(ids)) + text
    logprobs = None
    if request.logprobs is not None:
        generated = result.logprobs or []
        entries = list(result.prompt_logprobs or [None] * len(ids)) if request.echoes else []
        entries += generated
        start = 0 if request.echoes else len(ids)
        texts, tops = tokens.pieces(ids + result.token_ids[: len(generated)], start, entries)
        logprobs = CompletionLogprobs(
            tokens=texts,
            token_logprobs=[None if entry is None else entry.logprob for entry in entries],
            top_logprobs=tops,
            text_offset=[0, *accumulate(len(piece) for piece in texts)][: len(texts)],
        )
    return CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=result.finish_reason)
