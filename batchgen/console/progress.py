"""What a running job is doing, at a glance: a live display at a terminal, a log line every N seconds elsewhere.

Both read the same `Reading`: rows done of the rows to send (with an ETA), rows/s and tokens/s in and out over
the last half minute, the limiter's state (pacing for RPM or TPM, backing off after a 429), counts by status,
rows in flight and the running cost, and what the carrier has to say when rows take long (Batch API jobs and
their states; Flex calls that take minutes). A reading is taken from the run's live counters (`stats.RunStats`),
the limiter's snapshot, the budget's spend and the carrier's note; nothing here touches the run itself.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from batchgen.console.format import counts_text, duration
from batchgen.records import RunStats, Status

log = logging.getLogger(__name__)

Mode = Literal["live", "log"]
DEFAULT_INTERVAL_S = 10.0
# Rates (and so the ETA) are measured over this much recent time: long enough to smooth the limiter's pacing,
# short enough to follow a 429 back-off or a change of pace.
WINDOW_S = 30.0
LIVE_REFRESH_S = 0.5

_STATUS_STYLE = {Status.OK: "green", Status.FAILED: "red"}


class RateState(Protocol):
    """The limiter's state as the display shows it (`limiter.LimiterSnapshot`)."""

    @property
    def state(self) -> str: ...
    @property
    def waiting(self) -> int: ...
    @property
    def rpm(self) -> float | None: ...
    @property
    def tpm(self) -> float | None: ...
    @property
    def achieved_rpm(self) -> float: ...
    @property
    def achieved_tpm(self) -> float: ...
    @property
    def rate_limited(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Watch:
    """Where a reading comes from: the run's counters, the limiter, the budget's spend when priced, and
    whether the run is stopping."""

    stats: RunStats
    limiter: Callable[[], RateState]
    spent_usd: Callable[[], float] | None = None
    note: Callable[[], str | None] | None = None
    stopping: Callable[[], bool] = lambda: False


@dataclass(frozen=True, slots=True)
class Reading:
    """A run at one moment; rates are per second over the last `WINDOW_S` seconds."""

    elapsed_s: float
    done: int
    total: int | None
    skipped: int
    in_flight: int
    counts: Mapping[Status, int]
    rows_per_s: float
    input_tokens_per_s: float
    output_tokens_per_s: float
    limiter: RateState
    cost_usd: float | None
    note: str | None = None
    # After Ctrl-C / SIGTERM / a fatal error: nothing more is sent, the requests out are finishing.
    stopping: bool = False

    @property
    def eta_s(self) -> float | None:
        """Seconds until every row is done at the current pace; None when unknown (no pace, no total)."""
        if self.total is None or self.rows_per_s <= 0:
            return None
        return max(0, self.total - self.done) / self.rows_per_s

    @property
    def fraction(self) -> float | None:
        if self.total is None:
            return None
        return 1.0 if self.total == 0 else min(1.0, self.done / self.total)


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    done: int
    input_tokens: int
    output_tokens: int


@dataclass(slots=True)
class _Window:
    """Counters sampled over the last `span_s` seconds; rates are the change across the window."""

    span_s: float
    samples: deque[_Sample] = field(default_factory=deque)

    def rates(self, sample: _Sample) -> tuple[float, float, float]:
        self.samples.append(sample)
        # Keep one sample at or before the window's start, so the window spans `span_s` once it has filled.
        while len(self.samples) > 2 and self.samples[1].at <= sample.at - self.span_s:
            self.samples.popleft()
        first = self.samples[0]
        seconds = sample.at - first.at
        if seconds <= 0:
            return 0.0, 0.0, 0.0
        return (
            (sample.done - first.done) / seconds,
            (sample.input_tokens - first.input_tokens) / seconds,
            (sample.output_tokens - first.output_tokens) / seconds,
        )


class Progress:
    """Takes readings of one run; the first reading (at construction) is the start of the clock."""

    def __init__(self, watch: Watch, *, clock: Callable[[], float] = time.monotonic, window_s: float = WINDOW_S):
        self._watch = watch
        self._clock = clock
        self._started = clock()
        self._window = _Window(window_s)
        self._window.rates(self._sample(self._started))

    def __repr__(self) -> str:
        return f"Progress(done={self._watch.stats.done}, elapsed={self._clock() - self._started:.1f}s)"

    def read(self) -> Reading:
        now = self._clock()
        stats = self._watch.stats
        rows, tokens_in, tokens_out = self._window.rates(self._sample(now))
        spent = self._watch.spent_usd
        note = self._watch.note
        return Reading(
            elapsed_s=now - self._started,
            done=stats.done,
            total=stats.total_rows,
            skipped=stats.skipped_rows,
            in_flight=stats.in_flight,
            counts={status: stats.counts[status] for status in reversed(Status) if stats.counts[status]},
            rows_per_s=rows,
            input_tokens_per_s=tokens_in,
            output_tokens_per_s=tokens_out,
            limiter=self._watch.limiter(),
            cost_usd=None if spent is None else spent(),
            note=None if note is None else note(),
            stopping=self._watch.stopping(),
        )

    def _sample(self, at: float) -> _Sample:
        stats = self._watch.stats
        usage = stats.usage
        # Output tokens are what is billed as output: the candidates and the thinking.
        return _Sample(at, stats.done, usage.prompt or 0, (usage.candidates or 0) + (usage.thoughts or 0))


def _rows_text(reading: Reading) -> str:
    text = f"{reading.done:,} rows" if reading.total is None else f"{reading.done:,}/{reading.total:,} rows"
    fraction = reading.fraction
    if fraction is not None:
        text += f" ({fraction:.0%})"
    if reading.skipped:
        text += f" +{reading.skipped:,} done before"
    return text


def _limiter_text(limiter: RateState) -> str:
    parts = [limiter.state]
    if limiter.waiting:
        parts.append(f"{limiter.waiting:,} waiting")
    parts.append(_pace("RPM", limiter.achieved_rpm, limiter.rpm))
    parts.append(_pace("TPM", limiter.achieved_tpm, limiter.tpm))
    if limiter.rate_limited:
        parts.append(f"{limiter.rate_limited:,} x 429")
    return ", ".join(parts)


def _pace(name: str, achieved: float, limit: float | None) -> str:
    return f"{achieved:,.0f} {name}" if limit is None else f"{achieved:,.0f}/{limit:,.0f} {name}"


def line(reading: Reading) -> str:
    """The one-line form, for a log without a terminal."""
    eta = reading.eta_s
    cost = "" if reading.cost_usd is None else f" | ${reading.cost_usd:,.6f}"
    note = "" if reading.note is None else f" | {reading.note}"
    state = f"stopping, {reading.in_flight:,} in flight finishing" if reading.stopping else ""
    return (
        f"progress{f' ({state})' if state else ''}: {_rows_text(reading)}, "
        f"ETA {'?' if eta is None or reading.stopping else duration(eta)} | "
        f"{reading.rows_per_s:,.1f} rows/s, tokens/s in {reading.input_tokens_per_s:,.0f} "
        f"out {reading.output_tokens_per_s:,.0f} | limiter: {_limiter_text(reading.limiter)} | "
        f"{counts_text(reading.counts)} | {reading.in_flight:,} in flight{cost}{note}"
    )


def line_fields(reading: Reading) -> dict[str, Any]:
    """The same figures as event fields, for the JSON log."""
    limiter = reading.limiter
    eta = reading.eta_s
    return {
        "event": "progress",
        "stopping": reading.stopping,
        "done": reading.done,
        "total": reading.total,
        "skipped": reading.skipped,
        "in_flight": reading.in_flight,
        "counts": {status.value: count for status, count in reading.counts.items()},
        "elapsed_s": round(reading.elapsed_s, 3),
        "eta_s": None if eta is None else round(eta, 1),
        "rows_per_s": round(reading.rows_per_s, 3),
        "input_tokens_per_s": round(reading.input_tokens_per_s, 1),
        "output_tokens_per_s": round(reading.output_tokens_per_s, 1),
        "limiter": {
            "state": limiter.state,
            "waiting": limiter.waiting,
            "rpm": limiter.rpm,
            "tpm": limiter.tpm,
            "achieved_rpm": round(limiter.achieved_rpm, 1),
            "achieved_tpm": round(limiter.achieved_tpm, 1),
            "rate_limited": limiter.rate_limited,
        },
        "cost_usd": None if reading.cost_usd is None else round(reading.cost_usd, 9),
        "note": reading.note,
    }


def log_reading(reading: Reading) -> None:
    log.info("%s", line(reading), extra=line_fields(reading))


def panel(reading: Reading) -> RenderableType:
    """The live display: a progress bar, then speed, limiter, statuses and cost, one line each."""
    eta = reading.eta_s
    head = Table.grid(padding=(0, 1))
    head.add_row(
        ProgressBar(total=reading.total or None, completed=reading.done, width=40),
        Text(_rows_text(reading), style="bold"),
        Text(f"ETA {'?' if eta is None else duration(eta)}", style="cyan"),
        Text(f"elapsed {duration(reading.elapsed_s)}", style="dim"),
    )
    body = Table.grid(padding=(0, 2))
    body.add_column(style="dim", justify="right")
    body.add_column()
    body.add_row(
        "speed",
        f"{reading.rows_per_s:,.1f} rows/s   tokens/s in {reading.input_tokens_per_s:,.0f} "
        f"out {reading.output_tokens_per_s:,.0f}   {reading.in_flight:,} in flight",
    )
    state = reading.limiter.state
    body.add_row("limiter", Text(_limiter_text(reading.limiter), style="" if state == "ok" else "yellow"))
    statuses = Text()
    for status, count in reading.counts.items():
        statuses.append(f"{status.value} {count:,}  ", style=_STATUS_STYLE.get(status, "yellow"))
    body.add_row("rows", statuses if reading.counts else Text("none yet", style="dim"))
    if reading.cost_usd is not None:
        body.add_row("cost", f"${reading.cost_usd:,.6f} so far")
    if reading.note is not None:
        body.add_row("waiting on", reading.note)
    if reading.stopping:
        notice = (
            f"nothing more is sent; {reading.in_flight:,} request(s) out are finishing (interrupt again to quit now)"
        )
        body.add_row(Text("stopping", style="bold red"), Text(notice, style="red"))
    return Group(head, body)


async def show(
    progress: Progress,
    mode: Mode,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    console: Console | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> None:
    """Show `progress` until cancelled: a live display (`live`) or a log line every `interval_s` (`log`)."""
    if mode == "log":
        while True:
            await sleep(interval_s)
            log_reading(progress.read())
    else:
        await _live(progress, console, sleep)


async def _live(progress: Progress, console: Console | None, sleep: Callable[[float], Awaitable[None]]) -> None:
    # Log lines written to stderr are printed above the display when stderr is the same terminal; when stderr
    # goes to a file they must go there, not be drawn on screen.
    redirect = sys.stderr.isatty()
    with Live(panel(progress.read()), console=console, auto_refresh=False, redirect_stderr=redirect) as live:
        # Refreshed here, on the event loop, not by rich's thread: readings must not race the run's counters.
        try:
            while True:
                await sleep(LIVE_REFRESH_S)
                live.update(panel(progress.read()), refresh=True)
        finally:
            live.update(panel(progress.read()), refresh=True)  # the final figures stay on screen
