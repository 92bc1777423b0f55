"""Retries: which errors, how many attempts, and how long between them."""

from __future__ import annotations

import random

import pytest

from batchgen.errors import RateLimited, RequestRejected, ServerError, TransportError
from batchgen.online.retry import Retrier, RetryPolicy


class Sleeps:
    """Records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.mark.anyio
async def test_retries_retryable_errors_until_success() -> None:
    sleeps = Sleeps()
    errors = [ServerError("boom", http_status=503), TransportError("reset")]

    async def attempt(n: int) -> str:
        if errors:
            raise errors.pop(0)
        return f"ok on {n}"

    assert await Retrier(RetryPolicy(max_attempts=5), sleep=sleeps, seed=1).call(attempt) == "ok on 3"
    assert len(sleeps.waits) == 2


@pytest.mark.anyio
async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    calls: list[int] = []

    async def attempt(n: int) -> str:
        calls.append(n)
        raise ServerError("still down", http_status=500)

    with pytest.raises(ServerError):
        await Retrier(RetryPolicy(max_attempts=3), sleep=Sleeps()).call(attempt)
    assert calls == [1, 2, 3]


@pytest.mark.anyio
async def test_does_not_retry_a_rejected_request() -> None:
    calls: list[int] = []

    async def attempt(n: int) -> str:
        calls.append(n)
        raise RequestRejected("bad field", http_status=400)

    with pytest.raises(RequestRejected):
        await Retrier(RetryPolicy(max_attempts=5), sleep=Sleeps()).call(attempt)
    assert calls == [1]


@pytest.mark.anyio
async def test_server_delay_is_honoured() -> None:
    """A 429 that says 'retry in 20s' waits 20s (plus < 1s jitter), not an exponential guess."""
    sleeps = Sleeps()
    failures = [RateLimited("slow down", retry_after=20.0, http_status=429)]

    async def attempt(n: int) -> str:
        if failures:
            raise failures.pop()
        return "ok"

    await Retrier(RetryPolicy(base_delay_s=1.0), sleep=sleeps).call(attempt)
    assert 20.0 <= sleeps.waits[0] < 21.0


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
    rng = random.Random(3)
    for attempt in range(1, 10):
        ceiling = min(8.0, 2 ** (attempt - 1))
        waits = [policy.delay(attempt, ServerError("x"), rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8  # full jitter spans the whole range
