"""Live counters of a run: what the progress display, the logs and the manifest report."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from batchgen.records import Result, Status, Usage


@dataclass(slots=True)
class RunStats:
    """Rows finished by status, tokens billed, requests in flight; updated by the runner as rows finish."""

    total_rows: int | None = None
    skipped_rows: int = 0
    counts: Counter[Status] = field(default_factory=Counter)
    usage: Usage = field(default_factory=Usage)
    attempts: int = 0
    responses: int = 0
    reasks: int = 0
    rate_limited: int = 0
    in_flight: int = 0
    started_at: float = field(default_factory=time.time)

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def record(self, result: Result) -> None:
        self.counts[result.status] += 1
        self.usage = self.usage + result.usage
        self.attempts += result.attempts
        self.responses += result.responses
        self.reasks += result.reasks
