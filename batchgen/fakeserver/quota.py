"""Per-model quotas as the API enforces them: requests per minute, input tokens per minute, requests per day.

RPM and TPM use a sliding window of `quota_window_s` seconds holding rate * window / 60; the window frees
capacity as each admitted request ages out, and the delay a rejection reports is the time until enough has
aged out for the rejected request to fit. A request larger than the whole window is admitted only into an
empty window (the real API would reject it forever; here a client can still make progress). RPD counts
requests in fixed windows: calendar days in America/Los_Angeles (the API resets at midnight Pacific), or
`day_window_s`-second windows from the server's start. Only admitted requests count.

Time is read from two injectable clocks: a monotonic one for the windows and a wall clock for the day.
"""

from __future__ import annotations

import datetime
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from batchgen.fakeserver.config import ServerConfig
from batchgen.fakeserver.errors import RPD_QUOTA_ID, RPM_QUOTA_ID, TPM_QUOTA_ID

_PACIFIC = ZoneInfo("America/Los_Angeles")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a request was refused: the quota, its configured limit, and when to retry."""

    quota_id: str
    limit: int
    retry_after: float


class SlidingWindow:
    """Amounts admitted over the last `window` seconds, against a capacity."""

    def __init__(self, capacity: float, window: float) -> None:
        self.capacity = capacity
        self.window = window
        self._entries: deque[tuple[float, float]] = deque()
        self._used = 0.0

    def __repr__(self) -> str:
        return f"<SlidingWindow used={self._used:g}/{self.capacity:g} over {self.window:g}s>"

    def wait(self, now: float, amount: float) -> float:
        """Seconds until `amount` fits (0 if it fits now)."""
        self._expire(now)
        excess = self._used + amount - self.capacity
        if excess <= 1e-9 or not self._entries:
            return 0.0
        for stamp, size in self._entries:
            excess -= size
            if excess <= 1e-9:
                return stamp + self.window - now
        return self._entries[-1][0] + self.window - now

    def add(self, now: float, amount: float) -> None:
        self._entries.append((now, amount))
        self._used += amount

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        while self._entries and self._entries[0][0] <= horizon:
            self._used -= self._entries.popleft()[1]
        if not self._entries:
            self._used = 0.0  # no float drift left behind in an empty window


class DayCounter:
    """Requests per fixed day window, reset at its boundary."""

    def __init__(self, limit: int, day_s: float | None, origin: float) -> None:
        self.limit = limit
        self._day_s = day_s
        self._origin = origin
        self._window: float | None = None
        self._count = 0

    def wait(self, now: float, wall: float) -> float:
        """0 if one more request fits today, else the seconds until the next day starts."""
        start, end = self._bounds(now, wall)
        if start != self._window:
            self._window, self._count = start, 0
        return 0.0 if self._count < self.limit else end

    def add(self) -> None:
        self._count += 1

    def wait_end(self, now: float, wall: float) -> float:
        """Seconds until the current day window ends."""
        return self._bounds(now, wall)[1]

    def _bounds(self, now: float, wall: float) -> tuple[float, float]:
        """(an identity of the current window, seconds until it ends)."""
        if self._day_s is not None:
            index, into = divmod(now - self._origin, self._day_s)
            return index, self._day_s - into
        local = datetime.datetime.fromtimestamp(wall, _PACIFIC)
        midnight = datetime.datetime.combine(local.date() + datetime.timedelta(days=1), datetime.time(), _PACIFIC)
        return local.date().toordinal(), midnight.timestamp() - wall


class _ModelQuota:
    def __init__(self, config: ServerConfig, origin: float) -> None:
        scale = config.quota_window_s / 60.0
        window = config.quota_window_s
        self.rpm = None if config.rpm is None else SlidingWindow(config.rpm * scale, window)
        self.tpm = None if config.tpm is None else SlidingWindow(config.tpm * scale, window)
        self.rpd = None if config.rpd is None else DayCounter(config.rpd, config.day_window_s, origin)


class Quotas:
    """Admission control for generate requests, one set of windows per model."""

    def __init__(
        self,
        config: ServerConfig,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._clock = clock
        self._wall_clock = wall_clock
        self._origin = clock()
        self._models: dict[str, _ModelQuota] = {}
        self.enabled = any(limit is not None for limit in (config.rpm, config.tpm, config.rpd))

    def __repr__(self) -> str:
        c = self._config
        limits = f"rpm={c.rpm} tpm={c.tpm} rpd={c.rpd} window={c.quota_window_s}s"
        return f"<Quotas {limits} models={len(self._models)}>"

    def until_next_day(self) -> float:
        """Seconds until the day quota resets."""
        return DayCounter(1, self._config.day_window_s, self._origin).wait_end(self._clock(), self._wall_clock())

    def admit(self, model: str, input_tokens: int) -> Rejection | None:
        """Count the request against every quota and return None, or refuse it without counting it.

        The day quota is checked first: once spent, it is the reason that matters.
        """
        if not self.enabled:
            return None
        quota = self._models.get(model)
        if quota is None:
            quota = self._models[model] = _ModelQuota(self._config, self._origin)
        now = self._clock()
        if quota.rpd is not None:
            wait = quota.rpd.wait(now, self._wall_clock())
            if wait > 0:
                return Rejection(RPD_QUOTA_ID, quota.rpd.limit, wait)
        for window, quota_id, limit, amount in (
            (quota.rpm, RPM_QUOTA_ID, self._config.rpm, 1),
            (quota.tpm, TPM_QUOTA_ID, self._config.tpm, input_tokens),
        ):
            if window is not None and limit is not None:
                wait = window.wait(now, amount)
                if wait > 0:
                    return Rejection(quota_id, limit, wait)
        self._record(quota, now, input_tokens)
        return None

    @staticmethod
    def _record(quota: _ModelQuota, now: float, input_tokens: int) -> None:
        if quota.rpd is not None:
            quota.rpd.add()
        if quota.rpm is not None:
            quota.rpm.add(now, 1)
        if quota.tpm is not None:
            quota.tpm.add(now, input_tokens)
