"""The last minute of admissions against one per-minute quota, kept request by request.

A per-minute quota such as Gemini's RPM or input TPM refuses a request when what it accepted over the last
60 seconds, plus the request, would exceed it. `MinuteWindow` keeps the same sum on the client side, so the
limiter never sends what such a server would refuse and knows to the millisecond when room frees up. A
server counting per calendar minute is less strict than this sliding window, so it is covered too.

The window is a minute unless told otherwise: a server may count a per-minute quota over a shorter window
holding rate x length / 60 (batchgen's local server does, with `--quota-window-s`, so tests and benchmarks
can run at the quota for seconds instead of minutes), and the client's window must then shrink with it.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

WINDOW: Final = 60.0
"""Gemini's RPM and TPM quotas count what arrived in the last minute."""

_MARGIN: Final = 1e-3
"""An admission stays in the window this long past the minute, so the server surely no longer counts it."""

_ERROR_WEIGHT: Final = 0.02
"""Weight of each settled request in the running mean and variance of estimate errors (~50 requests)."""

_ERROR_SIGMAS: Final = 2.0
"""Standard deviations of estimate noise the token reserve covers."""


class Entry:
    """One admitted request in a window: when, how much (corrected when settled), and its estimate."""

    __slots__ = ("amount", "at", "pending", "tag")

    def __init__(self, at: float, amount: float, tag: int | None) -> None:
        self.at = at
        self.amount = amount
        self.tag = tag
        self.pending = tag is not None


class MinuteWindow:
    """Everything admitted during the last `length` seconds (a minute), entry by entry: measure and hard guard.

    Memory is one entry per request of the last minute. An entry made with a `tag` (the request's token
    estimate) stays pending until `settle` gives the real count. The server counts the real size at once,
    so `ready_at` keeps a reserve over the pending estimates, learnt from the settled ones: their mean
    relative error (a bias adds up across requests) plus two standard deviations of the noise (which adds up
    as the square root of the sum of squares).
    """

    def __init__(self, length: float = WINDOW) -> None:
        self.length = length
        self._log: deque[Entry] = deque()
        self._unsettled: dict[int, deque[Entry]] = {}
        self.total = 0.0
        self._pending = 0.0
        self._pending_squares = 0.0
        self._settled = 0
        self._error_mean = 0.0
        self._error_var = 0.0

    def add(self, now: float, amount: float, tag: int | None = None) -> Entry:
        entry = Entry(now, amount, tag)
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
        while self._log and self._log[0].at + self.length + _MARGIN <= now:
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
                return entry.at + self.length + _MARGIN
        return self._log[-1].at + self.length + _MARGIN  # only an empty window has room: it goes alone

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

    def cancel(self, entry: Entry) -> None:
        """Take back an entry for a request that was never sent."""
        if entry.pending:
            self._unpend(entry)
        self.total -= entry.amount
        entry.amount = 0.0

    def _unpend(self, entry: Entry) -> None:
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
