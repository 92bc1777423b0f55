"""Rows that leave the Batch API run through the online runner: rows of a job cancelled at its deadline, and
re-asks when the job sends them online.

The runner comes from a factory the composition root injects (`MakeRunner`: a template and the re-asks left
in, a runner out), so this package never imports `online/`. Rows are grouped into lanes, one runner per
(template, re-asks left): a row re-asked after truncation is sent with the re-ask template, and a row that
already used its re-asks in batch gets none online. Each row's result is completed with what its earlier tries
cost (`Carried`) before it is written, so the row reads as one row whichever ways it travelled.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from batchgen.errors import BatchgenError
from batchgen.gemini.request import RequestTemplate
from batchgen.records import Prompt, Result, Sink
from batchgen.results.batches import Carried

log = logging.getLogger(__name__)
# Rows waiting for a lane's runner: enough to keep it busy, little enough to hold.
_BUFFER = 256


class OnlineRunner(Protocol):
    """What the online runner offers a lane (`online.runner.Runner`)."""

    @property
    def stopped_by(self) -> BatchgenError | None: ...

    async def run(self, prompts: AsyncIterable[Prompt], sink: Sink, /) -> Any: ...

    def stop(self, reason: BatchgenError | None = None) -> None: ...

    def abort(self, reason: BatchgenError | None = None) -> None: ...


MakeRunner = Callable[[RequestTemplate, int], OnlineRunner]
"""A runner whose rows are sent with the template given, with at most the number of re-asks given."""


@dataclass(frozen=True, slots=True)
class _Handed:
    job_id: str
    carried: Carried


class OnlineLanes:
    """The online runners of a batch run, started as rows need them; `run` until `close` (or `stop`)."""

    def __init__(
        self,
        make_runner: MakeRunner,
        sink: Sink,
        *,
        templates: Mapping[str, RequestTemplate],
        max_reasks: int,
        written: Callable[[str], Awaitable[None]],
        stopped: Callable[[BatchgenError], None],
        clock: Callable[[], float],
    ) -> None:
        self._make_runner = make_runner
        self._sink = sink
        self._templates = templates
        self._max_reasks = max_reasks
        self._written = written
        self._stopped = stopped
        self._clock = clock
        self._lanes: dict[tuple[str, int], tuple[OnlineRunner, MemoryObjectSendStream[Prompt]]] = {}
        self._handed: dict[str, _Handed] = {}
        self._group: anyio.abc.TaskGroup | None = None
        self._closed = anyio.Event()
        self.stopped_by: BatchgenError | None = None

    def __repr__(self) -> str:
        return f"OnlineLanes(lanes={len(self._lanes)}, rows={len(self._handed)})"

    @property
    def rows(self) -> int:
        """Rows handed to a lane and not yet written."""
        return len(self._handed)

    async def run(self) -> None:
        """Host the lanes' runners until closed and every lane has finished its rows."""
        async with anyio.create_task_group() as group:
            self._group = group
            await self._closed.wait()
            for _, stream in self._lanes.values():
                stream.close()

    async def send(self, prompt: Prompt, job_id: str, template: str, carried: Carried) -> None:
        """Hand one row to the lane of its template and re-asks left (waits while that lane is full)."""
        assert self._group is not None, "OnlineLanes.run is not running"
        left = max(0, self._max_reasks - carried.tally.reasks)
        key = (template, left)
        if key not in self._lanes:
            runner = self._make_runner(self._templates[template], left)
            send, receive = anyio.create_memory_object_stream[Prompt](_BUFFER)
            self._lanes[key] = (runner, send)
            self._group.start_soon(self._drive, runner, receive)
        self._handed[prompt.id] = _Handed(job_id, carried)
        await self._lanes[key][1].send(prompt)

    def close(self) -> None:
        """No more rows: each lane finishes those it holds, then `run` returns."""
        self._closed.set()

    def stop(self, reason: BatchgenError | None) -> None:
        """Every lane stops taking rows; rows in flight get the runner's grace period."""
        for runner, _ in self._lanes.values():
            runner.stop(reason)
        self.close()

    def abort(self, reason: BatchgenError | None) -> None:
        """Every lane stops, cancelling its requests still out."""
        for runner, _ in self._lanes.values():
            runner.abort(reason)
        self.close()

    async def _drive(self, runner: OnlineRunner, receive: MemoryObjectReceiveStream[Prompt]) -> None:
        async with receive:
            await runner.run(receive, _Completing(self))
        if runner.stopped_by is not None:
            # A lane that stopped takes no more rows: nothing else may wait on it (a fatal error, the cost cap).
            self.stopped_by = self.stopped_by or runner.stopped_by
            self._stopped(runner.stopped_by)

    def _complete(self, result: Result) -> str | None:
        """Add what the row cost before it came online to its result (in place, before the runner counts it,
        so that the run's counters and the budget see the whole row); the job it came from."""
        handed = self._handed.pop(result.id, None)
        if handed is None:
            return None
        before = handed.carried.tally
        result.usage = before.usage + result.usage
        result.attempts += before.attempts
        result.responses += before.responses
        result.reasks += before.reasks
        if before.first_sent is not None:  # from its first batch job, on the wall clock as batch rows are
            result.latency_ms = before.latency_ms(self._clock())
        return handed.job_id


class _Completing:
    """The sink a lane's runner writes to: the row completed with its earlier tries, then the run's sink."""

    def __init__(self, lanes: OnlineLanes) -> None:
        self._lanes = lanes

    async def write(self, result: Result) -> None:
        job_id = self._lanes._complete(result)
        await self._lanes._sink.write(result)
        if job_id is not None:
            await self._lanes._written(job_id)
