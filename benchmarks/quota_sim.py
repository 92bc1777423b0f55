"""A Gemini-like per-minute quota and a worker pool, simulated in virtual time.

Used by the limiter's tests and by `benchmarks/limits.py`: an hour of traffic runs in well under a second of
real time, deterministically (seeded), with no sleeping.

* `VirtualTimeLoop` is an asyncio loop whose clock jumps straight to the next timer whenever nothing is ready
  to run, so `asyncio.sleep(30)` and the limiter's timers cost no real time.
* `SlidingWindowQuota` is the server side: it accepts a request only if the requests, and the input tokens,
  that it accepted over the last 60 seconds stay within its quotas; otherwise it answers like Gemini's 429
  (a QuotaFailure quota id and a RetryInfo delay rounded up to whole seconds). A sliding window is the
  strictest way to count "per minute": traffic that passes it passes a fixed-window counter too. It can
  also refuse a share of requests at random, naming no quota, as shared capacity running short does.
* `simulate` runs a pool of workers (acquire, send, wait for the response, settle or report the 429) and
  returns what the server accepted and refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import selectors
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchgen.online.limiter.rate import RateLimiter

RPM_QUOTA_ID = "GenerateRequestsPerMinutePerProjectPerModel"
TPM_QUOTA_ID = "GenerateContentInputTokensPerModelPerMinute"
_DEADLOCK_AFTER = 5.0  # real seconds with no timer pending and no I/O: something waits for nothing


class _VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0


class _VirtualSelector(selectors.BaseSelector):
    """Delegates real I/O to a real selector, but a wait for a timer advances virtual time instead."""

    def __init__(self, clock: _VirtualTime) -> None:
        self._clock = clock
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:
            # Only real I/O (a thread waking the loop) can end this wait; in a pure simulation that means a
            # waiter nobody will ever wake, so fail loudly rather than hang the test run.
            ready = self._real.select(_DEADLOCK_AFTER)
            if not ready:
                raise RuntimeError("virtual time: nothing scheduled and nothing to wait for (deadlock)")
            return ready
        self._clock.now += timeout
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: whenever it would sleep until the next timer, it jumps there instead."""

    def __init__(self) -> None:
        self._virtual = _VirtualTime()
        super().__init__(selector=_VirtualSelector(self._virtual))

    def time(self) -> float:
        return self._virtual.now


@dataclass(frozen=True, slots=True)
class Refusal:
    """A simulated 429: which quota tripped and the RetryInfo delay, in seconds."""

    quota_id: str | None
    retry_after: float | None


class SlidingWindowQuota:
    """Per-minute request and input-token quotas over a sliding 60-second window of accepted requests."""

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        retry_info: bool = True,
        shared_refusals: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._retry_info = retry_info
        self._shared_refusals = shared_refusals
        self._rng = random.Random(seed)
        self._log: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def submit(self, now: float, tokens: int) -> Refusal | None:
        """Count a request arriving at `now`, or refuse it if it would overrun a quota."""
        while self._log and self._log[0][0] <= now - 60.0:
            self._tokens -= self._log.popleft()[1]
        rpm, tpm = self.rpm, self.tpm
        if self._shared_refusals and self._rng.random() < self._shared_refusals:
            # Capacity shared with other projects ran short: a 429 while inside quota, naming no quota.
            return Refusal(None, None)
        if rpm is not None and len(self._log) >= rpm:
            return self._refuse(RPM_QUOTA_ID, now, lambda count, _: count < rpm)
        if tpm is not None and self._tokens + tokens > tpm:
            return self._refuse(TPM_QUOTA_ID, now, lambda _, used: used + tokens <= tpm)
        self._log.append((now, tokens))
        self._tokens += tokens
        return None

    def _refuse(self, quota_id: str, now: float, fits: Callable[[int, int], bool]) -> Refusal:
        if not self._retry_info:
            return Refusal(quota_id, None)
        # Retry once enough of the window has aged out; Gemini states the delay in whole seconds ("22s").
        count, used, free_at = len(self._log), self._tokens, now
        for at, tokens in self._log:
            if fits(count, used):
                break
            count, used, free_at = count - 1, used - tokens, at + 60.0
        return Refusal(quota_id, float(math.ceil(free_at - now)))


@dataclass(frozen=True, slots=True)
class Workload:
    """The traffic: a pool of workers sending requests of random size with random latency."""

    workers: int = 20
    latency: tuple[float, float] = (0.5, 3.0)
    tokens: tuple[int, int] = (200, 3000)
    estimate_error: float = 0.0
    """Each estimate is the real count times a uniform factor in [1 - error, 1 + error]."""
    send_jitter: float = 0.0
    """Uniform delay between admission and arrival at the server (network jitter)."""
    failures: float = 0.0
    """Share of accepted requests whose answer never arrives (connection reset, stream cut)."""
    deadline: float | None = None
    """Total timeout of one attempt, waiting for the limiter included; the attempt is then retried."""
    seed: int = 1


@dataclass(slots=True)
class Outcome:
    """What happened: requests accepted (arrival time, tokens), refusals, lost answers and timeouts."""

    duration: float
    accepted: list[tuple[float, int]] = field(default_factory=list)
    refused: list[tuple[float, str | None]] = field(default_factory=list)
    failures: int = 0
    timeouts: int = 0

    @property
    def own_refusals(self) -> int:
        """429s that named a quota: caused by the traffic itself, not by shared capacity."""
        return sum(1 for _, quota_id in self.refused if quota_id is not None)

    def requests_between(self, start: float, end: float) -> int:
        return sum(1 for at, _ in self.accepted if start <= at < end)

    def tokens_between(self, start: float, end: float) -> int:
        return sum(tokens for at, tokens in self.accepted if start <= at < end)


async def simulate(limiter: RateLimiter, quota: SlidingWindowQuota, load: Workload, duration: float) -> Outcome:
    """Run `load.workers` workers against `quota` for `duration` seconds of loop time (use a virtual loop)."""
    loop = asyncio.get_running_loop()
    rng = random.Random(load.seed)
    start = loop.time()
    outcome = Outcome(duration)

    async def attempt(estimate: int, actual: int) -> bool:
        await limiter.acquire(estimate)
        await asyncio.sleep(rng.uniform(0, load.send_jitter))
        refusal = quota.submit(loop.time(), actual)
        if refusal is None:
            outcome.accepted.append((loop.time() - start, actual))
        else:
            outcome.refused.append((loop.time() - start, refusal.quota_id))
        await asyncio.sleep(rng.uniform(*load.latency))
        if refusal is not None:
            limiter.rate_limited(refusal.quota_id, refusal.retry_after)
            return False
        if rng.random() < load.failures:
            outcome.failures += 1  # counted by the server, but the answer never arrives: nothing to settle
            return False
        limiter.settle(estimate, actual)
        return True

    async def one_request() -> None:
        actual = rng.randint(*load.tokens)
        estimate = max(1, round(actual * rng.uniform(1 - load.estimate_error, 1 + load.estimate_error)))
        while True:
            try:
                async with asyncio.timeout(load.deadline):
                    if await attempt(estimate, actual):
                        return
            except TimeoutError:
                outcome.timeouts += 1

    async def worker() -> None:
        while True:
            await one_request()

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(duration), asyncio.TaskGroup() as group:
            for _ in range(load.workers):
                group.create_task(worker())
    return outcome
