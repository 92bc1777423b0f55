"""The ledger of the Files API: files uploaded, generated, downloaded and deleted, with their bytes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FILE_COUNTS = ("uploaded", "uploaded_bytes", "generated", "generated_bytes", "downloads", "downloaded_bytes")


@dataclass(frozen=True, slots=True)
class BatchLedgerStats:
    """A snapshot of the ledger; `to_json()` gives the "files" section of GET /_fake/stats."""

    files: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys((*FILE_COUNTS, "deleted"), 0))

    def to_json(self) -> dict[str, Any]:
        return {"files": dict(self.files)}


class BatchLedger:
    """Live counters of the Files API, updated by its routes."""

    def __init__(self) -> None:
        self.files: Counter[str] = Counter(dict.fromkeys((*FILE_COUNTS, "deleted"), 0))

    def __repr__(self) -> str:
        return f"<BatchLedger files={self.files['uploaded']}>"

    def snapshot(self) -> BatchLedgerStats:
        return BatchLedgerStats(files=dict(self.files))
