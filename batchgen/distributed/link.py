"""A worker's side of the authority: the runner's `Limiter` and `Admission`, backed by the shared one.

The runner asks `acquire` once per HTTP attempt, as it asks a local limiter. Here each request waits in a
local FIFO, and one call at a time asks the authority for permits for every request waiting (`Authority.
acquire`), so a busy worker gets many permits per call and the authority serves the cluster's rate in a few
hundred calls a second. Permits are only asked for requests that wait: none are held in reserve, so none
bypass a cooldown; one left over by a request cancelled meanwhile serves the next one.

Everything else goes in reports, every `report_s` and at once for a 429 or a stop: token
settlements (in order), 429s, this worker's counters and spend, its fatal error. Each reply brings back what
the cluster has spent and has in flight, so `refusal` applies the cost cap to the cluster's spend (as
`Budget.refusal` does to one run's), and the stop, which stops this worker's runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from batchgen.distributed.authority import Grant, Reply, Report, Stop, WorkerState
from batchgen.errors import BatchgenError, BudgetExhausted, QuotaExhausted
from batchgen.records import Result, RunStats
from batchgen.report.budget import Budget

REPORT_S: Final = 0.25
"""A worker reports this often (a 429 or a stop at once): the cluster's spend it sees is this fresh."""

MAX_PERMITS: Final = 256
"""Permits asked for in one call at most."""


class Channel(Protocol):
    """The authority as a worker reaches it (a Ray actor handle's methods, or an `Authority` in a test)."""

    async def acquire(self, tokens: list[int]) -> Grant: ...

    async def report(self, report: Report) -> Reply: ...


@dataclass(slots=True, eq=False)
class _Waiter:
    tokens: int
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Outbox:
    settled: list[tuple[int, int]] = field(default_factory=list)
    refused: list[tuple[str | None, float | None]] = field(default_factory=list)
    stop: Stop | None = None


class Link:
    """Implements `records.Limiter` and `records.Admission` for one worker, through a `Channel`.

    `run()` is the worker's background task; `on_stop` is called once, with the error, when the cluster stops.
    """

    def __init__(
        self,
        channel: Channel,
        worker: str,
        stats: RunStats,
        budget: Budget | None,
        on_stop: Callable[[BatchgenError], None],
        *,
        report_s: float = REPORT_S,
    ) -> None:
        self._channel = channel
        self._worker = worker
        self._stats = stats
        self._budget = budget
        self._on_stop = on_stop
        self._report_s = report_s
        self._waiters: deque[_Waiter] = deque()
        self._spare: deque[int] = deque()
        self._outbox = _Outbox()
        self._wanted = asyncio.Event()
        self._urgent = asyncio.Event()
        self._cluster = Reply(spent_usd=0.0, charged_rows=0, in_flight_elsewhere=0)
        self._reported = WorkerState(worker)
        self._stop: Stop | None = None
        self._host = socket.gethostname()

    def __repr__(self) -> str:
        return f"<Link {self._worker} waiting={len(self._waiters)} spare={len(self._spare)} stop={self._stop}>"

    @property
    def stopped(self) -> BatchgenError | None:
        return None if self._stop is None else self._stop.error()

    # -- records.Limiter -----------------------------------------------------------------------------------

    async def acquire(self, tokens: int) -> None:
        if self._stop is not None and self._stop.kind == QuotaExhausted.__name__:
            raise self._stop.error()
        if self._spare:
            self.settle(self._spare.popleft(), tokens)
            return
        waiter = _Waiter(tokens, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self._wanted.set()
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self._spare.append(tokens)  # admitted as the wait was given up: the next request takes it
            raise

    def settle(self, estimated: int, actual: int | None) -> None:
        if actual is not None and actual != estimated:
            self._outbox.settled.append((estimated, actual))

    def rate_limited(self, quota_id: str | None, retry_after: float | None) -> None:
        self._outbox.refused.append((quota_id, retry_after))
        self._urgent.set()

    # -- records.Admission ---------------------------------------------------------------------------------

    def refusal(self, in_flight: int) -> BatchgenError | None:
        if self._stop is not None:
            return self._stop.error()
        budget = self._budget
        if budget is None or budget.cap_usd is None:
            return None
        # The cluster's figures as last reported, with this worker's own replaced by its current ones.
        spent = self._cluster.spent_usd - self._reported.spent_usd + budget.spent.total
        rows = self._cluster.charged_rows - self._reported.charged_rows + budget.rows
        average = spent / rows if rows else 0.0
        in_flight += self._cluster.in_flight_elsewhere
        if spent + (in_flight + 1) * average <= budget.cap_usd:
            return None
        refusal = BudgetExhausted(cap_usd=budget.cap_usd, spent_usd=spent, projected_usd=spent + in_flight * average)
        self.fail(refusal)
        return refusal

    def charge(self, result: Result) -> None:
        if self._budget is not None:
            self._budget.charge(result)

    # -- the worker's side ---------------------------------------------------------------------------------

    def fail(self, error: BatchgenError) -> None:
        """Stop the cluster with this worker's error (a fatal API error, the cost cap reached)."""
        if self._outbox.stop is None:
            self._outbox.stop = Stop.of(error)
        self._stopped(Stop.of(error))
        self._urgent.set()

    async def run(self) -> None:
        """Ask for permits and send reports until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._permits())
            group.create_task(self._reports())

    async def flush(self) -> None:
        """Send what is left to say (the last counters, a stop) now."""
        await self._send_report()

    async def _permits(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            while self._waiters:
                asked = [w for w in list(self._waiters)[:MAX_PERMITS] if not w.future.done()]
                if not asked:
                    self._waiters.clear()
                    break
                grant = await self._channel.acquire([w.tokens for w in asked])
                self._hand_out(grant, asked)

    def _hand_out(self, grant: Grant, asked: list[_Waiter]) -> None:
        for permit in asked[: grant.count]:
            while self._waiters and self._waiters[0].future.done():
                self._waiters.popleft()
            if not self._waiters:
                self._spare.append(permit.tokens)
                continue
            waiter = self._waiters.popleft()
            if waiter.tokens != permit.tokens:
                self.settle(permit.tokens, waiter.tokens)  # a permit asked for a request that gave up
            waiter.future.set_result(None)
        if grant.stop is not None:
            self._stopped(grant.stop)
            if grant.count < len(asked):  # the rest will never be admitted (the daily quota is spent)
                error = grant.stop.error()
                while self._waiters:
                    waiter = self._waiters.popleft()
                    if not waiter.future.done():
                        waiter.future.set_exception(error)

    async def _reports(self) -> None:
        while True:
            await self._send_report()
            # Every `report_s` whatever happened, so the cluster's spend and stop stay that fresh here; a 429
            # or a stop goes at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), self._report_s)

    async def _send_report(self) -> None:
        self._urgent.clear()
        outbox, self._outbox = self._outbox, _Outbox()
        state = self._state()
        report = Report(state, tuple(outbox.settled), tuple(outbox.refused), outbox.stop)
        reply = await self._channel.report(report)
        self._reported = state
        self._cluster = reply
        if reply.stop is not None:
            self._stopped(reply.stop)

    def _state(self) -> WorkerState:
        stats, budget = self._stats, self._budget
        return WorkerState(
            worker=self._worker,
            host=self._host,
            pid=os.getpid(),
            done=stats.done,
            in_flight=stats.in_flight,
            attempts=stats.attempts,
            rate_limited=stats.rate_limited,
            spent_usd=0.0 if budget is None else budget.spent.total,
            charged_rows=0 if budget is None else budget.rows,
        )

    def _stopped(self, stop: Stop) -> None:
        if self._stop is None:
            self._stop = stop
            self._on_stop(stop.error())
