"""MinuteWindow: the last minute of admissions, as a sliding-window quota counts them."""

from __future__ import annotations

import pytest

from batchgen.online.limiter.window import WINDOW, MinuteWindow


def test_entries_count_for_a_minute_then_leave() -> None:
    """An admission counts while the server may still count it, and not a moment after."""
    window = MinuteWindow()
    window.add(0.0, 10)
    window.add(30.0, 5)
    window.expire(59.9)
    assert window.total == 15
    window.expire(60.01)
    assert window.total == 5
    window.expire(90.01)
    assert window.total == 0


def test_a_shorter_window_forgets_sooner() -> None:
    """A window of `length` seconds (a server counting a per-minute quota over a shorter window) keeps an
    admission that long, and says when room frees up on the same scale."""
    window = MinuteWindow(length=2.0)
    window.add(0.0, 10)
    window.add(1.0, 10)
    assert window.ready_at(1.5, 10, allowed=20) == pytest.approx(2.0, abs=0.01)
    window.expire(2.01)
    assert window.total == 10


def test_ready_when_enough_old_entries_age_out() -> None:
    """A request that does not fit waits exactly until the oldest entries that make room leave the window."""
    window = MinuteWindow()
    for second in range(10):
        window.add(float(second), 10)
    assert window.ready_at(10.0, 10, allowed=110) == 10.0
    assert window.ready_at(10.0, 25, allowed=110) == pytest.approx(1.0 + WINDOW, abs=0.01)


def test_a_request_above_the_limit_waits_for_an_empty_window() -> None:
    """A request larger than the whole limit fits only once nothing else is in the window: it goes alone."""
    window = MinuteWindow()
    window.add(0.0, 10)
    window.add(5.0, 10)
    assert window.ready_at(6.0, 1_000, allowed=100) == pytest.approx(5.0 + WINDOW, abs=0.01)
    assert MinuteWindow().ready_at(6.0, 1_000, allowed=100) == 6.0


def test_settle_refunds_the_request_itself() -> None:
    """A request that used fewer tokens than estimated frees the difference at once, for its own minute."""
    window = MinuteWindow()
    window.add(0.0, 100, tag=100)
    window.settle(2.0, 100, 40)
    assert window.total == 40
    window.expire(60.01)
    assert window.total == 0


def test_extra_tokens_of_a_lone_estimate_are_charged_on_the_request() -> None:
    """Underestimated by itself: the extra is added to the request's entry and leaves with it."""
    window = MinuteWindow()
    window.add(0.0, 100, tag=100)
    window.settle(10.0, 100, 150)
    assert window.total == 150
    window.expire(60.01)
    assert window.total == 0


def test_extra_tokens_of_a_shared_estimate_are_charged_at_settle_time() -> None:
    """With two pending requests of the same estimate, the extra is charged now, so it never leaves early."""
    window = MinuteWindow()
    window.add(0.0, 100, tag=100)
    window.add(5.0, 100, tag=100)
    window.settle(10.0, 100, 150)
    window.expire(65.01)
    assert window.total == 50  # both requests left; the extra, charged at 10 s, stays until 70 s
    window.expire(70.01)
    assert window.total == 0


def test_cancel_takes_an_entry_back() -> None:
    """An admission cancelled before it was sent no longer counts."""
    window = MinuteWindow()
    entry = window.add(0.0, 100, tag=100)
    window.add(1.0, 50, tag=50)
    window.cancel(entry)
    assert window.total == 50
    window.settle(2.0, 100, 10)  # no pending request of that estimate is left to refund
    assert window.total == 50


def test_pending_estimates_keep_a_reserve_learnt_from_errors() -> None:
    """Once estimates have proved low, room is kept for pending ones turning out larger than estimated."""
    learnt = MinuteWindow()
    for second in range(20):
        learnt.add(float(second), 100, tag=100)
        learnt.settle(second + 0.5, 100, 130)  # every estimate 30 % low
    fresh = MinuteWindow()
    for window in (learnt, fresh):
        window.expire(100.0)
        window.add(100.0, 500, tag=500)
    assert fresh.ready_at(100.0, 400, allowed=1_000) == 100.0
    assert learnt.ready_at(100.0, 400, allowed=1_000) > 100.0  # 500 + 400 could really be 1_170
