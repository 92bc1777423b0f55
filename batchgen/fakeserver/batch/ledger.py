"""The ledger of the Files and Batch APIs: files moved, jobs by state, lines written and tokens billed.

Lines count when they are written to a job's output (the results file, or the inline responses), not when they
are answered: a job that fails or is cancelled without output delivers nothing, so it answers nothing. Keys
count the same way, per key across all jobs, so a test can check that each key was answered exactly once.
Batch usage is billed here, apart from the online ledger's (batch tokens cost half).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchgen.fakeserver.tokens import USAGE_FIELDS, Usage

FILE_COUNTS = ("uploaded", "uploaded_bytes", "generated", "generated_bytes", "downloads", "downloaded_bytes")
LINE_OUTCOMES = ("succeeded", "failed", "missing")


@dataclass(frozen=True, slots=True)
class BatchLedgerStats:
    """A snapshot of the ledger; `to_json()` gives the "files" and "batches" sections of GET /_fake/stats."""

    files: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys((*FILE_COUNTS, "deleted"), 0))
    created: int = 0
    cancelled: int = 0
    ended: Mapping[str, int] = field(default_factory=dict)
    deleted: Mapping[str, int] = field(default_factory=dict)
    lines: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    answers_by_key: Mapping[str, int] = field(default_factory=dict)
    errors_by_key: Mapping[str, int] = field(default_factory=dict)
    billed: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_FIELDS, 0))

    def to_json(self) -> dict[str, Any]:
        return {
            "files": dict(self.files),
            "batches": {
                "created": self.created,
                "cancelled": self.cancelled,
                "ended": dict(self.ended),
                "deleted": dict(self.deleted),
                "lines": {name: dict(counts) for name, counts in self.lines.items()},
                "answers_by_key": dict(self.answers_by_key),
                "errors_by_key": dict(self.errors_by_key),
                "billed": dict(self.billed),
            },
        }


class BatchLedger:
    """Live counters of the Files and Batch APIs, updated by their routes and by running jobs."""

    def __init__(self) -> None:
        self.files: Counter[str] = Counter(dict.fromkeys((*FILE_COUNTS, "deleted"), 0))
        self.created = 0
        self.cancelled = 0
        self.ended: Counter[str] = Counter()
        self.deleted: Counter[str] = Counter()
        self._lines: dict[str, Counter[str]] = {}
        self._answers: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._billed = dict.fromkeys(USAGE_FIELDS, 0)

    def __repr__(self) -> str:
        return f"<BatchLedger created={self.created} files={self.files['uploaded']}>"

    def line_written(self, batch: str, key: str | None, outcome: str, usage: Usage | None) -> None:
        """One line of `batch`'s output: "succeeded" (billed `usage`), "failed", or "missing" (left out)."""
        self._lines.setdefault(batch, Counter(dict.fromkeys(LINE_OUTCOMES, 0)))[outcome] += 1
        if key is not None and outcome != "missing":
            (self._answers if outcome == "succeeded" else self._errors)[key] += 1
        if usage is not None:
            billed = self._billed
            billed["promptTokenCount"] += usage.prompt
            billed["candidatesTokenCount"] += usage.candidates
            billed["thoughtsTokenCount"] += usage.thoughts
            billed["cachedContentTokenCount"] += usage.cached
            billed["toolUsePromptTokenCount"] += usage.tool_use
            billed["totalTokenCount"] += usage.total

    def snapshot(self) -> BatchLedgerStats:
        return BatchLedgerStats(
            files=dict(self.files),
            created=self.created,
            cancelled=self.cancelled,
            ended=dict(self.ended),
            deleted=dict(self.deleted),
            lines={name: dict(counts) for name, counts in self._lines.items()},
            answers_by_key=dict(self._answers),
            errors_by_key=dict(self._errors),
            billed=dict(self._billed),
        )
