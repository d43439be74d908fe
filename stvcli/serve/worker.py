"""The batching queue: requests wait in an asyncio queue; one background task takes up
to ``max_batch`` of them at a time and runs them on a single model thread.

Each batch is split by input kind (chat prompts, encoded by the adapter; token-id
prompts of ``/v1/completions``, run by ``stvcli.serve.echo``) and by insertion mode (a
forward cannot mix ``replace`` and ``add``); bare-model rows join any group of their kind
with a row mask that leaves them untouched, so requests for the bare model and for
different vector sets share a forward. Results and streamed text go back to the event
loop through each job's own asyncio queue.

A failing row cannot fail its batch: when a forward fails, the rows the failure names
(``RowsFailed``) get the error and the others run again; any other failure runs every
row again on its own, and only rows that fail alone get an error. A rerun row replays
the same answer (sampled rows get their seed when queued) and a streamed row skips the
text it already sent.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from stvcli.models.base import ModelAdapter
from stvcli.serve.catalog import VectorSet, batch_intervention
from stvcli.serve.echo import TokenInputs, run_token_rows
from stvcli.serve.errors import ApiError, overloaded, server_error
from stvcli.serve.generation import Row, RowResult, RowsFailed, generate_rows

log = logging.getLogger("stvcli.serve")


@dataclass
class Finished:
    result: RowResult


@dataclass
class Failed:
    error: ApiError


Event = str | Finished | Failed  # a str is a piece of streamed text


class Job:
    """One request on its way through the worker; created on the event loop."""

    def __init__(self, row: Row, vector_set: VectorSet | None, *, stream: bool = False) -> None:
        """Binds ``row``'s callbacks to this job: streamed text and cancellation."""
        self.vector_set = vector_set
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._sent = 0  # characters of streamed text delivered
        self._skip = 0  # characters a rerun must not deliver again
        if row.seed is None and row.temperature > 0:
            row.seed = secrets.randbits(63)  # fixed now, so that a rerun samples the same answer
        row.is_cancelled = self._cancelled.is_set
        row.on_text = self._stream if stream else None
        self.row = row

    @property
    def model_id(self) -> str | None:
        return None if self.vector_set is None else self.vector_set.id

    @property
    def tokens(self) -> bool:
        """Whether the row's prompt is token ids (a ``/v1/completions`` row)."""
        return self.row.token_ids is not None

    def push(self, event: Event) -> None:
        """Deliver an event from any thread."""
        self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    def _stream(self, text: str) -> None:
        """``row.on_text``: deliver new text, less what an earlier run already delivered."""
        if self._skip:
            dropped = min(self._skip, len(text))
            text, self._skip = text[dropped:], self._skip - dropped
        if text:
            self._sent += len(text)
            self.push(text)

    def rewind(self) -> None:
        """Before running the row again: its first ``_sent`` characters are out already."""
        self._skip = self._sent

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    async def events(self) -> AsyncIterator[Event]:
        """Streamed text pieces, then one ``Finished`` or ``Failed``."""
        while True:
            event = await self._events.get()
            yield event
            if not isinstance(event, str):
                return

    async def result(self) -> RowResult:
        async for event in self.events():
            if isinstance(event, Finished):
                return event.result
            if isinstance(event, Failed):
                raise event.error
        raise server_error("the request ended without a result")  # pragma: no cover


@dataclass
class WorkerStats:
    batches: int = 0
    rows: int = 0
    tokens: int = 0  # completion tokens
    largest_batch: int = 0
    recent: deque[tuple[str | None, ...]] = field(default_factory=lambda: deque(maxlen=64))  # model ids per forward

    def record(self, jobs: Sequence[Job], results: Sequence[RowResult]) -> None:
        self.batches += 1
        self.rows += len(jobs)
        self.tokens += sum(result.completion_tokens for result in results)
        self.largest_batch = max(self.largest_batch, len(jobs))
        self.recent.append(tuple(job.model_id for job in jobs))


class Worker:
    def __init__(
        self,
        adapter: ModelAdapter,
        *,
        max_batch: int = 8,
        max_queue: int = 256,
        batch_wait_s: float = 0.005,
        encode_lock: threading.Lock | None = None,
    ) -> None:
        self.adapter = adapter
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.batch_wait_s = batch_wait_s
        self.encode_lock = encode_lock or threading.Lock()
        with self.encode_lock:
            self.token_inputs = TokenInputs(adapter)
        self.stats = WorkerStats()
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ event loop side
    async def start(self) -> None:
        self._queue = asyncio.Queue(self.max_queue)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="stv-model")
        self._task = asyncio.create_task(self._loop(), name="stv-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def queued(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    def submit(self, job: Job) -> None:
        """Queue ``job``; a 503 (with Retry-After) when the queue is full."""
        self.submit_all([job])

    def submit_all(self, jobs: Sequence[Job]) -> None:
        """Queue all of ``jobs`` (the prompts of one request) or none: a 503 (with
        Retry-After) when the queue has no room for all of them."""
        if self._queue is None:
            raise server_error("the worker is not running")
        if self._queue.maxsize - self._queue.qsize() < len(jobs):
            raise overloaded()
        for job in jobs:
            self._queue.put_nowait(job)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            try:
                await loop.run_in_executor(self._executor, self._run, jobs)
            except Exception as error:  # never let one batch stop the worker
                log.exception("the worker failed on a batch")
                for job in jobs:
                    job.push(Failed(server_error(f"the worker failed: {type(error).__name__}")))

    async def _next_batch(self) -> list[Job]:
        """The first waiting job plus whatever arrives within ``batch_wait_s``, up to ``max_batch``."""
        assert self._queue is not None
        jobs = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.batch_wait_s
        while len(jobs) < self.max_batch:
            if not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return jobs

    # ------------------------------------------------------------------ model thread side
    def _run(self, jobs: Sequence[Job]) -> None:
        live = [job for job in jobs if not job.cancelled]
        for kind in (False, True):  # chat prompts, then token-id prompts
            for group in split_by_mode([job for job in live if job.tokens == kind]):
                self._run_group(group)

    def _run_group(self, group: Sequence[Job]) -> None:
        """One forward for ``group``; on failure, isolate the failing rows (see the module doc)."""
        try:
            results = self._generate(group)
        except RowsFailed as error:
            log.warning("generation failed for %d of %d rows: %s", len(error.rows), len(group), error.reason)
            for index in error.rows:
                group[index].push(Failed(server_error(f"generation failed for this request: {error.reason}")))
            self._rerun([job for index, job in enumerate(group) if index not in error.rows])
            return
        except Exception as error:  # a bug or a device failure: answer 500, keep serving
            if len(group) > 1:
                log.warning("a batch of %d failed (%s: %s); running its rows one by one", len(group),
                            type(error).__name__, error)
                for job in group:
                    self._rerun([job])
                return
            log.exception("generation failed for a request")
            group[0].push(Failed(server_error(f"generation failed: {type(error).__name__}: {error}")))
            return
        self.stats.record(group, results)
        for job, result in zip(group, results, strict=True):
            job.push(Finished(result))

    def _generate(self, group: Sequence[Job]) -> list[RowResult]:
        rows, sets = [job.row for job in group], [job.vector_set for job in group]
        if group[0].tokens:
            return run_token_rows(self.adapter, self.token_inputs, rows, sets)
        with self.encode_lock:
            inputs = self.adapter.encode([row.prompt for row in rows])
        return generate_rows(self.adapter, inputs, rows, batch_intervention(sets))

    def _rerun(self, jobs: Sequence[Job]) -> None:
        live = [job for job in jobs if not job.cancelled]
        for job in live:
            job.rewind()
        if live:
            self._run_group(live)


def split_by_mode(jobs: Sequence[Job]) -> list[list[Job]]:
    """Groups that can share a forward: one per insertion mode and write position, bare
    rows in the first."""
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        if job.vector_set is not None:
            groups.setdefault(job.vector_set.batch_key, []).append(job)
    bare = [job for job in jobs if job.vector_set is None]
    ordered = list(groups.values())
    if not ordered:
        return [bare] if bare else []
    ordered[0] = bare + ordered[0]
    return ordered
