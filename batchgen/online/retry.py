"""Which failures are retried, and how long to wait before the next attempt.

Exponential backoff with full jitter, except when the server said how long to wait (RetryInfo.retryDelay or
Retry-After): then its delay is honoured, because retrying earlier only earns another 429.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from batchgen.errors import RetryableError

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many HTTP attempts a request gets, and the backoff between them."""

    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    # A server-given delay is honoured up to this much; a longer one (hours) means a quota that will not come
    # back within the job, and the attempt is better spent failing the row visibly.
    max_server_delay_s: float = 600.0

    def delay(self, attempt: int, error: BaseException | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        hinted = error.retry_after if isinstance(error, RetryableError) else None
        if hinted is not None:
            # A little jitter on top keeps workers that got the same hint from returning in lockstep.
            return min(hinted, self.max_server_delay_s) + rng.uniform(0, min(1.0, self.base_delay_s))
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return rng.uniform(0, ceiling)


class Retrier:
    """Runs an attempt function under a RetryPolicy, counting attempts; the sleep is injectable."""

    def __init__(self, policy: RetryPolicy, *, sleep: Sleep = anyio.sleep, seed: int | None = None) -> None:
        self.policy = policy
        self._sleep = sleep
        self._rng = random.Random(seed)

    async def call(self, attempt: Callable[[int], Awaitable[T]]) -> T:
        """Call `attempt(n)` for n = 1, 2, ... until it returns, raises a non-retryable error or runs out."""
        # Nearly every request succeeds the first time, so the first attempt is a plain call: tenacity's
        # machinery (an AsyncRetrying and its state per call, visible in a row's CPU profile) is only built
        # once an attempt has failed, and drives attempts 2, 3, ... with the same policy.
        try:
            return await attempt(1)
        except RetryableError as error:
            if self.policy.max_attempts <= 1:
                raise
            await self._sleep(self.policy.delay(1, error, self._rng))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_attempts - 1),
            retry=retry_if_exception_type(RetryableError),
            wait=self._wait,
            sleep=self._sleep,
            reraise=True,
        )
        async for state in retrying:
            with state:
                return await attempt(state.retry_state.attempt_number + 1)
        raise AssertionError("unreachable: tenacity either returns or reraises")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        # tenacity counts from the second attempt, which it sees as its first.
        error = state.outcome.exception() if state.outcome else None
        return self.policy.delay(state.attempt_number + 1, error, self._rng)
