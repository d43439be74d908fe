"""The FastAPI app: OpenAI-style routes in front of the batching worker.

Routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions`` (legacy completions
with ``echo``/``logprobs``: what lm-evaluation-harness's ``local-completions`` needs for
log-likelihood tasks), and vLLM's tokenizer routes at the root (``/tokenizer_info``,
``/tokenize``, ``/detokenize``), all behind the API key when one is set; ``/health`` is
open.

Every refusal is a JSON error in the OpenAI shape (see ``stvcli.serve.errors``): bad
JSON or fields 400, missing or wrong key 401, unknown model 404, body or image over
its limit 413, full queue 503 with Retry-After. Checks run before a request is queued,
so a streamed answer never starts for a request that cannot be served.

Bodies are bounded before they are parsed (``stvcli.serve.limits``: bytes by an ASGI
middleware, nesting by a scan of the raw bytes), and the CPU-heavy steps of a request
(JSON, validation, image decoding, tokenizing) run off the event loop; a prompt whose
text alone is longer than the context could hold is refused without tokenizing it. The
interactive docs (``/docs``, ``/redoc``, ``/openapi.json``) are off.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from stvcli import __version__
from stvcli.models.base import ModelAdapter
from stvcli.prompt import IMAGE_PLACEHOLDER, Prompt
from stvcli.serve.catalog import Catalog, check_vector_set, load_catalog, served_name, vector_set
from stvcli.serve.completions import build_completion, plan_rows
from stvcli.serve.config import ServeConfig
from stvcli.serve.errors import ApiError, bad_request, server_error, unauthorized
from stvcli.serve.generation import Row, RowResult
from stvcli.serve.limits import BodyLimit, parse_json
from stvcli.serve.prompts import build_prompt
from stvcli.serve.schema import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChunkChoice,
    Completion,
    CompletionRequest,
    Delta,
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
    Usage,
    new_completion_id,
    now,
)
from stvcli.serve.tokens import Tokens
from stvcli.serve.worker import Failed, Finished, Job, Worker
from stvcli.vectors import TaskVectors

log = logging.getLogger("stvcli.serve")
FINGERPRINT = f"stv-{__version__}"


def create_app(
    config: ServeConfig,
    adapter: ModelAdapter | None = None,
    vector_sets: Sequence[TaskVectors] | None = None,
) -> FastAPI:
    """The server for ``config``; pass ``adapter`` / ``vector_sets`` to skip loading them."""
    if adapter is None:
        from stvcli.serve.server import load_adapter

        adapter = load_adapter(config)
    loaded_as = config.model or adapter.name
    base_id = served_name(loaded_as)
    if vector_sets is None:
        catalog = load_catalog(adapter, base_id, config.vectors, config.insert, loaded_as, config.write_at)
    else:
        sets = []
        for vectors in vector_sets:
            source = f"vectors for task {vectors.task!r}"
            sets.append(check_vector_set(adapter, vector_set(base_id, vectors, config.insert, write_at=config.write_at),
                                         source))
        catalog = Catalog(base_id, sets, loaded_as)
    max_prompt_chars = _max_prompt_chars(adapter)
    reserved = adapter.reserved_text
    encode_lock = threading.Lock()  # the tokenizer is not safe to call from two threads at once
    worker = Worker(adapter, max_batch=config.max_batch, max_queue=config.max_queue,
                    batch_wait_s=config.batch_wait_ms / 1000, encode_lock=encode_lock)
    tokens = Tokens(adapter, base_id, encode_lock)
    api_key = config.resolved_api_key()
    created = now()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await worker.start()
        try:
            yield
        finally:
            await worker.stop()

    app = FastAPI(title="stv serve-local", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.state.worker = worker
    app.state.catalog = catalog
    app.state.adapter = adapter
    _install_error_handlers(app)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
        if not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise unauthorized("incorrect API key provided")

    def model_card(model_id: str) -> ModelCard:
        return ModelCard(id=model_id, created=created)

    @app.get("/health")
    async def health() -> dict:
        stats = worker.stats
        return {"status": "ok", "queued": worker.queued, "batches": stats.batches, "rows": stats.rows,
                "tokens": stats.tokens}

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def list_models() -> ModelList:
        return ModelList(data=[model_card(model_id) for model_id in catalog.ids()])

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(authorize)])
    async def get_model(model_id: str) -> ModelCard:
        catalog.resolve(model_id)
        return model_card(catalog.canonical(model_id))

    def count_tokens(prompt: Prompt) -> int:
        with encode_lock:
            return int(adapter.encode([prompt])["attention_mask"].sum())

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(request: Request):
        chat = await run_in_threadpool(_parse_chat, await request.body())  # BodyLimit bounded it
        target = catalog.resolve(chat.model)
        prompt = await build_prompt(chat.messages, max_image_bytes=config.max_image_bytes,
                                    allow_remote_images=config.allow_remote_images, reserved=reserved)
        _check_prompt_chars(prompt, max_prompt_chars, adapter.context_length)
        try:
            prompt_tokens = await run_in_threadpool(count_tokens, prompt)
        except Exception as error:  # the processor refused this prompt (e.g. images for a text model)
            raise bad_request(f"the prompt cannot be encoded for this model: {error}",
                              param="messages", code="invalid_prompt") from None
        max_tokens = _token_budget(chat.requested_max_tokens, prompt_tokens, adapter.context_length,
                                   config.default_max_tokens)
        row = Row(prompt, max_tokens, chat.sampling_temperature, chat.nucleus, chat.seed, chat.stops)
        job = Job(row, target, stream=chat.streaming)
        worker.submit(job)
        completion_id, model = new_completion_id(), catalog.canonical(chat.model)
        if chat.streaming:
            return StreamingResponse(_sse(job, completion_id, model, chat.include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        result = await job.result()
        return ChatCompletion(
            id=completion_id, created=now(), model=model, system_fingerprint=FINGERPRINT,
            choices=[Choice(message=AssistantMessage(content=result.text), finish_reason=result.finish_reason)],
            usage=_usage(result),
        )

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(request: Request) -> Completion:
        body = await run_in_threadpool(_parse, CompletionRequest, await request.body())
        target = catalog.resolve(body.model)
        prompts = body.prompts
        token_lists = await run_in_threadpool(tokens.encode_prompts, prompts, max_prompt_chars,
                                              adapter.context_length)
        rows = plan_rows(body, token_lists, context=adapter.context_length,
                         default_max_tokens=config.default_max_tokens)
        jobs = [Job(row, target) for row in rows]
        worker.submit_all(jobs)
        try:
            results = [await job.result() for job in jobs]
        finally:
            for job in jobs:
                job.cancel()  # no-op for finished rows; drops the others of a failed or abandoned request
        return await run_in_threadpool(build_completion, body, prompts, rows, results, tokens,
                                       catalog.canonical(body.model), FINGERPRINT)

    @app.get("/tokenizer_info", dependencies=[Depends(authorize)])
    async def tokenizer_info() -> dict:
        return tokens.info()

    @app.post("/tokenize", dependencies=[Depends(authorize)])
    async def tokenize(request: Request) -> TokenizeResponse:
        body = await run_in_threadpool(_parse, TokenizeRequest, await request.body())
        if body.model is not None:
            catalog.resolve(body.model)
        ids = await run_in_threadpool(tokens.tokenize, body.prompt, body.add_special_tokens)
        return TokenizeResponse(count=len(ids), max_model_len=adapter.context_length, tokens=ids)

    @app.post("/detokenize", dependencies=[Depends(authorize)])
    async def detokenize(request: Request) -> DetokenizeResponse:
        body = await run_in_threadpool(_parse, DetokenizeRequest, await request.body())
        if body.model is not None:
            catalog.resolve(body.model)
        return DetokenizeResponse(prompt=await run_in_threadpool(tokens.detokenize, body.tokens))

    return app


def _token_budget(requested: int | None, prompt_tokens: int, context: int, default: int) -> int:
    """max_tokens for a request: as asked, or the default cut to what the context holds."""
    room = context - prompt_tokens
    if requested is None:
        if room < 1:
            raise bad_request(f"the prompt has {prompt_tokens} tokens, the model's context is {context}",
                              param="messages", code="context_length_exceeded")
        return min(default, room)
    if requested > room:
        raise bad_request(
            f"this model's context is {context} tokens; the prompt has {prompt_tokens} and max_tokens asks "
            f"for {requested} more", param="max_tokens", code="context_length_exceeded",
        )
    return requested


def _usage(result: RowResult) -> Usage:
    return Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                 total_tokens=result.prompt_tokens + result.completion_tokens)


async def _sse(job: Job, completion_id: str, model: str, include_usage: bool) -> AsyncIterator[str]:
    """chat.completion.chunk events, then ``data: [DONE]``; a dropped client cancels the row."""

    def chunk(delta: Delta, finish_reason=None, usage: Usage | None = None, choices: bool = True) -> str:
        body = ChatCompletionChunk(
            id=completion_id, created=now(), model=model, system_fingerprint=FINGERPRINT, usage=usage,
            choices=[ChunkChoice(delta=delta, finish_reason=finish_reason)] if choices else [],
        )
        return f"data: {body.model_dump_json()}\n\n"

    try:
        yield chunk(Delta(role="assistant", content=""))
        async for event in job.events():
            if isinstance(event, str):
                yield chunk(Delta(content=event))
            elif isinstance(event, Finished):
                usage = _usage(event.result)
                yield chunk(Delta(), event.result.finish_reason, usage)
                if include_usage:
                    yield chunk(Delta(), usage=usage, choices=False)
            elif isinstance(event, Failed):
                yield f"data: {json.dumps(event.error.body())}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()  # no-op when finished; stops generating for a client that went away


def _parse_chat(body: bytes) -> ChatRequest:
    """The request body as a ChatRequest (CPU-bound: runs in a worker thread)."""
    return ChatRequest.model_validate(parse_json(body))


def _parse(model: type[BaseModel], body: bytes) -> BaseModel:
    """The request body as ``model`` (CPU-bound: runs in a worker thread)."""
    return model.model_validate(parse_json(body))


def _max_prompt_chars(adapter: ModelAdapter) -> int | None:
    """The most characters of prompt text the context could hold: no token stands for more
    characters than the longest entry of the vocabulary. None when the vocabulary is unknown."""
    try:
        longest = max((len(token) for token in adapter.tokenizer.get_vocab()), default=0)
    except Exception:  # noqa: BLE001 - a tokenizer without a readable vocabulary: no early check
        return None
    return adapter.context_length * longest if longest > 0 else None


def _check_prompt_chars(prompt: Prompt, limit: int | None, context: int) -> None:
    """Refuse text that cannot fit the context before spending time tokenizing it."""
    chars = len(prompt.text) - prompt.text.count(IMAGE_PLACEHOLDER) * len(IMAGE_PLACEHOLDER)
    if limit is not None and chars > limit:
        raise bad_request(f"the prompt's {chars} characters are more than this model's context of {context} "
                          "tokens can hold", param="messages", code="context_length_exceeded")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(ValidationError)
    async def invalid_fields(request: Request, error: ValidationError) -> JSONResponse:
        return _validation_error(error.errors()).response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return _validation_error(error.errors()).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return ApiError(error.status_code, str(error.detail), type=kind,
                        headers=dict(error.headers or {})).response()

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, error: ClientDisconnect) -> Response:
        return Response(status_code=499)  # nobody reads it

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return server_error(f"internal error: {type(error).__name__}").response()


def _validation_error(errors: Sequence[dict]) -> ApiError:
    first = errors[0] if errors else {}
    param = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body",)) or None
    message = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5]
    )
    return bad_request(f"invalid request: {message}", param=param, code="invalid_request")
