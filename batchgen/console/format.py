"""Numbers for reading, the same way everywhere they are shown: dollars, durations, counts by status."""

from __future__ import annotations

from collections.abc import Mapping

from batchgen.records import Status


def usd(value: float) -> str:
    """Dollars for reading, to the micro-dollar so that small test runs do not show as $0.00."""
    return f"${value:,.6f}"


def duration(seconds: float) -> str:
    """`45s`, `4m05s`, `2h03m`: a duration for reading."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def counts_text(counts: Mapping[Status, int]) -> str:
    """`ok 97, failed 3`: the non-zero counts by status, usable rows first, for messages."""
    shown = [f"{status.value} {counts[status]:,}" for status in reversed(Status) if counts.get(status)]
    return ", ".join(shown) or "no rows"
