"""Progress: the log line a scheduler sees every N seconds, and the live display, from a fake clock and fake
counters (no sleeping)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
from rich.console import Console

from batchgen.console import logs, progress
from batchgen.console.progress import Progress, Watch
from batchgen.records import Result, RunStats, Status, Usage


@dataclass(frozen=True)
class LimiterState:
    state: str = "ok"
    waiting: int = 0
    rpm: float | None = None
    tpm: float | None = None
    achieved_rpm: float = 0.0
    achieved_tpm: float = 0.0
    rate_limited: int = 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Stop(Exception):
    """Ends a display loop from inside its sleep."""


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    logs.configure("text", "info", stream=buffer)
    yield buffer
    logging.getLogger(logs.LOGGER).handlers.clear()


def finish(stats: RunStats, count: int, status: Status = Status.OK, **usage: int) -> None:
    for _ in range(count):
        stats.sent()
        stats.answered(Usage.of_counts(usage))
        stats.record(Result(id="x", status=status, usage=Usage.of_counts(usage), attempts=1, responses=1))


BUSY = LimiterState(
    state="waiting on RPM", waiting=3, rpm=300, tpm=None, achieved_rpm=300, achieved_tpm=5000, rate_limited=2
)


def busy_run(clock: Clock) -> tuple[Progress, RunStats]:
    """200 rows to send; after 10 s, 48 ok and 2 failed, 5,000 prompt and 1,500 output tokens, 8 in flight."""
    stats = RunStats(total_rows=200)
    run = Progress(Watch(stats, lambda: BUSY, lambda: 0.0123), clock=clock)
    clock.now += 10
    finish(stats, 48, prompt=100, candidates=20, thoughts=10)
    finish(stats, 2, Status.FAILED, prompt=100, candidates=20, thoughts=10)
    stats.in_flight = 8
    return run, stats


def test_the_log_line_states_rows_eta_speed_limiter_statuses_and_cost() -> None:
    """Rates are per second since the last reading in the window; the ETA follows the row rate."""
    clock = Clock()
    run, _ = busy_run(clock)
    reading = run.read()
    assert reading.rows_per_s == 5.0 and reading.eta_s == 30.0
    assert progress.line(reading) == (
        "progress: 50/200 rows (25%), ETA 30s | 5.0 rows/s, tokens/s in 500 out 150 | "
        "limiter: waiting on RPM, 3 waiting, 300/300 RPM, 5,000 TPM, 2 x 429 | ok 48, failed 2 | "
        "8 in flight | $0.012300"
    )


@pytest.mark.anyio
async def test_without_a_terminal_a_line_is_logged_every_interval(text_log: io.StringIO) -> None:
    """One line per interval, in the text log format (UTC time, level, the line); the clock moves only when
    the display sleeps."""
    clock = Clock()
    stats = RunStats(total_rows=100, skipped_rows=20)
    run = Progress(Watch(stats, LimiterState), clock=clock)
    naps: list[float] = []

    async def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            raise Stop
        clock.now += seconds
        finish(stats, 10, prompt=40, candidates=5)

    with pytest.raises(Stop):
        await progress.show(run, "log", interval_s=10, sleep=sleep)
    assert naps == [10, 10, 10]
    lines = text_log.getvalue().splitlines()
    assert len(lines) == 2
    stamp, level, message = lines[1].split(maxsplit=2)
    assert stamp.endswith("Z") and level == "INFO"
    assert message == (
        "progress: 20/100 rows (20%) +20 done before, ETA 1m20s | 1.0 rows/s, tokens/s in 40 out 5 | "
        "limiter: ok, 0 RPM, 0 TPM | ok 20 | 0 in flight"
    )


@pytest.mark.anyio
async def test_json_progress_lines_carry_the_figures_as_fields() -> None:
    buffer = io.StringIO()
    logs.configure("json", stream=buffer)
    clock = Clock()
    run, _ = busy_run(clock)
    calls = 0

    async def sleep(seconds: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Stop

    try:
        with pytest.raises(Stop):
            await progress.show(run, "log", interval_s=5, sleep=sleep)
    finally:
        logging.getLogger(logs.LOGGER).handlers.clear()
    (line,) = map(orjson.loads, buffer.getvalue().splitlines())
    assert line["event"] == "progress" and line["level"] == "info"
    assert line["done"] == 50 and line["total"] == 200 and line["in_flight"] == 8
    assert line["counts"] == {"ok": 48, "failed": 2}
    assert line["rows_per_s"] == 5.0 and line["eta_s"] == 30.0
    assert line["input_tokens_per_s"] == 500.0 and line["output_tokens_per_s"] == 150.0
    assert line["limiter"]["state"] == "waiting on RPM" and line["limiter"]["rate_limited"] == 2
    assert line["cost_usd"] == 0.0123
    assert line["message"].startswith("progress: 50/200 rows")


def test_rates_cover_the_last_window_only() -> None:
    """A burst long ago does not inflate the current rate: rates are measured over the last 30 s."""
    clock = Clock()
    stats = RunStats(total_rows=1000)
    run = Progress(Watch(stats, LimiterState), clock=clock, window_s=30)
    clock.now += 10
    finish(stats, 300)
    assert run.read().rows_per_s == 30.0
    for _ in range(6):  # one row per second for a minute, read every 10 s
        clock.now += 10
        finish(stats, 10)
        reading = run.read()
    assert reading.rows_per_s == pytest.approx(1.0)
    assert reading.eta_s == pytest.approx(640.0)


def test_no_pace_or_no_total_means_no_eta() -> None:
    clock = Clock()
    stats = RunStats(total_rows=None)
    run = Progress(Watch(stats, LimiterState), clock=clock)
    assert run.read().eta_s is None
    clock.now += 5
    finish(stats, 5)
    reading = run.read()
    assert reading.eta_s is None and reading.fraction is None
    assert progress.line(reading).startswith("progress: 5 rows, ETA ?")


def test_the_live_panel_shows_the_same_figures() -> None:
    clock = Clock()
    run, _ = busy_run(clock)
    console = Console(file=io.StringIO(), width=120, color_system=None, force_terminal=False)
    console.print(progress.panel(run.read()))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    for text in ("50/200 rows (25%)", "ETA 30s", "5.0 rows/s", "in 500 out 150", "waiting on RPM", "2 x 429"):
        assert text in output
    assert "ok 48" in output and "failed 2" in output and "$0.012300 so far" in output


def test_what_slow_rows_wait_on_is_shown_in_the_line_the_fields_and_the_panel() -> None:
    """A carrier whose rows take minutes (Batch API jobs, Flex calls) says so, so a quiet run reads as normal."""
    notes = iter(["batch: 2 jobs running", "batch: 1 job running"])
    run = Progress(Watch(RunStats(total_rows=10), LimiterState, note=lambda: next(notes)), clock=Clock())
    assert progress.line(run.read()).endswith("| batch: 2 jobs running")
    reading = run.read()
    assert progress.line_fields(reading)["note"] == "batch: 1 job running"
    console = Console(file=io.StringIO(), width=120, color_system=None, force_terminal=False)
    console.print(progress.panel(reading))
    assert "waiting on  batch: 1 job running" in console.file.getvalue()  # type: ignore[attr-defined]


def test_a_stopping_run_says_so_in_the_panel_the_log_line_and_the_json_fields() -> None:
    """After Ctrl-C the display must not look like a run going on: it says it is stopping and how many
    requests are still out, and drops the ETA."""
    clock = Clock()
    stats = RunStats(total_rows=200)
    stopping = False
    run = Progress(Watch(stats, lambda: BUSY, stopping=lambda: stopping), clock=clock)
    clock.now += 10
    finish(stats, 50)
    stats.in_flight = 3
    assert "stopping" not in progress.line(run.read())
    stopping = True
    reading = run.read()
    assert progress.line(reading).startswith("progress (stopping, 3 in flight finishing): 50/200 rows (25%), ETA ? |")
    assert progress.line_fields(reading)["stopping"] is True
    console = Console(file=io.StringIO(), width=140, color_system=None, force_terminal=False)
    console.print(progress.panel(reading))
    assert "stopping  nothing more is sent; 3 request(s) out are finishing" in console.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_the_live_display_redraws_until_cancelled_and_keeps_the_last_figures() -> None:
    clock = Clock()
    stats = RunStats(total_rows=10)
    run = Progress(Watch(stats, LimiterState), clock=clock)
    console = Console(file=io.StringIO(), width=120, force_terminal=True, color_system=None)
    naps = 0

    async def sleep(seconds: float) -> None:
        nonlocal naps
        naps += 1
        if naps == 3:
            finish(stats, 10)
            raise Stop
        clock.now += seconds

    with pytest.raises(Stop):
        await progress.show(run, "live", console=console, sleep=sleep)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "10/10 rows (100%)" in output
