"""Time as an input: what batchgen's pacing reads the time from and sets its timers on.

The limiter never calls `time.monotonic()` or `asyncio.sleep()` itself; it asks a `Clock`. Production uses
`LoopClock`, the running event loop's own monotonic clock, so a timer set through it wakes exactly when the
loop's `call_at` would. A test or a simulation swaps in another clock (or runs the loop in virtual time) and
moves time forward without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A scheduled callback that can still be called off."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """A monotonic time source in seconds, plus one-shot timers on the same time base."""

    def now(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer: ...


class LoopClock:
    """The running asyncio loop's clock; looked up on every call, so it can be built before the loop runs."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_at(when, callback)

    def __repr__(self) -> str:
        return "LoopClock()"
