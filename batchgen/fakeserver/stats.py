"""The server's ledger: what it received, what it answered, which faults it injected and what it billed.

Billing counts every 200 response that carried usageMetadata and was written out in full: for a stream, the
final event's usage, once. Cut streams, dropped connections and bodies without usage bill nothing, so a
client that adds up the usage of the responses it fully received should reach exactly these totals.

Admissions are the generate requests the quotas let through (all of them when no quota is set), whatever
happened next: what a quota counts. They are kept per second since the server started, with the first and
last exact times, so a client's achieved rate can be measured where the quota measures it.

The Files and Batch APIs keep their own sections ("files", "batches": see `batch.ledger`; batch tokens are
billed there, not above), and so do the service tiers ("tiers": see `tiers`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchgen.fakeserver.batch.ledger import BatchLedger, BatchLedgerStats
from batchgen.fakeserver.tiers import TierLedger, TierStats
from batchgen.fakeserver.tokens import USAGE_FIELDS, Usage


@dataclass(frozen=True, slots=True)
class Admissions:
    """Generate requests admitted past the quotas: totals, first and last time, and a per-second timeline.

    Times are seconds since the server started; `per_second[k]` is (requests, input tokens) admitted during
    second k, for the seconds that admitted any.
    """

    requests: int = 0
    tokens: int = 0
    first_s: float | None = None
    last_s: float | None = None
    per_second: Mapping[int, tuple[int, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "tokens": self.tokens,
            "first_s": self.first_s,
            "last_s": self.last_s,
            "per_second": {str(k): list(v) for k, v in sorted(self.per_second.items())},
        }


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of the ledger; `to_json()` is the body of GET /_fake/stats."""

    requests: int = 0
    requests_by_method: Mapping[str, int] = field(default_factory=dict)
    responses_by_status: Mapping[int, int] = field(default_factory=dict)
    faults: Mapping[str, int] = field(default_factory=dict)
    quota_rejections: Mapping[str, int] = field(default_factory=dict)
    disconnects: int = 0
    billed_responses: int = 0
    billed: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_FIELDS, 0))
    admissions: Admissions = field(default_factory=Admissions)
    batch: BatchLedgerStats = field(default_factory=BatchLedgerStats)
    tiers: TierStats = field(default_factory=TierStats)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "requests_by_method": dict(self.requests_by_method),
            "responses_by_status": {str(code): n for code, n in sorted(self.responses_by_status.items())},
            "faults": dict(self.faults),
            "quota_rejections": dict(self.quota_rejections),
            "disconnects": self.disconnects,
            "billed_responses": self.billed_responses,
            "billed": dict(self.billed),
            "admissions": self.admissions.to_json(),
            **self.batch.to_json(),
            "tiers": self.tiers.to_json(),
        }


class Ledger:
    """Live counters, updated by the routes; single-threaded like the event loop that owns them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._origin = clock()
        self.requests = 0
        self.disconnects = 0
        self.billed_responses = 0
        self.by_method: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        self.quota_rejections: Counter[str] = Counter()
        self._billed = dict.fromkeys(USAGE_FIELDS, 0)
        self._admitted = 0
        self._admitted_tokens = 0
        self._first: float | None = None
        self._last: float | None = None
        self._per_second: dict[int, list[int]] = {}
        self.batch = BatchLedger()
        self.tiers = TierLedger()

    def __repr__(self) -> str:
        return f"<Ledger requests={self.requests} billed_responses={self.billed_responses}>"

    def bill(self, usage: Usage) -> None:
        """Add one fully sent response's usage."""
        self.billed_responses += 1
        billed = self._billed
        billed["promptTokenCount"] += usage.prompt
        billed["candidatesTokenCount"] += usage.candidates
        billed["thoughtsTokenCount"] += usage.thoughts
        billed["cachedContentTokenCount"] += usage.cached
        billed["toolUsePromptTokenCount"] += usage.tool_use
        billed["totalTokenCount"] += usage.total

    def admit(self, input_tokens: int) -> None:
        """Record one generate request the quotas let through, now."""
        at = self._clock() - self._origin
        if self._first is None:
            self._first = at
        self._last = at
        self._admitted += 1
        self._admitted_tokens += input_tokens
        second = self._per_second.setdefault(int(at), [0, 0])
        second[0] += 1
        second[1] += input_tokens

    def snapshot(self) -> Stats:
        return Stats(
            requests=self.requests,
            requests_by_method=dict(self.by_method),
            responses_by_status=dict(self.by_status),
            faults=dict(self.faults),
            quota_rejections=dict(self.quota_rejections),
            disconnects=self.disconnects,
            billed_responses=self.billed_responses,
            billed=dict(self._billed),
            admissions=Admissions(
                requests=self._admitted,
                tokens=self._admitted_tokens,
                first_s=self._first,
                last_s=self._last,
                per_second={k: (v[0], v[1]) for k, v in self._per_second.items()},
            ),
            batch=self.batch.snapshot(),
            tiers=self.tiers.snapshot(),
        )
