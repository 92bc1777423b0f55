"""The server's ledger: what it received, what it answered, which faults it injected and what it billed.

Billing counts every 200 response that carried usageMetadata and was written out in full: for a stream, the
final event's usage, once. Cut streams, dropped connections and bodies without usage bill nothing, so a
client that adds up the usage of the responses it fully received should reach exactly these totals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchgen.fakeserver.tokens import USAGE_FIELDS, Usage


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
        }


class Ledger:
    """Live counters, updated by the routes; single-threaded like the event loop that owns them."""

    def __init__(self) -> None:
        self.requests = 0
        self.disconnects = 0
        self.billed_responses = 0
        self.by_method: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        self.quota_rejections: Counter[str] = Counter()
        self._billed = dict.fromkeys(USAGE_FIELDS, 0)

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
        )
