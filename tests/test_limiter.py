"""RateLimiter: pacing, windows, cooldowns and adaptation, on an event loop running in virtual time.

Every test runs on `VirtualTimeLoop`: `asyncio.sleep(60)` and the limiter's timers advance a virtual clock
instead of waiting, so hours of traffic against the simulated quota take milliseconds and are deterministic.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from batchgen.errors import ConfigError, QuotaExhausted
from batchgen.online.limiter.clock import Timer
from batchgen.online.limiter.rate import Limits, RateLimiter
from benchmarks.quota_sim import (
    RPM_QUOTA_ID,
    TPM_QUOTA_ID,
    SlidingWindowQuota,
    VirtualTimeLoop,
    Workload,
    simulate,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("asyncio", {"loop_factory": VirtualTimeLoop})


def now() -> float:
    return asyncio.get_running_loop().time()


async def admit_all(limiter: RateLimiter, sizes: list[int]) -> list[float]:
    """Acquire for each size concurrently, in order; return the time each was admitted."""
    times: list[float] = [0.0] * len(sizes)

    async def one(index: int, tokens: int) -> None:
        await limiter.acquire(tokens)
        times[index] = now()

    async with asyncio.TaskGroup() as group:
        for index, tokens in enumerate(sizes):
            group.create_task(one(index, tokens))
            await asyncio.sleep(0)  # queue them in this order
    return times


# -- configuration -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"requests_per_minute": 0}, id="zero-rpm"),
        pytest.param({"tokens_per_minute": -5}, id="negative-tpm"),
        pytest.param({"requests_per_day": 0}, id="zero-rpd"),
        pytest.param({"headroom": 0.5}, id="headroom"),
        pytest.param({"decrease": 1.0}, id="decrease"),
        pytest.param({"recovery_interval": 0}, id="recovery-interval"),
        pytest.param({"window_s": 0}, id="window"),
        pytest.param({"window_s": 2.0, "burst": 3.0}, id="burst-over-the-window"),
    ],
)
def test_limits_reject_values_that_cannot_work(kwargs: dict[str, Any]) -> None:
    """A limit of zero or a knob out of range is a configuration error naming the key, before any request."""
    with pytest.raises(ConfigError) as caught:
        Limits(**kwargs)
    assert caught.value.key == next(reversed(kwargs))


# -- pacing ------------------------------------------------------------------------------------------------


async def test_no_burst_at_start() -> None:
    """With 100 callers ready at once, the first second admits at most rate/60 + 1 requests."""
    limiter = RateLimiter(Limits(requests_per_minute=600))
    times = await admit_all(limiter, [1] * 100)
    start = min(times)
    assert sum(1 for t in times if t - start <= 1.0) <= 600 / 60 + 1


async def test_no_token_burst_at_start() -> None:
    """The TPM bucket starts empty too: the first second admits about a second's worth of tokens, no more."""
    limiter = RateLimiter(Limits(tokens_per_minute=60_000))
    times = await admit_all(limiter, [500] * 40)
    start = min(times)
    assert sum(500 for t in times if t - start <= 1.0) <= 60_000 / 60 + 500


async def test_requests_leave_evenly_spaced() -> None:
    """Requests are spaced 60/rpm apart from the first one on: no minute-boundary stampede."""
    limiter = RateLimiter(Limits(requests_per_minute=120, headroom=0.0))
    times = await admit_all(limiter, [1] * 10)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([0.5] * 9)


@pytest.mark.parametrize(
    ("limits", "size"),
    [
        pytest.param(Limits(requests_per_minute=600), 1, id="rpm"),
        pytest.param(Limits(tokens_per_minute=60_000), 100, id="tpm"),
    ],
)
async def test_a_burst_is_not_echoed_a_window_later(limits: Limits, size: int) -> None:
    """A burst the bucket banked for goes out at once; when it ages out of the window, the requests held by
    the full window leave evenly paced, not together. An echo would repeat every window, and a burst meeting
    the server's window edge with more jitter than headroom is refused."""
    limiter = RateLimiter(limits)
    await limiter.acquire(size)
    await asyncio.sleep(10)  # idle: the bucket banks `burst` seconds of rate (30 requests)
    times = await admit_all(limiter, [size] * 1_000)
    first_second = sum(1 for t in times if t < times[0] + 1)
    assert first_second >= 30  # the banked burst went out together
    later = sorted(t for t in times if t >= times[0] + 60)
    assert min(b - a for a, b in zip(later, later[5:], strict=False)) >= 0.4  # never 6 within 0.4 s


async def test_a_short_window_holds_its_share_of_the_rate() -> None:
    """With `window_s` = 2 (a server counting per-minute quotas over 2 s), no 2 s ever holds more than 2/60
    of the limit, even after a banked burst, and 1 % of 2 s is left to spare; the pace is still 99 % of the
    per-minute rate."""
    limiter = RateLimiter(Limits(requests_per_minute=600, window_s=2.0, burst=2.0))
    await limiter.acquire(1)
    await asyncio.sleep(10)  # idle: the bucket banks its 2 s of rate
    times = await admit_all(limiter, [1] * 200)
    assert max(sum(1 for t in times if start <= t < start + 2.0 / 0.99) for start in times) <= 600 * 2 / 60
    assert (len(times) - 1) / (times[-1] - times[0]) == pytest.approx(600 * 0.99 / 60, rel=0.01)


@pytest.mark.parametrize("rpm", [5, 10, 15])
async def test_a_small_request_quota_is_used_whole(rpm: int) -> None:
    """Free-tier quotas are a handful of requests a minute: the headroom is kept in time, not by dropping a
    whole request, so 5 RPM sends 5 requests every 60.6 s (not 4 a minute), with no 429."""
    quota = SlidingWindowQuota(rpm=rpm)
    outcome = await simulate(RateLimiter(Limits(requests_per_minute=rpm)), quota, Workload(), 3600)
    assert outcome.refused == []
    assert outcome.requests_between(0, 3600) / (rpm * 60) >= 0.98


async def test_unconfigured_the_quota_is_learnt_from_what_the_server_accepted() -> None:
    """Unconfigured, the first 429 learns the quota from what the window held, less the refused request, scaled
    to a minute: 49 of 50 requests accepted in a 2 s window are 1470 per minute, cut to 80 %. The 429s of
    the requests that were in flight take those out too, without cutting again."""
    limiter = RateLimiter(Limits(window_s=2.0))
    for _ in range(50):
        await limiter.acquire(1)
    limiter.rate_limited(RPM_QUOTA_ID, 1.0)
    assert limiter.snapshot().rpm == pytest.approx(49 * 30 * 0.8)
    for _ in range(3):
        limiter.rate_limited(RPM_QUOTA_ID, 1.0)
    assert limiter.snapshot().rpm == pytest.approx(46 * 30 * 0.8)


async def test_a_big_request_is_not_starved_by_small_ones() -> None:
    """Admission is FIFO: a large request queued first goes before small ones queued after it."""
    limiter = RateLimiter(Limits(tokens_per_minute=60_000, burst=0.0))
    times = await admit_all(limiter, [100, 5_000, 100, 100, 100])
    assert times == sorted(times)


async def test_request_larger_than_the_bucket_is_admitted() -> None:
    """A request above the bucket's capacity waits for its own size to accumulate, then goes."""
    limiter = RateLimiter(Limits(tokens_per_minute=6_000, headroom=0.0, burst=1.0))
    await asyncio.wait_for(limiter.acquire(3_000), timeout=120)
    assert limiter.snapshot().admitted == 1


async def test_request_larger_than_a_minute_of_quota_goes_alone_once_the_window_is_empty() -> None:
    """A request above the whole per-minute quota is never stuck: it goes once the window is empty."""
    limiter = RateLimiter(Limits(tokens_per_minute=6_000, headroom=0.0))
    times = await admit_all(limiter, [1_000, 20_000, 10])
    assert times[1] >= times[0] + 60
    assert times[2] >= times[1]


# -- settling ----------------------------------------------------------------------------------------------


async def test_settle_returns_overestimated_tokens() -> None:
    """A request that used fewer tokens than estimated gives the difference back at once."""
    limiter = RateLimiter(Limits(tokens_per_minute=6_000, headroom=0.0, burst=0.0))  # 100 tokens/s
    await limiter.acquire(3_000)
    started = now()
    waiting = asyncio.create_task(limiter.acquire(3_000))
    await asyncio.sleep(1)
    limiter.settle(3_000, 500)
    await waiting
    # 100 refilled + 2_500 returned; the last 400 take 4 s, where paying for all 3_000 would take 30 s.
    assert now() - started == pytest.approx(5.0)


async def test_settle_charges_underestimated_tokens() -> None:
    """A request that used more tokens than estimated is charged the rest: the next admissions wait longer."""
    fair, charged = RateLimiter(Limits(tokens_per_minute=6_000)), RateLimiter(Limits(tokens_per_minute=6_000))
    await fair.acquire(500)
    await charged.acquire(500)
    charged.settle(500, 1_500)
    start = now()
    await fair.acquire(500)
    fair_wait = now() - start
    await charged.acquire(500)
    assert now() - start - fair_wait > 5


async def test_settle_with_unknown_usage_keeps_the_estimate() -> None:
    """`settle(estimated, None)` changes nothing: the estimate stands as the charge."""
    limiter = RateLimiter(Limits(tokens_per_minute=6_000))
    await limiter.acquire(500)
    before = limiter.snapshot()
    limiter.settle(500, None)
    assert limiter.snapshot().tokens == before.tokens == 500


# -- cancellation ------------------------------------------------------------------------------------------


async def test_cancelled_waiter_takes_nothing_and_blocks_nobody() -> None:
    """Cancelling a queued acquire leaves the quota untouched and the next waiter moves up in its place."""
    limiter = RateLimiter(Limits(requests_per_minute=60, headroom=0.0))
    await limiter.acquire(1)
    doomed = asyncio.create_task(limiter.acquire(1))
    behind = asyncio.create_task(limiter.acquire(1))
    await asyncio.sleep(0.5)
    doomed.cancel()
    await asyncio.wait_for(behind, timeout=5)
    assert now() == pytest.approx(1.0)  # the slot the cancelled caller would have had
    snap = limiter.snapshot()
    assert (snap.admitted, snap.waiting) == (2, 0)


async def test_cancel_in_the_same_step_as_admission_gives_the_capacity_back() -> None:
    """A caller admitted and cancelled before it could run sends nothing; the next waiter gets its share."""
    limiter = RateLimiter(Limits(tokens_per_minute=6_000, headroom=0.0, burst=0.0))
    await limiter.acquire(3_000)
    racing = asyncio.create_task(limiter.acquire(3_000))
    behind = asyncio.create_task(limiter.acquire(3_000))
    await asyncio.sleep(1)
    cancelled_at = now()
    limiter.settle(3_000, 0)  # frees room: `racing` is admitted synchronously, inside settle
    racing.cancel()  # ... and cancelled before it ever resumes
    with pytest.raises(asyncio.CancelledError):
        await racing
    await behind
    assert now() == cancelled_at  # admitted with what `racing` gave back, without waiting 30 s
    snap = limiter.snapshot()
    assert (snap.admitted, snap.tokens) == (2, 3_000)


async def test_timeouts_and_lost_answers_leak_nothing() -> None:
    """Attempts that time out while waiting, and answers that never come, leave no waiter and no stall."""
    limiter = RateLimiter(Limits(requests_per_minute=120, tokens_per_minute=400_000))
    quota = SlidingWindowQuota(rpm=120, tpm=400_000)
    load = Workload(workers=12, failures=0.3, deadline=5.0, estimate_error=0.3)
    outcome = await simulate(limiter, quota, load, 900)
    assert outcome.timeouts > 1000 and outcome.failures > 10  # the faults really happened
    assert outcome.own_refusals == 0
    assert outcome.requests_between(60, 900) / (120 * 14) > 0.95
    await asyncio.sleep(61)
    snap = limiter.snapshot()
    assert (snap.waiting, snap.achieved_rpm, snap.achieved_tpm) == (0, 0, 0)
    assert not limiter._tokens.window._unsettled  # pending estimates left with their window


# -- 429s --------------------------------------------------------------------------------------------------


async def test_cooldown_is_shared_and_honours_retry_after() -> None:
    """After a 429 with a retry delay, no caller (queued or new) is admitted before the delay is over."""
    limiter = RateLimiter(Limits(requests_per_minute=600))
    for _ in range(10):
        await limiter.acquire(10)
    limiter.rate_limited(RPM_QUOTA_ID, 10.0)
    until = now() + 10.0
    times = await admit_all(limiter, [10] * 5)
    assert min(times) == pytest.approx(until)
    assert limiter.snapshot().rate_limited == 1


async def test_later_429_extends_the_cooldown_but_never_shortens_it() -> None:
    """A 429 asking for less time than the cooldown left changes nothing; one asking for more extends it."""
    limiter = RateLimiter(Limits(shared_refusals=0))
    limiter.rate_limited(None, 10.0)
    limiter.rate_limited(None, 2.0)
    assert limiter.snapshot().cooldown_remaining == pytest.approx(10.0)
    await asyncio.sleep(5)
    limiter.rate_limited(None, 20.0)
    await limiter.acquire(1)
    assert now() == pytest.approx(25.0)


async def test_429_without_a_retry_delay_uses_the_default_cooldown() -> None:
    """A 429 carrying neither RetryInfo nor Retry-After pauses everyone for `default_cooldown`."""
    limiter = RateLimiter(Limits(shared_refusals=0, default_cooldown=7.0))
    limiter.rate_limited(None, None)
    await limiter.acquire(1)
    assert now() == pytest.approx(7.0)


@pytest.mark.parametrize(
    ("quota_id", "slowed"),
    [
        pytest.param(TPM_QUOTA_ID, "tpm", id="input-tokens"),
        pytest.param(RPM_QUOTA_ID, "rpm", id="requests"),
        pytest.param(None, "rpm", id="unnamed"),
    ],
)
async def test_the_quota_named_by_the_429_is_the_one_slowed(quota_id: str | None, slowed: str) -> None:
    """QuotaFailure's quota id picks the meter: token quotas slow TPM, request or unnamed quotas slow RPM."""
    limiter = RateLimiter(Limits(shared_refusals=0, requests_per_minute=100, tokens_per_minute=100_000))
    await limiter.acquire(1_000)
    limiter.rate_limited(quota_id, 1.0)
    snap = limiter.snapshot()
    assert snap.rpm is not None and snap.tpm is not None
    assert (snap.rpm < 100, snap.tpm < 100_000) == (slowed == "rpm", slowed == "tpm")


async def test_isolated_shared_capacity_429s_are_absorbed_without_slowing_everyone() -> None:
    """429s naming no quota below `shared_refusals` of the admissions neither pause nor slow the others;
    once they pass it, they are congestion like any other 429."""
    limiter = RateLimiter(Limits(requests_per_minute=6000, shared_refusals=0.05))
    for _ in range(100):
        await limiter.acquire(1)
    limiter.rate_limited(None, 2.0)
    limiter.rate_limited(None, 2.0)
    snap = limiter.snapshot()
    assert snap.cooling_down_until is None and snap.rpm == 6000
    for _ in range(4):
        limiter.rate_limited(None, 2.0)
    snap = limiter.snapshot()
    assert snap.cooling_down_until is not None and snap.rpm is not None and snap.rpm < 6000


async def test_a_burst_of_429s_is_one_congestion_event() -> None:
    """429s from requests already in flight when the rate was cut do not cut it again."""
    limiter = RateLimiter(Limits(requests_per_minute=100))
    await limiter.acquire(1)
    limiter.rate_limited(RPM_QUOTA_ID, 3.0)
    once = limiter.snapshot().rpm
    for _ in range(5):
        await asyncio.sleep(0.5)
        limiter.rate_limited(RPM_QUOTA_ID, 3.0)
    assert limiter.snapshot().rpm == once
    assert limiter.snapshot().rate_limited == 6


async def test_rate_climbs_back_to_the_configured_limit_after_a_quiet_period() -> None:
    """After a 429 the effective rate steps down, then back up to the configured limit, never above it."""
    limiter = RateLimiter(Limits(requests_per_minute=100, tokens_per_minute=50_000))
    for _ in range(10):
        await limiter.acquire(2_000)
    limiter.rate_limited(TPM_QUOTA_ID, 2.0)
    seen = []
    for _ in range(60):
        await asyncio.sleep(5)
        tpm = limiter.snapshot().tpm
        assert tpm is not None
        seen.append(tpm)
    assert seen[0] < 50_000
    assert seen == sorted(seen)
    assert seen[-1] == 50_000


async def test_requests_per_day_stops_the_job() -> None:
    """Once `requests_per_day` requests were admitted, acquire raises QuotaExhausted, queued callers too."""
    limiter = RateLimiter(Limits(requests_per_minute=60, requests_per_day=3))
    results = await asyncio.gather(*(limiter.acquire(1) for _ in range(5)), return_exceptions=True)
    assert results[:3] == [None, None, None]
    assert all(isinstance(result, QuotaExhausted) for result in results[3:])
    with pytest.raises(QuotaExhausted):
        await limiter.acquire(1)
    assert limiter.snapshot().state == "daily quota spent"


# -- state for the progress display -------------------------------------------------------------------------


async def test_snapshot_says_what_callers_are_waiting_on() -> None:
    """The snapshot's state names the quota holding the queue back, or the cooldown."""
    limiter = RateLimiter(Limits(shared_refusals=0, requests_per_minute=60, tokens_per_minute=6_000, burst=0.0))
    assert limiter.snapshot().state == "ok"
    await limiter.acquire(10)
    queued = asyncio.create_task(limiter.acquire(10))
    await asyncio.sleep(0)
    assert limiter.snapshot().state == "waiting on RPM"
    await queued
    queued = asyncio.create_task(limiter.acquire(4_000))
    await asyncio.sleep(0)
    assert limiter.snapshot().state == "waiting on TPM"
    assert "waiting=1" in repr(limiter)
    limiter.rate_limited(None, 30.0)
    snap = limiter.snapshot()
    assert snap.state == "backing off after 429"
    assert snap.cooling_down_until == pytest.approx(now() + 30.0)
    assert "cooldown=30.0s" in repr(limiter)
    queued.cancel()


async def test_the_clock_is_injectable() -> None:
    """The limiter reads time only from its clock: one running 1000 s ahead of the loop paces the same."""
    loop = asyncio.get_running_loop()

    class Ahead:
        def now(self) -> float:
            return loop.time() + 1000.0

        def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
            return loop.call_at(when - 1000.0, callback)

    limiter = RateLimiter(Limits(shared_refusals=0, requests_per_minute=120, headroom=0.0), clock=Ahead())
    times = await admit_all(limiter, [1] * 3)
    assert [t - times[0] for t in times] == pytest.approx([0.0, 0.5, 1.0])
    limiter.rate_limited(None, 5.0)
    assert limiter.snapshot().cooling_down_until == pytest.approx(now() + 1005.0)


# -- against a simulated server quota ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quota", "limits", "load"),
    [
        pytest.param(
            SlidingWindowQuota(rpm=120),
            Limits(requests_per_minute=120),
            Workload(send_jitter=0.3),
            id="rpm",
        ),
        pytest.param(
            SlidingWindowQuota(tpm=100_000),
            Limits(tokens_per_minute=100_000),
            Workload(estimate_error=0.3),
            id="tpm-estimates-off-30pct",
        ),
        pytest.param(
            SlidingWindowQuota(rpm=60, tpm=100_000),
            Limits(requests_per_minute=60, tokens_per_minute=100_000),
            Workload(estimate_error=0.3),
            id="rpm-and-tpm",
        ),
    ],
)
async def test_limits_equal_to_the_quota_run_at_the_quota_without_429s(
    quota: SlidingWindowQuota, limits: Limits, load: Workload
) -> None:
    """Configured limits equal to the server's quota: zero 429s and at least 95 % of the quota over 30 min."""
    outcome = await simulate(RateLimiter(limits), quota, load, 1800)
    assert outcome.refused == []
    achieved = []
    if quota.rpm is not None:
        achieved.append(outcome.requests_between(0, 1800) / (quota.rpm * 30))
    if quota.tpm is not None:
        achieved.append(outcome.tokens_between(0, 1800) / (quota.tpm * 30))
    assert max(achieved) >= 0.95  # the binding quota
    assert max(achieved) <= 1.0


@pytest.mark.parametrize(
    ("quota", "load"),
    [
        pytest.param(SlidingWindowQuota(rpm=120), Workload(workers=50), id="rpm"),
        pytest.param(
            SlidingWindowQuota(tpm=100_000, retry_info=False),
            Workload(workers=50, estimate_error=0.3),
            id="tpm-no-retry-info",
        ),
    ],
)
async def test_without_configured_limits_the_rate_converges_on_the_quota(
    quota: SlidingWindowQuota, load: Workload
) -> None:
    """Unconfigured: the first 429s teach the limiter the quota; it then runs at 80-100 % of it."""
    outcome = await simulate(RateLimiter(Limits()), quota, load, 3600)
    assert len(outcome.refused) <= load.workers  # the first wave: what was in flight when the quota filled
    settled = [at for at, _ in outcome.refused if at >= 600]
    assert len(settled) <= 10  # about one probe every 5-9 minutes once the quota is known
    if quota.rpm is not None:
        achieved = outcome.requests_between(600, 3600) / (quota.rpm * 50)
    else:
        assert quota.tpm is not None
        achieved = outcome.tokens_between(600, 3600) / (quota.tpm * 50)
    assert 0.8 <= achieved <= 1.0


async def test_429s_from_shared_capacity_are_absorbed() -> None:
    """Random 429s inside quota slow the job briefly; it climbs back and never trips the quota itself."""
    quota = SlidingWindowQuota(rpm=120, shared_refusals=0.002, seed=3)
    outcome = await simulate(RateLimiter(Limits(requests_per_minute=120)), quota, Workload(), 3600)
    assert len(outcome.refused) >= 3
    assert outcome.own_refusals == 0
    assert outcome.requests_between(0, 3600) / (120 * 60) >= 0.85


def test_paces_on_a_plain_asyncio_loop() -> None:
    """With the default clock, on an ordinary event loop, the timers pace in real time (about 0.1 s here)."""

    async def main() -> float:
        limiter = RateLimiter(Limits(requests_per_minute=6_000, headroom=0.0))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(limiter.acquire(1) for _ in range(10)))
        return loop.time() - started

    assert asyncio.run(main()) >= 9 * 0.01 - 0.001  # nine 10 ms gaps; a timer never fires early
