"""A Ray Data worker: batchgen's own runner in an actor, fed block by block, answering each block's rows.

Ray Data calls `RunnerUDF` once per block of input rows, several blocks at once on the actor's event loop.
Each call builds the block's prompts (skipping ids already done), hands them to the one `Runner` the actor
keeps (its concurrency, retries, re-asks, verdicts: a local run's, unchanged) and waits for their results,
which it returns as a results table of the contract (`results/table.py`), each row tagged with the worker
that made it. Nothing is written here: the driver commits what it receives, so a block Ray retries after the
actor died is written once (see `engine.py`).

The runner stops as it would in one process (a fatal API error, the cost cap, the daily quota), and also
when the authority says the cluster stops: it then takes no more rows, and rows it never sent are left out
of the block's answer, for the next run to send.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import pyarrow as pa
import ray
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from batchgen.distributed.authority import Grant, Reply, Report
from batchgen.distributed.done import DoneIds
from batchgen.distributed.link import Link
from batchgen.distributed.rows import Prompts
from batchgen.errors import BatchgenError, ConfigError, FatalApiError
from batchgen.job import Job
from batchgen.online.client import GeminiClient
from batchgen.online.runner import Runner
from batchgen.pipeline import endpoint, prompt_builder, runner_for
from batchgen.records import Generate, Prompt, Result, RunStats
from batchgen.report.budget import Budget
from batchgen.results.table import Layout, results_table
from batchgen.secret import ApiKey

WORKER: str = "__batchgen_worker"
"""The column naming the worker that made a row; the driver drops it before writing."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a worker needs, sent once with the actor pool's arguments (the API key is not: it is read
    from the worker's environment, see docs/scale-out.md)."""

    job: Job
    run_id: str
    layout: Layout
    done: DoneIds
    offsets: Mapping[str, int]
    prefixed: bool
    budget: Budget | None


class _ActorChannel:
    """The authority's actor handle as a `link.Channel`."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def acquire(self, tokens: list[int]) -> Grant:
        grant: Grant = await self._handle.acquire.remote(tokens)
        return grant

    async def report(self, report: Report) -> Reply:
        reply: Reply = await self._handle.report.remote(report)
        return reply


class RunnerUDF:
    """The callable class Ray Data runs in each actor of the pool (`map_batches`)."""

    def __init__(self, plan: Plan, authority: Any) -> None:
        self._plan = plan
        self._authority = authority
        self._worker: Worker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # A worker's rows are reported by the driver, from what it commits (with the worker's name): logged
        # here as well, they would reach the driver's terminal twice, through Ray's log forwarding.
        logging.getLogger("batchgen").setLevel(logging.ERROR)

    async def __call__(self, block: pa.Table) -> pa.Table:
        if self._worker is None:
            # Started on the first call, on the event loop Ray Data runs every call of this actor on.
            self._loop = asyncio.get_running_loop()
            self._worker = Worker(self._plan, _ActorChannel(self._authority))
            await self._worker.start()
        return await self._worker.answer(block)

    def __del__(self) -> None:
        # Ray Data gives an actor's UDF no other end than this (on a graceful shutdown of the pool; a killed
        # actor's sockets die with its process). The worker itself is an async context manager on the loop.
        if self._worker is not None and self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._worker.close(), self._loop).result(30)


class Worker:
    """One actor's runner, client and link to the authority, alive from the first block to the pool's end."""

    def __init__(self, plan: Plan, channel: Any) -> None:
        self._plan = plan
        self._channel = channel
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._prompts = Prompts(prompt_builder(plan.job), plan.offsets, plan.prefixed)
        self._stats = RunStats()
        self._send: MemoryObjectSendStream[Prompt]
        self._receive: MemoryObjectReceiveStream[Prompt]
        self._send, self._receive = anyio.create_memory_object_stream[Prompt](max_buffer_size=math.inf)
        self._router = _Router()
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._runner: Runner | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.name} done={self._stats.done} in_flight={self._stats.in_flight}>"

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())
        # Should the worker end on an error of its own, every block waiting on it is answered (then fails).
        self._task.add_done_callback(self._ended)
        started = asyncio.ensure_future(self._started.wait())
        await asyncio.wait({started, self._task}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        self._raise_failure()

    async def answer(self, block: pa.Table) -> pa.Table:
        """The results of the block's rows not done before; rows the runner never sent are left out."""
        await self._started.wait()
        self._raise_failure()
        prompts = [p for p in self._prompts.of(block) if p.id not in self._plan.done]
        if not prompts or self._router.finished:
            return self._table([])
        call = self._router.expect(prompts)
        for prompt in prompts:
            try:
                await self._send.send(prompt)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                break  # the runner stops: the rest are not sent, and not answered
        await call.done.wait()
        self._raise_failure()
        return self._table(call.rows)

    def _ended(self, _: asyncio.Task[None]) -> None:
        self._router.finish()
        self._started.set()

    def _raise_failure(self) -> None:
        """Fail the block (and so the dataset, loudly) if the worker itself failed: not a row's error, which is
        a row's result, but a bug."""
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def close(self) -> None:
        """Take no more rows; wait for the rows in flight and the last report."""
        self._send.close()
        if self._task is not None:
            await asyncio.wait({self._task})

    def _table(self, rows: list[tuple[Result, float]]) -> pa.Table:
        plan = self._plan
        table = results_table(rows, plan.layout, run_id=plan.run_id, model=plan.job.model)
        return table.append_column(WORKER, pa.array([self.name] * len(rows), pa.string()))

    async def _serve(self) -> None:
        plan, job = self._plan, self._plan.job
        link = Link(self._channel, self.name, self._stats, plan.budget, self._stopped)
        try:
            key = _key(job)
        except ConfigError as exc:
            link.fail(exc)
            await link.flush()
            self._router.finish()
            self._started.set()
            return
        async with (
            GeminiClient(endpoint(job), key, connections=job.limits.concurrency) as client,
            anyio.create_task_group() as group,
        ):
            group.start_soon(_linked, link)
            self._runner = runner = runner_for(job, client, link, self._stats, link, generate=_Watched(client, link))
            self._started.set()
            await runner.run(_prompts(self._receive), self._router)
            if runner.stopped_by is not None:
                link.fail(runner.stopped_by)
            self._router.finish()
            await _linked(link, final=True)
            group.cancel_scope.cancel()

    def _stopped(self, error: BatchgenError) -> None:
        """The cluster stops: this runner takes no more rows (those in flight finish), the feed ends."""
        if self._runner is not None:
            self._runner.stop(error)
        self._send.close()


class _Call:
    """One block's rows: their results as they finish, and an event once all are in (or never will be)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.rows: list[tuple[Result, float]] = []
        self.done = asyncio.Event()


class _Router:
    """The runner's sink: hands each result to the call its row came in with."""

    def __init__(self) -> None:
        self._calls: dict[str, _Call] = {}
        self._open: set[_Call] = set()
        self.finished = False

    def expect(self, prompts: list[Prompt]) -> _Call:
        call = _Call(len(prompts))
        self._open.add(call)
        for prompt in prompts:
            self._calls[prompt.id] = call
        return call

    async def write(self, result: Result) -> None:
        call = self._calls.pop(result.id)
        call.rows.append((result, time.time()))
        if len(call.rows) == call.expected:
            call.done.set()
            self._open.discard(call)

    def finish(self) -> None:
        """The runner ended: no more results will come; every call answers with what it has."""
        self.finished = True
        for call in self._open:
            call.done.set()
        self._open.clear()
        self._calls.clear()


class _Watched:
    """The client as the runner's `Generate`, telling the cluster at once about a fatal error (a bad key, the
    daily quota spent): every other worker would meet it too."""

    def __init__(self, generate: Generate, link: Link) -> None:
        self._generate = generate
        self._link = link

    async def __call__(self, body: bytes, /) -> Mapping[str, Any]:
        try:
            return await self._generate(body)
        except FatalApiError as exc:
            self._link.fail(exc)
            raise


async def _linked(link: Link, *, final: bool = False) -> None:
    """The link's background work (or, `final`, its last report) until the authority is gone: it ends with the
    run, when the driver has every answer, while the pool may still be shutting down."""
    try:
        await (link.flush() if final else link.run())
    except* ray.exceptions.RayActorError:
        pass


async def _prompts(receive: MemoryObjectReceiveStream[Prompt]) -> AsyncIterator[Prompt]:
    async with receive:
        async for prompt in receive:
            yield prompt


def _key(job: Job) -> ApiKey:
    value = os.environ.get(job.api_key_env, "").strip()
    if not value:
        raise ConfigError(
            f"environment variable {job.api_key_env} is not set on Ray worker {socket.gethostname()} "
            "(workers read the key from their own environment: docs/scale-out.md)",
            file=str(job.file),
            key="api_key_env",
        )
    return ApiKey(value)
