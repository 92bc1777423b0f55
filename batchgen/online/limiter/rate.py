"""Admission under Gemini's quotas: even pacing, one shared cooldown on 429, rates that adapt to the server.

Gemini counts requests per minute (RPM), input tokens per minute (TPM) and requests per day (RPD) per project
and model, sends no rate-limit headers, and says in a 429's body which quota tripped and how long to wait.
`RateLimiter` turns that into one decision per HTTP attempt: "send now" or "wait until t".

Design, in the order a request meets it:

* **FIFO admission.** Callers queue in arrival order and only the head may be admitted, so a large request
  is never starved by a stream of small ones. One timer is armed for the moment the head becomes
  admissible; `settle`, a cancellation and a 429 re-arm it. Nothing polls.
* **A minute window per quota** (`batchgen.window`): every admission of the last minute, request by
  request, as a sliding-window quota counts them. A request goes only if it fits within the limit less
  `headroom`, so configured limits equal to the quota draw no 429s. For requests the headroom is kept in
  time: an admission stays in the window `headroom` longer than the server keeps it (60.6 s for 1 %) and
  the window may hold the whole quota, so a small quota is used whole (5 RPM is 5 requests every 60.6 s,
  where 1 % off the count would leave 4 a minute). For tokens it is kept in count, where it also covers
  estimates: token counts are estimates until settled, and the window keeps a reserve over the pending
  ones, learnt from past errors. (`window_s` shortens the window, the limit scaled to it, for a server that
  counts that way.)
* **A pacing bucket per quota** (GCRA, continuous refill at limit / 60 s): requests leave evenly spaced
  from the first second, with no burst at start and no stampede when a minute's traffic ages out. It starts
  holding one unit (a request, or a token) and banks at most `burst` seconds of unused rate. A request
  larger than the bucket lets it fill to its own size while it waits at the head; one larger than a whole
  minute's quota goes alone once the window is empty. Never stuck. While a full window (or a cooldown)
  holds the head, the bucket banks no more than the head needs, so a burst is not echoed a window later.
* **Settling.** The caller reports the real `promptTokenCount`; the difference is returned to, or taken
  from, the TPM bucket (which may go into debt and hold the next admissions back) and the window.
* **One shared cooldown on 429.** Every waiter, and every new caller, waits until it ends; a later 429 may
  extend it to what the server asked, never shorten it. The quota the 429 names is cut (once per
  congestion event: the requests already in flight bounce too and must not each cut again), then climbs
  back in steps, never above the configured limit. With no configured limit a quota starts unlimited; the
  first 429 sets its limit from what the server accepted over the last minute, so the job converges on the
  real quota.
* **Requests per day** counts the requests this limiter admitted; once spent, `acquire` raises
  `QuotaExhausted` (the job stops with exit code 3, to resume after the reset at midnight Pacific). It
  cannot know about requests sent today by other runs: the server's own per-day 429 remains the backstop.

Concurrency is not the limiter's job: the runner bounds requests in flight with a fixed number of workers.
The limiter runs on asyncio (anyio on its asyncio backend included) and is not thread-safe.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass
from typing import Final

from batchgen.errors import ConfigError, QuotaExhausted
from batchgen.online.limiter.clock import Clock, LoopClock, Timer
from batchgen.online.limiter.window import WINDOW, Entry, MinuteWindow

_EPSILON: Final = 1e-6
"""Seconds of slack when comparing times, so float rounding cannot re-arm a timer for a nanosecond."""

_SAME_PEAK: Final = 0.05
"""Two 429s at rates this close (relative) confirm a peak: the quota is steady, so probe less often."""

_MAX_HOLDS: Final = 8
"""At most this many `probe_hold`s between probes above a confirmed peak."""

_MAX_PROBE_GROWTH: Final = 8
"""The n-th probe in a row adds n x `probe_step`, up to this many."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The job's quotas (None = not configured) and how the limiter paces and adapts under them."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    requests_per_day: int | None = None
    headroom: float = 0.01
    """Fraction of each per-minute quota left unused: 1 % of a minute absorbs 0.6 s of skew or jitter."""
    burst: float | None = None
    """Seconds of pacing a bucket may bank while demand is below the rate (at least one request); None is a
    twentieth of the window, 3 s of a minute. Never more than the window."""
    decrease: float = 0.8
    """On a 429 the tripped quota's rate becomes this fraction of what was being admitted."""
    recovery_interval: float = 5.0
    """Seconds between two steps back up, counted from the end of the last cooldown."""
    probe_hold: float = 60.0
    """Seconds to stay just under the rate that last tripped before probing above it."""
    probe_step: float = 0.01
    """Fraction the first probe above the rate that last tripped adds; the n-th in a row adds n x that."""
    default_cooldown: float = 5.0
    """Shared pause after a 429 that says nothing about when to retry."""
    window_s: float = WINDOW
    """Seconds the server counts a per-minute quota over, holding limit x window_s / 60: a minute for Gemini.
    Shorter only for a server that scales its quotas to a shorter window, like the local server's
    `--quota-window-s`; the limiter's window guard must then be as short, or it would admit bursts that such
    a window refuses."""
    shared_refusals: float = 0.05
    """A 429 naming no quota (the model's shared capacity) slows everyone only once such 429s reach this
    fraction of the last minute's admissions; below it each is absorbed by its own request's retry, since
    cutting the rate for isolated refusals would collapse throughput without preventing any."""

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute", "requests_per_day"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"must be positive, got {value!r}", key=name)
        checks = {
            "headroom": 0 <= self.headroom < 0.5,
            "window_s": self.window_s > 0,
            "burst": self.burst is None or 0 <= self.burst <= self.window_s,
            "decrease": 0 < self.decrease < 1,
            "recovery_interval": self.recovery_interval > 0,
            "probe_hold": self.probe_hold >= 0,
            "probe_step": 0 < self.probe_step < 1,
            "default_cooldown": self.default_cooldown >= 0,
            "shared_refusals": 0 <= self.shared_refusals <= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"out of range: {getattr(self, name)!r}", key=name)

    @property
    def burst_s(self) -> float:
        """The seconds of pacing a bucket may bank: `burst`, or a twentieth of the window."""
        return self.window_s / 20 if self.burst is None else self.burst


@dataclass(frozen=True, slots=True)
class LimiterSnapshot:
    """The limiter's live state for the progress display; rates are per minute, times on its clock."""

    state: str
    """"ok", "waiting on RPM", "waiting on TPM", "backing off after 429" or "daily quota spent"."""
    rpm: float | None
    """Requests per minute currently paced for (before headroom); None = unlimited."""
    tpm: float | None
    """Input tokens per minute currently paced for (before headroom); None = unlimited."""
    configured_rpm: float | None
    configured_tpm: float | None
    requests_per_day: int | None
    waiting: int
    cooling_down_until: float | None
    cooldown_remaining: float
    rate_limited: int
    """429s reported through `rate_limited`."""
    admitted: int
    """Requests admitted (each HTTP attempt counts)."""
    tokens: int
    """Input tokens admitted: estimates, corrected by `settle`."""
    achieved_rpm: float
    """Requests admitted during the last minute."""
    achieved_tpm: float
    """Input tokens admitted during the last minute (corrected by `settle`)."""


class _Control:
    """Where one meter's per-minute limit goes after 429s: down at once, then back up in steps (AIMD-like).

    A 429 sets `peak` to what the server was accepting and cuts the limit to `decrease` x that. Then, every
    `recovery_interval` without a 429: halfway back to the peak; once within `probe_step` of it, a hold of
    `probe_hold` (doubled each time a 429 confirms the same peak); then probes upward, each bolder than the
    last. Never above the configured ceiling; with none, probing goes on until the next 429.
    """

    def __init__(self, ceiling: float | None, limits: Limits) -> None:
        self.ceiling = ceiling
        self._limits = limits
        self.limit = ceiling
        self.peak: float | None = None
        self.next_step_at = math.inf
        self.quiet_until = -math.inf
        """Until then, a 429 for this quota is part of the congestion event already acted on."""
        self._holds = 1
        """Multiplies `probe_hold`: doubled each time a 429 confirms the last peak, so probing gets rarer."""
        self._hold_until: float | None = None
        self._probes = 0
        self._counted = False
        """The peak is a count of what an unlimited window held, refused requests included."""

    def congested(self, accepted: float, quiet_until: float, resume_at: float, *, counted: bool) -> None:
        """A 429 while the server accepted `accepted` per minute: cut, and recover from `resume_at`.

        `counted`: `accepted` is what the window held when the quota was unknown, not a paced rate.
        """
        self._counted = counted
        base = max(1.0, accepted if self.limit is None else min(self.limit, accepted))
        repeated = self.peak is not None and abs(base / self.peak - 1) <= _SAME_PEAK
        self._holds = min(2 * self._holds, _MAX_HOLDS) if repeated else 1
        self.peak = base
        self.limit = base * self._limits.decrease
        self._hold_until = None
        self._probes = 0
        self.quiet_until = quiet_until
        self.next_step_at = resume_at

    def refused(self, amount: float) -> None:
        """A 429 of the event: if the peak was counted off the window, the refused request is in it, though
        the server did not accept it: take it out."""
        if self._counted and self.peak is not None:
            self.peak = max(1.0, self.peak - amount)
            self.limit = self.peak * self._limits.decrease

    def postpone(self, resume_at: float) -> None:
        if self.next_step_at < math.inf:
            self.next_step_at = max(self.next_step_at, resume_at)

    def step(self) -> None:
        """Take the recovery step due at `next_step_at`."""
        assert self.limit is not None and self.peak is not None
        limits, at, limit = self._limits, self.next_step_at, self.limit
        if limit < self.peak * (1 - limits.probe_step):
            limit += (self.peak - limit) / 2
        elif self._hold_until is None:
            self._hold_until = at + limits.probe_hold * self._holds
        elif at >= self._hold_until:
            # Each probe a little bolder than the last, so a rate cut far below the quota (a 429 from
            # shared capacity) is outgrown in minutes, while the first probes past a peak stay small.
            self._probes += 1
            limit *= 1 + limits.probe_step * min(self._probes, _MAX_PROBE_GROWTH)
        self.next_step_at = at + limits.recovery_interval
        if self.ceiling is not None and limit >= self.ceiling:
            limit = self.ceiling
            self.next_step_at = math.inf
        self.limit = limit


class _Meter:
    """One per-minute quota (requests or input tokens): a pacing bucket, a minute window, an adaptive limit.

    `limit` is the per-minute figure the meter honours now (None = unlimited) and `allowed` that less
    headroom; `room` is what the window may hold, `allowed` scaled to the window's length, which it never
    exceeds. Headroom `in_time` makes the window `headroom` longer than the server's, so `room` is the whole
    limit over the server's window: whole units are not rounded away, and arrivals up to that much later than
    their admission still find room. Otherwise the window is the server's and `room` is `allowed` over it.
    The bucket spreads admissions evenly: it refills at `allowed / 60` per second and banks at most `burst`
    seconds of that (at least one unit) while demand is below the rate, so a brief stall on the other quota
    can be caught up.
    """

    def __init__(self, name: str, ceiling: float | None, limits: Limits, *, in_time: bool) -> None:
        self.name = name
        self._limits = limits
        self.window = MinuteWindow(limits.window_s / (1 - limits.headroom) if in_time else limits.window_s)
        self.control = _Control(ceiling, limits)
        self.allowed = math.inf
        self.room = math.inf
        self._rate = math.inf
        self._capacity = 1.0
        self._level = 1.0
        self._cap = 1.0
        self._head_need = 0.0
        self._paused_until = -math.inf
        self._updated_at: float | None = None
        self._started_at: float | None = None
        self._apply_limit()

    @property
    def limit(self) -> float | None:
        return self.control.limit

    def advance(self, now: float) -> None:
        """Bring the meter up to `now`, taking the recovery steps that fell due on the way."""
        if self._updated_at is None:
            self._updated_at = self._started_at = now
        self.window.expire(now)
        while self.control.next_step_at <= now:
            self._fill(self.control.next_step_at)
            self.control.step()
            self._apply_limit()
        self._fill(now)

    def ready_at(self, now: float, need: float) -> float:
        """When a request needing `need` units may go (a need above `room` waits for an empty window)."""
        if self.limit is None:
            return now
        short = min(need, self.room) - self._level
        paced = now if short <= 0 else now + short / self._rate
        return max(paced, self.held_until(now, need))

    def held_until(self, now: float, need: float) -> float:
        """When the window has room for `need`, whatever the bucket holds."""
        if self.limit is None:
            return now
        return self.window.ready_at(now, need, self.room)

    def set_head(self, need: float) -> None:
        """Let the bucket fill up to what the first waiter needs, so an oversize request goes, alone."""
        self._head_need = need
        self._recap()

    def charge(self, now: float, amount: float, tag: int | None = None) -> Entry:
        self._level -= amount
        return self.window.add(now, amount, tag)

    def settle(self, now: float, estimated: int, actual: int) -> None:
        """Correct a request's charge; a bucket in debt holds the next admissions back."""
        self._level = min(self._level + estimated - actual, self._cap)
        self.window.settle(now, estimated, actual)

    def cancel(self, entry: Entry) -> None:
        self._level = min(self._level + entry.amount, self._cap)
        self.window.cancel(entry)

    def slow_down(self, now: float, quiet_until: float, resume_at: float, *, named: bool) -> None:
        counted = named and self.limit is None
        self.control.congested(self._accepted_per_minute(now, named=named), quiet_until, resume_at, counted=counted)
        self._apply_limit()

    def refused(self) -> None:
        """A request of the congestion event was refused (requests meter)."""
        self.control.refused(WINDOW / self._limits.window_s)  # one request, as a per-minute figure
        self._apply_limit()

    def pause(self, until: float) -> None:
        """Bank no more than the first waiter needs until `until` (a cooldown, a full window): no burst after."""
        self._paused_until = max(self._paused_until, until)

    def describe(self) -> str:
        if self.limit is None:
            return f"{self.name} unlimited"
        ceiling = self.control.ceiling
        configured = "" if ceiling is None else f"/{ceiling:g}"
        return (
            f"{self.name} {self.limit:.6g}{configured} level {self._level:.6g}/{self._cap:.6g} "
            f"window {self.window.total:.6g}/{self.room:.6g}"
        )

    def _accepted_per_minute(self, now: float, *, named: bool) -> float:
        total, length = self.window.total, self.window.length
        if self.limit is None and named:
            # Unlimited so far: the server's window held everything sent in the last minute when it said
            # no, so that count is the best estimate of the quota (the sending rate may have been far higher).
            return total * WINDOW / self._limits.window_s
        # Already paced, or a 429 that names no quota (shared capacity, where the window says nothing about a
        # quota): cut from the rate being sent at, even when less than a minute has passed.
        assert self._started_at is not None
        return total * WINDOW / min(length, max(1.0, now - self._started_at))

    def _apply_limit(self) -> None:
        limit = self.limit
        if limit is None:
            return
        if self.allowed == math.inf:
            self._level = 1.0  # starts holding one unit: one request, or one token, so no burst at start
        self.allowed = limit * (1 - self._limits.headroom)
        self.room = self.allowed * self.window.length / WINDOW
        self._rate = self.allowed / WINDOW
        self._capacity = max(1.0, self._rate * self._limits.burst_s)
        self._recap()

    def _recap(self) -> None:
        self._cap = max(self._capacity, min(self._head_need, self.room))
        self._level = min(self._level, self._cap)

    def _fill(self, until: float) -> None:
        if self.limit is not None:
            paused_until = min(until, self._paused_until)
            head_only = max(1.0, min(self._head_need, self.room))
            self._refill(paused_until, min(self._cap, head_only))
            self._refill(until, self._cap)
        assert self._updated_at is not None
        self._updated_at = max(self._updated_at, until)

    def _refill(self, until: float, cap: float) -> None:
        assert self._updated_at is not None
        if until > self._updated_at:
            if self._level < cap:
                self._level = min(cap, self._level + (until - self._updated_at) * self._rate)
            self._updated_at = until


@dataclass(slots=True, eq=False)
class _Waiter:
    tokens: int
    future: asyncio.Future[None]
    admitted: tuple[Entry, Entry] | None = None


class RateLimiter:
    """Admits HTTP attempts under RPM, input-TPM and RPD quotas; implements `batchgen.records.Limiter`.

    Use: `await limiter.acquire(estimated_tokens)` before each attempt; after a response,
    `limiter.settle(estimated_tokens, usage.prompt)`; after a per-minute 429,
    `limiter.rate_limited(error.quota_id, error.retry_after)`. A per-day 429 is not reported here (the client
    raises `QuotaExhausted`). Concurrency is bounded by the runner's workers, not here.
    """

    def __init__(self, limits: Limits, clock: Clock | None = None) -> None:
        self.limits = limits
        self._clock: Clock = LoopClock() if clock is None else clock
        # Requests are counted exactly, in whole units: their headroom is time. Tokens are estimated: theirs
        # is count, part of the margin over estimate errors.
        self._requests = _Meter("RPM", limits.requests_per_minute, limits, in_time=True)
        self._tokens = _Meter("TPM", limits.tokens_per_minute, limits, in_time=False)
        self._waiters: deque[_Waiter] = deque()
        self._timer: Timer | None = None
        self._timer_at = math.inf
        self._cooldown_until = -math.inf
        self._admitted = 0
        self._tokens_admitted = 0
        self._rate_limited = 0
        self._shared_refusals: deque[float] = deque()

    # -- the Limiter protocol ------------------------------------------------------------------------------

    async def acquire(self, tokens: int) -> None:
        """Wait until one request carrying about `tokens` input tokens may be sent.

        Raises `QuotaExhausted` once `requests_per_day` requests were admitted. Cancelling the wait takes
        nothing from the quotas and leaves the other waiters' order intact.
        """
        now = self._sync()
        if self._day_spent():
            raise self._day_error()
        if not self._waiters and self._ready_at(now, tokens) <= now + _EPSILON:
            self._admit(now, tokens)
            return
        waiter = _Waiter(tokens, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self._head_changed()
        self._dispatch(now)
        try:
            await waiter.future
        except BaseException:
            self._withdraw(waiter)
            raise

    def settle(self, estimated: int, actual: int | None) -> None:
        """Correct the TPM meter with the real `promptTokenCount` (None: unknown, the estimate stands)."""
        if actual is None or actual == estimated:
            return
        now = self._sync()
        self._tokens.settle(now, estimated, actual)
        self._tokens_admitted += actual - estimated
        self._dispatch(now)

    def rate_limited(self, quota_id: str | None, retry_after: float | None) -> None:
        """Pause every caller for the server's retry delay and slow the quota the 429 named.

        `quota_id` is the QuotaFailure quota id: one about tokens slows TPM; a requests quota, or none, slows
        RPM. `retry_after` is RetryInfo's delay or Retry-After, in seconds; without one the pause is
        `default_cooldown`. The tripped attempt keeps its charge: the server may have counted it.
        """
        now = self._sync()
        self._rate_limited += 1
        if quota_id is None and not self._capacity_congested(now):
            return
        delay = self.limits.default_cooldown if retry_after is None else max(0.0, retry_after)
        self._cooldown_until = max(self._cooldown_until, now + delay)
        resume_at = self._cooldown_until + self.limits.recovery_interval
        meter = self._tokens if quota_id is not None and "token" in quota_id.lower() else self._requests
        if now >= meter.control.quiet_until:
            quiet_until = max(self._cooldown_until, now + self.limits.default_cooldown)
            meter.slow_down(now, quiet_until, resume_at, named=quota_id is not None)
        if meter is self._requests and quota_id is not None:
            # A refused request is in the window an unknown quota is learnt from, and so are the ones in flight
            # when it filled, whose 429s follow: each is taken out. (A refused request's tokens are unknown.)
            meter.refused()
        for each in (self._requests, self._tokens):
            each.pause(self._cooldown_until)
            each.control.postpone(resume_at)
        self._dispatch(now)

    def _capacity_congested(self, now: float) -> bool:
        if self.limits.shared_refusals == 0:
            return True
        refusals = self._shared_refusals
        refusals.append(now)
        while refusals and refusals[0] <= now - self.limits.window_s:
            refusals.popleft()
        admitted = max(1.0, self._requests.window.total)
        return len(refusals) >= 2 and len(refusals) / admitted >= self.limits.shared_refusals

    # -- what the progress display reads -------------------------------------------------------------------

    def snapshot(self) -> LimiterSnapshot:
        """The live state, read now (call it from the event loop)."""
        now = self._sync()
        cooling = self._cooldown_until > now
        return LimiterSnapshot(
            state=self._state(now),
            rpm=self._requests.limit,
            tpm=self._tokens.limit,
            configured_rpm=self.limits.requests_per_minute,
            configured_tpm=self.limits.tokens_per_minute,
            requests_per_day=self.limits.requests_per_day,
            waiting=len(self._waiters),
            cooling_down_until=self._cooldown_until if cooling else None,
            cooldown_remaining=self._cooldown_until - now if cooling else 0.0,
            rate_limited=self._rate_limited,
            admitted=self._admitted,
            tokens=self._tokens_admitted,
            achieved_rpm=self._requests.window.total * WINDOW / self._requests.window.length,
            achieved_tpm=self._tokens.window.total * WINDOW / self._tokens.window.length,
        )

    def __repr__(self) -> str:
        snap = self.snapshot()
        return (
            f"<RateLimiter {snap.state}: {self._requests.describe()}, {self._tokens.describe()}, "
            f"waiting={snap.waiting}, cooldown={snap.cooldown_remaining:.1f}s, "
            f"admitted={snap.admitted}, 429s={snap.rate_limited}>"
        )

    # -- internals -----------------------------------------------------------------------------------------

    def _sync(self) -> float:
        # The one place the clock is read: each entry point brings the buckets up to date before any change.
        now = self._clock.now()
        self._requests.advance(now)
        self._tokens.advance(now)
        return now

    def _ready_at(self, now: float, tokens: int) -> float:
        return max(self._cooldown_until, self._requests.ready_at(now, 1), self._tokens.ready_at(now, tokens))

    def _head_changed(self) -> None:
        head = self._waiters[0] if self._waiters else None
        self._requests.set_head(0 if head is None else 1)
        self._tokens.set_head(0 if head is None else head.tokens)

    def _dispatch(self, now: float) -> None:
        """Admit waiters from the head while they fit, then arm the one timer for the next."""
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():  # cancelled; its task withdraws it when it next runs
                self._waiters.popleft()
                self._head_changed()
                continue
            if self._day_spent():
                self._fail_waiters()
                break
            when = self._ready_at(now, head.tokens)
            if when > now + _EPSILON:
                self._hold(now, head.tokens)
                # A recovery step may raise the rate before `when`; wake for it and recompute.
                self._arm(min(when, self._requests.control.next_step_at, self._tokens.control.next_step_at))
                return
            self._waiters.popleft()
            head.admitted = self._admit(now, head.tokens)
            head.future.set_result(None)
            self._head_changed()
        self._disarm()

    def _hold(self, now: float, tokens: int) -> None:
        # A full window, not pacing, holding the head: banking rate meanwhile would release at once, as the
        # window frees, as many requests as left together a window ago, so a burst would echo every window.
        # Arrivals at the server straddle its window's edge by the network's jitter, and an echoed burst
        # larger than the headroom is refused.
        for meter, need in ((self._requests, 1), (self._tokens, tokens)):
            held = meter.held_until(now, need)
            if held > now + _EPSILON:
                meter.pause(held)

    def _admit(self, now: float, tokens: int) -> tuple[Entry, Entry]:
        self._admitted += 1
        self._tokens_admitted += tokens
        return self._requests.charge(now, 1), self._tokens.charge(now, tokens, tag=tokens)

    def _withdraw(self, waiter: _Waiter) -> None:
        now = self._sync()
        if waiter in self._waiters:
            was_head = self._waiters[0] is waiter
            self._waiters.remove(waiter)
            if was_head:
                self._head_changed()
        elif waiter.admitted is not None:
            # Admitted in the same loop step the caller gave up: the request is never sent, so it must not
            # count against any quota.
            self._requests.cancel(waiter.admitted[0])
            self._tokens.cancel(waiter.admitted[1])
            self._admitted -= 1
            self._tokens_admitted -= waiter.tokens
        self._dispatch(now)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            if self._timer_at == when:
                return
            self._timer.cancel()
        self._timer = self._clock.call_at(when, self._wake)
        self._timer_at = when

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf

    def _wake(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self._dispatch(self._sync())

    def _day_spent(self) -> bool:
        return self.limits.requests_per_day is not None and self._admitted >= self.limits.requests_per_day

    def _day_error(self) -> QuotaExhausted:
        return QuotaExhausted(
            f"requests_per_day ({self.limits.requests_per_day}) spent by this run; "
            "the quota resets at midnight Pacific time"
        )

    def _fail_waiters(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(self._day_error())
        self._head_changed()

    def _state(self, now: float) -> str:
        if self._cooldown_until > now:
            return "backing off after 429"
        if self._day_spent():
            return "daily quota spent"
        if not self._waiters:
            return "ok"
        tokens = self._waiters[0].tokens
        rpm_at, tpm_at = self._requests.ready_at(now, 1), self._tokens.ready_at(now, tokens)
        if max(rpm_at, tpm_at) <= now + _EPSILON:
            return "ok"
        return "waiting on TPM" if tpm_at > rpm_at else "waiting on RPM"
