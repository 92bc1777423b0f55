"""Admission under Gemini's quotas: even pacing, one shared cooldown on 429, rates that adapt to the server.

Gemini counts requests per minute (RPM), input tokens per minute (TPM) and requests per day (RPD) per project
and model, sends no rate-limit headers, and says in a 429's body which quota tripped and how long to wait.
`RateLimiter` turns that into one decision per HTTP attempt: "send now" or "wait until t".

Design, in the order a request meets it:

* **FIFO admission.** Callers queue in arrival order; only the head of the queue may be admitted, so a large
  request is never starved by a stream of small ones. One timer is armed for the moment the head becomes
  admissible (a heap of one, since only the head matters); `settle`, a cancellation and a 429 re-arm it.
  Nothing polls.
* **Buckets that refill continuously** (GCRA). A request needs 1 unit of the RPM bucket and its estimated
  input tokens of the TPM bucket. The RPM bucket holds one request: requests leave evenly spaced from the
  very first one, with no burst at start and no stampede at a minute boundary. The TPM bucket holds
  `token_burst` seconds of tokens. The rate is set so that *any* 60-second window sees at most the quota less
  `headroom`: capacity + 60 s x rate = quota x (1 - headroom). A request needing more than the bucket
  holds lets the bucket fill up to its own size while it waits at the head (the earlier traffic ages out of
  the server's window meanwhile), so it is sent alone rather than stuck; one needing more than a whole
  minute's worth waits for a full minute of credit, then goes.
* **Settling.** The caller reports the real `promptTokenCount`; the difference is returned to, or taken from,
  the TPM bucket (which may go into debt and hold the next admissions back).
* **One shared cooldown on 429.** Every waiter, and every new caller, waits until it ends; a later 429 may
  extend it to what the server asked, never shorten it. The quota the 429 names is slowed (multiplicative
  decrease, once per congestion event: the other requests already in flight bounce too and must not each
  cut the rate again), then climbs back in steps: halfway to the rate that last tripped, a hold there,
  then small probes upward, never above the configured limit. With no configured limit a meter starts
  unlimited; the first 429 sets its rate from what the server actually accepted over the last minute.
* **Requests per day** is a counter of the requests this limiter admitted; once spent, `acquire` raises
  `QuotaExhausted` (the job stops with exit code 3 and resumes after the reset at midnight Pacific).

Concurrency is not the limiter's job: the runner bounds requests in flight with a fixed number of workers.
The limiter is built for asyncio (anyio on its asyncio backend included); it is not thread-safe.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass
from typing import Final

from batchgen.clock import Clock, LoopClock, Timer
from batchgen.errors import ConfigError, QuotaExhausted

WINDOW: Final = 60.0
"""Gemini's RPM and TPM quotas count what arrived in the last minute."""

_EPSILON: Final = 1e-6
"""Seconds of slack when comparing times, so float rounding cannot re-arm a timer for a nanosecond."""

_ERROR_WEIGHT: Final = 0.02
"""Weight of each settled request in the running mean and variance of estimate errors (~50 requests)."""

_ERROR_SIGMAS: Final = 2.0
"""Standard deviations of estimate noise the token reserve covers."""

_SAME_PEAK: Final = 0.05
"""Two 429s at rates this close (relative) confirm a peak: the quota is steady, so probe less often."""

_MAX_HOLDS: Final = 8
"""At most this many `probe_hold`s between probes above a confirmed peak."""

_MAX_PROBE_GROWTH: Final = 8
"""The n-th probe in a row adds n x `probe_step`, up to this many."""

_MARGIN: Final = 1e-3
"""An admission stays in the window this long past the minute, so the server surely no longer counts it."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The job's quotas (None = not configured) and how the limiter paces and adapts under them."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    requests_per_day: int | None = None
    headroom: float = 0.01
    """Fraction of each per-minute quota left unused, for clock skew and network jitter."""
    burst: float = 3.0
    """Seconds of pacing a bucket may bank while demand is below the rate (at least one request)."""
    decrease: float = 0.8
    """On a 429 the tripped quota's rate becomes this fraction of what was being admitted."""
    recovery_interval: float = 5.0
    """Seconds between two steps back up, counted from the end of the last cooldown."""
    probe_hold: float = 60.0
    """Seconds to stay just under the rate that last tripped before probing above it."""
    probe_step: float = 0.01
    """Fraction added per step when probing above the rate that last tripped."""
    default_cooldown: float = 5.0
    """Shared pause after a 429 that says nothing about when to retry."""

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute", "requests_per_day"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"must be positive, got {value!r}", key=name)
        checks = {
            "headroom": 0 <= self.headroom < 0.5,
            "burst": 0 <= self.burst <= WINDOW,
            "decrease": 0 < self.decrease < 1,
            "recovery_interval": self.recovery_interval > 0,
            "probe_hold": self.probe_hold >= 0,
            "probe_step": 0 < self.probe_step < 1,
            "default_cooldown": self.default_cooldown >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"out of range: {getattr(self, name)!r}", key=name)


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


class _Entry:
    """One admitted request in a window: when, how much (corrected when settled), and its estimate."""

    __slots__ = ("amount", "at", "pending", "tag")

    def __init__(self, at: float, amount: float, tag: int | None) -> None:
        self.at = at
        self.amount = amount
        self.tag = tag
        self.pending = tag is not None


class _Window:
    """Everything admitted during the last minute, entry by entry: the measure and the hard guard.

    A per-minute quota refuses a request when what it accepted over the last 60 s plus the request would
    exceed it. Keeping the same sum here means the limiter never sends what such a server would refuse, and
    knows to the millisecond when room frees up. Memory is one entry per request of the last minute.

    Token entries are estimates until settled, but the server counts the real size at once. So the window
    keeps a reserve over the estimates still pending, learnt from the settled ones: their mean relative
    error (a bias adds up across requests) plus three standard deviations of the noise (which adds up as
    the square root of the sum of squares).
    """

    def __init__(self) -> None:
        self._log: deque[_Entry] = deque()
        self._unsettled: dict[int, deque[_Entry]] = {}
        self.total = 0.0
        self._pending = 0.0
        self._pending_squares = 0.0
        self._settled = 0
        self._error_mean = 0.0
        self._error_var = 0.0

    def add(self, now: float, amount: float, tag: int | None = None) -> _Entry:
        entry = _Entry(now, amount, tag)
        self._log.append(entry)
        self.total += amount
        if tag is not None:
            queue = self._unsettled.setdefault(tag, deque())
            self._pending += amount
            # Entries sharing an estimate are most likely attempts of one request, whose errors are the
            # same: they weigh as one entry of their combined size, (n x amount)^2, not as n independent ones.
            self._pending_squares += amount * amount * (2 * len(queue) + 1)
            queue.append(entry)
        return entry

    def expire(self, now: float) -> None:
        while self._log and self._log[0].at + WINDOW + _MARGIN <= now:
            entry = self._log.popleft()
            self.total -= entry.amount
            if entry.pending:
                self._unpend(entry)
        if not self._log:
            # Nothing left: start from exact zeros rather than the residue of many float updates.
            self.total = self._pending = self._pending_squares = 0.0

    def ready_at(self, now: float, need: float, allowed: float) -> float:
        """When `need` (at most `allowed`) fits under `allowed` as older entries age out of the window."""
        want = min(need, allowed)
        excess = self.total + want + self._reserve(want) - allowed
        if excess <= allowed * 1e-9 or not self._log:
            return now
        freed = 0.0
        for entry in self._log:
            freed += entry.amount
            if freed >= excess * (1 - 1e-9):
                return entry.at + WINDOW + _MARGIN
        return self._log[-1].at + WINDOW + _MARGIN  # only an empty window has room: it goes alone

    def settle(self, now: float, estimated: int, actual: int) -> None:
        """Correct the entry of a request whose real size is now known, and learn from the error."""
        self._learn(actual / estimated - 1 if estimated > 0 else 0.0)
        pending = self._unsettled.get(estimated)
        # Requests with the same estimate are told apart by age: the oldest one still unsettled is taken.
        # If that is not the one that finished, it is older than it, so a refund leaves the window sooner:
        # the error is on the safe side.
        alone = pending is not None and len(pending) == 1
        entry = pending[0] if pending else None
        if entry is not None:
            self._unpend(entry)
        if actual > estimated:
            # An extra charge may only go where it stays in the window at least as long as the server
            # counts it: on the request itself when no other shares its estimate, else at the present time.
            if entry is not None and alone:
                entry.amount += actual - estimated
                self.total += actual - estimated
            else:
                self.add(now, actual - estimated)
        elif entry is not None:
            refund = min(entry.amount, estimated - actual)
            entry.amount -= refund
            self.total -= refund

    def cancel(self, entry: _Entry) -> None:
        """Take back an entry for a request that was never sent."""
        if entry.pending:
            self._unpend(entry)
        self.total -= entry.amount
        entry.amount = 0.0

    def _unpend(self, entry: _Entry) -> None:
        assert entry.tag is not None
        queue = self._unsettled[entry.tag]
        self._pending -= entry.amount
        self._pending_squares -= entry.amount * entry.amount * (2 * len(queue) - 1)
        # Settled and expiring entries are the oldest of their estimate, so this is nearly always O(1).
        if queue[0] is entry:
            queue.popleft()
        else:
            queue.remove(entry)
        if not queue:
            del self._unsettled[entry.tag]
        entry.pending = False

    def _reserve(self, extra: float) -> float:
        bias = max(0.0, self._error_mean) * (self._pending + extra)
        noise = math.sqrt(max(0.0, self._pending_squares) + extra * extra)
        return bias + _ERROR_SIGMAS * math.sqrt(self._error_var) * noise

    def _learn(self, error: float) -> None:
        # A plain average over the first requests, then exponential, so early estimates are not trusted
        # blindly nor old ones forever.
        self._settled += 1
        weight = max(_ERROR_WEIGHT, 1 / self._settled)
        diff = error - self._error_mean
        self._error_mean += weight * diff
        self._error_var = (1 - weight) * (self._error_var + weight * diff * diff)


class _Meter:
    """One per-minute quota (requests or input tokens): a pacing bucket, a one-minute window, adaptive limit.

    `limit` is the per-minute figure the meter currently honours (None = unlimited) and `allowed` that less
    headroom. The window guarantees no minute ever holds more than `allowed`; the bucket spreads admissions
    evenly, refilling at `allowed / 60` per second and banking at most `burst` seconds of it (at least one
    unit) while demand is below the rate, so a brief stall on the other quota can be caught up.
    """

    def __init__(self, name: str, ceiling: float | None, limits: Limits) -> None:
        self.name = name
        self.ceiling = ceiling
        self._limits = limits
        self.window = _Window()
        self._started_at: float | None = None
        self._updated_at: float | None = None
        self._paused_until = -math.inf
        self._head_need = 0.0
        self.limit: float | None = None
        self.allowed = math.inf
        self.rate = math.inf
        self.capacity = 1.0
        self.level = 1.0
        self._cap = 1.0
        self.peak: float | None = None
        """The limit that last drew a 429; recovery climbs back toward it."""
        self._hold_until: float | None = None
        self._holds = 1
        self._probes = 0
        """Multiplies `probe_hold`: doubled each time a 429 confirms the last peak, so probing gets rarer."""
        self.next_step_at = math.inf
        self.quiet_until = -math.inf
        """Until then, a 429 for this quota is part of the congestion event already acted on."""
        if ceiling is not None:
            self._set_limit(ceiling)

    # -- admission -----------------------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Bring the meter up to `now`, applying any recovery steps that fell due on the way."""
        if self._updated_at is None:
            self._updated_at = now
        self.window.expire(now)
        while self.next_step_at <= now:
            self._fill(self.next_step_at)
            self._step(self.next_step_at)
        self._fill(now)

    def ready_at(self, now: float, need: float) -> float:
        """When a request needing `need` units may go (a need above `allowed` waits for an empty window)."""
        if self.limit is None:
            return now
        short = min(need, self.allowed) - self.level
        paced = now if short <= 0 else now + short / self.rate
        return max(paced, self.window.ready_at(now, need, self.allowed))

    def set_head(self, need: float) -> None:
        """Let the bucket fill up to what the first waiter needs, so an oversize request goes, alone."""
        self._head_need = need
        self._recap()

    def charge(self, now: float, amount: float, tag: int | None = None) -> _Entry:
        if self._started_at is None:
            self._started_at = now
        if self.limit is not None:
            self.level -= amount
        return self.window.add(now, amount, tag)

    def settle(self, estimated: int, actual: int, now: float) -> None:
        """Correct a request's charge; a bucket in debt holds the next admissions back."""
        if self.limit is not None:
            self.level = min(self.level + estimated - actual, self._cap)
        self.window.settle(now, estimated, actual)

    def cancel(self, entry: _Entry) -> None:
        if self.limit is not None:
            self.level = min(self.level + entry.amount, self._cap)
        self.window.cancel(entry)

    def pause(self, until: float) -> None:
        """Bank no more than the first waiter needs until `until` (a cooldown), so it ends without a burst."""
        self._paused_until = max(self._paused_until, until)

    def _fill(self, until: float) -> None:
        assert self._updated_at is not None
        if self.limit is not None:
            paused_until = min(until, self._paused_until)
            if paused_until > self._updated_at:
                head_only = max(1.0, min(self._head_need, self.allowed))
                self._refill(paused_until, min(self._cap, head_only))
            self._refill(until, self._cap)
        self._updated_at = max(self._updated_at, until)

    def _refill(self, until: float, cap: float) -> None:
        assert self._updated_at is not None
        if until > self._updated_at:
            if self.level < cap:
                self.level = min(cap, self.level + (until - self._updated_at) * self.rate)
            self._updated_at = until

    def _set_limit(self, limit: float) -> None:
        if self.limit is None:
            self.level = 1.0  # starts holding one unit: one request, or one token, so no burst at start
        self.limit = limit
        self.allowed = limit * (1 - self._limits.headroom)
        self.rate = self.allowed / WINDOW
        self.capacity = max(1.0, self.rate * self._limits.burst)
        self._recap()

    def _recap(self) -> None:
        self._cap = max(self.capacity, min(self._head_need, self.allowed))
        self.level = min(self.level, self._cap)

    # -- adapting to 429s ----------------------------------------------------------------------------------

    def slow_down(self, now: float, quiet_until: float, resume_at: float) -> None:
        """Congestion: pace at `decrease` x what the server was accepting, then recover from `resume_at`."""
        accepted = self._accepted_per_minute(now)
        base = accepted if self.limit is None else min(self.limit, accepted)
        base = max(base, 1.0)
        repeated = self.peak is not None and abs(base / self.peak - 1) <= _SAME_PEAK
        self._holds = min(2 * self._holds, _MAX_HOLDS) if repeated else 1
        self.peak = base
        self._set_limit(base * self._limits.decrease)
        self._hold_until = None
        self._probes = 0
        self.quiet_until = quiet_until
        self.next_step_at = resume_at

    def postpone_recovery(self, resume_at: float) -> None:
        if self.next_step_at < math.inf:
            self.next_step_at = max(self.next_step_at, resume_at)

    def _accepted_per_minute(self, now: float) -> float:
        total = self.window.total
        if self.limit is None or self._started_at is None:
            # Unlimited so far: the server's window held everything sent in the last minute when it said
            # no, so that count is the best estimate of the quota (the sending rate may have been far higher).
            return total
        # Already paced: cut from the rate being sent at, even when less than a minute has passed.
        return total * WINDOW / min(WINDOW, max(1.0, now - self._started_at))

    def _step(self, at: float) -> None:
        assert self.limit is not None and self.peak is not None
        limits = self._limits
        limit = self.limit
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
        self._set_limit(limit)

    def describe(self) -> str:
        if self.limit is None:
            return f"{self.name} unlimited"
        configured = "" if self.ceiling is None else f"/{self.ceiling:g}"
        return (
            f"{self.name} {self.limit:.6g}{configured} level {self.level:.6g}/{self._cap:.6g} "
            f"window {self.window.total:.6g}/{self.allowed:.6g}"
        )


@dataclass(slots=True, eq=False)
class _Waiter:
    tokens: int
    future: asyncio.Future[None]
    admitted: tuple[_Entry, _Entry] | None = None


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
        self._requests = _Meter("RPM", limits.requests_per_minute, limits)
        self._tokens = _Meter("TPM", limits.tokens_per_minute, limits)
        self._waiters: deque[_Waiter] = deque()
        self._timer: Timer | None = None
        self._timer_at = math.inf
        self._cooldown_until = -math.inf
        self._admitted = 0
        self._tokens_admitted = 0
        self._rate_limited = 0

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
        self._tokens.settle(estimated, actual, now)
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
        delay = self.limits.default_cooldown if retry_after is None else max(0.0, retry_after)
        self._cooldown_until = max(self._cooldown_until, now + delay)
        resume_at = self._cooldown_until + self.limits.recovery_interval
        meter = self._tokens if quota_id is not None and "token" in quota_id.lower() else self._requests
        if now >= meter.quiet_until:
            quiet_until = max(self._cooldown_until, now + self.limits.default_cooldown)
            meter.slow_down(now, quiet_until, resume_at)
        for each in (self._requests, self._tokens):
            each.pause(self._cooldown_until)
            each.postpone_recovery(resume_at)
        self._dispatch(now)

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
            achieved_rpm=self._requests.window.total,
            achieved_tpm=self._tokens.window.total,
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
                # A recovery step may raise the rate before `when`; wake for it and recompute.
                self._arm(min(when, self._requests.next_step_at, self._tokens.next_step_at))
                return
            self._waiters.popleft()
            head.admitted = self._admit(now, head.tokens)
            head.future.set_result(None)
            self._head_changed()
        self._disarm()

    def _admit(self, now: float, tokens: int) -> tuple[_Entry, _Entry]:
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
