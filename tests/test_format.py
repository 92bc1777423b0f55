"""Numbers for reading: the same dollars, durations and counts wherever they are shown."""

from __future__ import annotations

import pytest

from batchgen.console.format import counts_text, duration, usd
from batchgen.records import Status


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0.4, "0s", id="zero"),
        pytest.param(45, "45s", id="seconds"),
        pytest.param(245, "4m05s", id="minutes"),
        pytest.param(7380, "2h03m", id="hours"),
    ],
)
def test_durations_read_naturally(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_counts_text_lists_usable_rows_first_and_skips_zeros() -> None:
    assert counts_text({Status.FAILED: 3, Status.OK: 97, Status.BLOCKED: 0}) == "ok 97, failed 3"
    assert counts_text({}) == "no rows"


def test_dollars_show_micro_dollars() -> None:
    """Small test runs must not read $0.00."""
    assert usd(0.0000123) == "$0.000012"
    assert usd(1234.5) == "$1,234.500000"
