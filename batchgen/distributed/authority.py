"""One quota and one stop for the whole cluster: the rate-limit authority every worker asks for admission.

The authority holds batchgen's own `RateLimiter`, so N workers together pace, cool down and learn an unknown
quota by the same rules, from the same window, as one process does: the quota is learnt once, not N times.
It runs as a single async Ray actor (`engine.py` wraps this class with `ray.remote`); nothing here imports
Ray, so a unit test drives it on an ordinary event loop.

Calls are batched, because an actor serves about a thousand calls a second (docs/scale-out.md):

* `acquire(tokens)` admits up to `len(tokens)` requests (one per request waiting in the worker, FIFO), waiting
  for the first, then taking more while each comes within `linger_s` of the first: the limiter's pacing is
  kept to within `linger_s`, and a busy worker gets many permits per call.
* `report(...)` carries everything else a worker has to say (token settlements, 429s, its counters, a fatal
  error) and answers with what the cluster has spent and whether it must stop.

The stop is cooperative: a stopped cluster takes no new rows, rows in flight finish. A per-day quota spent
here (`QuotaExhausted`), a worker's fatal API error, the cost cap reached by the cluster's spend and the
driver's Ctrl-C all become the same `Stop`, answered to every worker on its next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from batchgen import errors
from batchgen.errors import BatchgenError, QuotaExhausted
from batchgen.online.limiter.rate import LimiterSnapshot, Limits, RateLimiter

LINGER_S: Final = 0.01
"""After the first permit of a call, more are taken while they come within this long: a permit is used at
most this much later than the limiter admitted it, a lumping far below the 1 % headroom of a minute (0.6 s)."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Why the cluster stops, as a value that crosses process boundaries (batchgen's errors take keyword
    arguments, which pickle does not restore): the error's class name, message and attributes."""

    kind: str
    message: str
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, error: BatchgenError) -> Stop:
        return cls(type(error).__name__, str(error), dict(vars(error)))

    def error(self) -> BatchgenError:
        """The error again, of its own class, with its message and attributes (so its exit code is its own)."""
        kind = getattr(errors, self.kind, None)
        if not (isinstance(kind, type) and issubclass(kind, BatchgenError)):
            kind = BatchgenError
        revived = kind.__new__(kind)
        BaseException.__init__(revived, self.message)
        revived.__dict__.update(self.attributes)
        return revived


@dataclass(frozen=True, slots=True)
class WorkerState:
    """A worker's own figures since it started (cumulative, so a lost or repeated report cannot skew them)."""

    worker: str
    host: str = ""
    pid: int = 0
    done: int = 0
    in_flight: int = 0
    attempts: int = 0
    rate_limited: int = 0
    spent_usd: float = 0.0
    charged_rows: int = 0


@dataclass(frozen=True, slots=True)
class Report:
    """What a worker tells the authority besides asking for permits."""

    state: WorkerState
    settled: tuple[tuple[int, int], ...] = ()
    """(estimated, actual) input tokens of answered requests, in the order they were answered."""
    refused: tuple[tuple[str | None, float | None], ...] = ()
    """(quota id, retry after) of each 429 answered to the worker."""
    stop: Stop | None = None
    """A fatal error the worker met (a bad key, a rejected job, a spent daily quota): every worker stops."""


@dataclass(frozen=True, slots=True)
class Reply:
    """The cluster as the authority knows it: spend and rows in flight elsewhere, and the stop if any."""

    spent_usd: float
    charged_rows: int
    in_flight_elsewhere: int
    stop: Stop | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """Permits for the first `count` requests asked for; `stop` when the rest will never be admitted."""

    count: int
    stop: Stop | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """What the driver shows: the shared limiter, each worker's figures, the stop, and calls served."""

    limiter: LimiterSnapshot
    workers: Mapping[str, WorkerState]
    stop: Stop | None
    calls: int


class Authority:
    """The cluster's rate limiter, ledger of worker figures and stop flag; one instance serves every worker.

    All methods are coroutines: an async actor runs those on its one event loop (the limiter's clock and
    timers live there), so no state needs a lock.
    """

    def __init__(self, limits: Limits, *, linger_s: float = LINGER_S) -> None:
        self._limiter = RateLimiter(limits)
        self._linger_s = linger_s
        self._workers: dict[str, WorkerState] = {}
        self._stop: Stop | None = None
        self._calls = 0

    def __repr__(self) -> str:
        # Ray names the actor by its repr, from outside the event loop, where the limiter cannot be read.
        return f"<Authority workers={len(self._workers)} stop={self._stop} calls={self._calls}>"

    async def acquire(self, tokens: list[int]) -> Grant:
        """Admit up to `len(tokens)` requests in order: wait for the first, take the rest while they come soon."""
        self._calls += 1
        granted = 0
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        try:
            for count in tokens:
                if deadline is None:
                    await self._limiter.acquire(count)
                    deadline = loop.time() + self._linger_s
                else:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    # A cancelled wait takes nothing from the quota and leaves other callers' order intact.
                    await asyncio.wait_for(self._limiter.acquire(count), left)
                granted += 1
        except TimeoutError:
            pass
        except QuotaExhausted as exc:
            self._stop_with(Stop.of(exc))
        return Grant(granted, self._stop)

    async def report(self, report: Report) -> Reply:
        """Take a worker's settlements, 429s, figures and fatal error; answer with the cluster's state."""
        self._calls += 1
        for estimated, actual in report.settled:
            self._limiter.settle(estimated, actual)
        for quota_id, retry_after in report.refused:
            self._limiter.rate_limited(quota_id, retry_after)
        state = report.state
        self._workers[state.worker] = state
        if report.stop is not None:
            self._stop_with(report.stop)
        others = sum(w.in_flight for name, w in self._workers.items() if name != state.worker)
        spent = sum(w.spent_usd for w in self._workers.values())
        rows = sum(w.charged_rows for w in self._workers.values())
        return Reply(spent_usd=spent, charged_rows=rows, in_flight_elsewhere=others, stop=self._stop)

    async def stop(self, stop: Stop) -> None:
        """Stop the cluster (the driver's Ctrl-C); the first reason given is the one kept."""
        self._stop_with(stop)

    async def status(self) -> Status:
        return Status(self._limiter.snapshot(), dict(self._workers), self._stop, self._calls)

    def _stop_with(self, stop: Stop) -> None:
        if self._stop is None:
            self._stop = stop
