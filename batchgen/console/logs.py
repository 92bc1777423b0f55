"""Logging for people and for schedulers: a text line per event, or one JSON object per line.

batchgen logs through the stdlib `logging` module under the `batchgen` logger. Every record that matters to an
operator carries an `event` name and its figures as `extra` fields (a row's id, status and HTTP status; a run's
counts and rates); the JSON format writes them as keys of the line's object, the text format only the message,
which states the same figures for a reader. The API key is never put in a message; as a second line of defence
every formatted line is passed through the key's `redact`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

from batchgen.console.format import counts_text
from batchgen.errors import ApiError, BatchgenError
from batchgen.job import Job
from batchgen.records import RunStats, Status
from batchgen.secret import ApiKey

LOGGER = "batchgen"
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")

log = logging.getLogger(f"{LOGGER}.run")

# Attributes every LogRecord has; anything else on a record came from `extra=` and is an event field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def configure(
    fmt: LogFormat = "text",
    level: str = "info",
    *,
    stream: TextIO | None = None,
    secrets: Sequence[ApiKey] = (),
) -> logging.Logger:
    """Send batchgen's records at `level` and above to `stream` (default: whatever `sys.stderr` is when a
    line is written) in format `fmt`; replaces the handler an earlier call installed.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else _CurrentStderr())
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler.setFormatter(_Redacting(formatter, [key.redact for key in secrets]))
    logger = logging.getLogger(LOGGER)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    # batchgen's lines are complete as they are: a root handler someone else configured must not repeat them.
    logger.propagate = False
    return logger


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The event fields a record carries (its `extra=` entries)."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


def timestamp(record: logging.LogRecord) -> str:
    """The record's time in UTC, ISO 8601 to the millisecond, e.g. 2026-11-25T16:07:50.123Z."""
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`TIME LEVEL message`, with the traceback of an unexpected exception below it."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{timestamp(record)} {record.levelname:<7} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, event, message, then the event's own fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": "log",
            "message": record.getMessage(),
        }
        document.update(fields(record))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class _Redacting(logging.Formatter):
    """Another formatter's output with every secret replaced."""

    def __init__(self, inner: logging.Formatter, redactions: Sequence[Callable[[str], str]]) -> None:
        super().__init__()
        self._inner = inner
        self._redactions = tuple(redactions)

    def format(self, record: logging.LogRecord) -> str:
        text = self._inner.format(record)
        for redact in self._redactions:
            text = redact(text)
        return text


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time: the live progress display swaps it for a proxy that
    prints above the display, and a test's capture swaps it too.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def failed(message: str, exit_code: int) -> None:
    """The `error` event: why a command stopped before or instead of running (a bad flag, job or input)."""
    log.error("%s", message, extra={"event": "error", "exit_code": exit_code})


def stopping(run_id: str, signal_name: str, *, in_flight: int, grace_s: float, again: str) -> None:
    """The `stopping` event: a first Ctrl-C / SIGTERM; nothing more is sent, requests out get the grace."""
    log.warning(
        "stopping on %s: no new requests; %s in flight get up to %gs to finish (%s to quit now)",
        signal_name,
        f"{in_flight:,}",
        grace_s,
        again,
        extra={
            "event": "stopping",
            "run_id": run_id,
            "signal": signal_name,
            "in_flight": in_flight,
            "grace_s": grace_s,
        },
    )


def quitting(run_id: str, signal_name: str, *, in_flight: int) -> None:
    """The `quitting` event: a second signal; requests still out are cancelled, what finished is written."""
    log.warning(
        "quitting on a second %s: %s request(s) still out are cancelled (the next run sends them); "
        "writing what finished",
        signal_name,
        f"{in_flight:,}",
        extra={"event": "quitting", "run_id": run_id, "signal": signal_name, "in_flight": in_flight},
    )


def run_started(run_id: str, job: Job, stats: RunStats) -> None:
    """The `run_started` event: which job, which model, how many rows to send, where results go."""
    total = "?" if stats.total_rows is None else f"{stats.total_rows:,}"
    log.info(
        "run %s started: %s, model %s, %s rows to send (%s already done), results in %s",
        run_id,
        job.file,
        job.model,
        total,
        f"{stats.skipped_rows:,}",
        job.output.path.resolve(),
        extra={
            "event": "run_started",
            "run_id": run_id,
            "job": str(job.file),
            "model": job.model,
            "rows_to_send": stats.total_rows,
            "skipped": stats.skipped_rows,
            "output": str(job.output.path.resolve()),
        },
    )


def run_finished(
    run_id: str,
    stats: RunStats,
    *,
    cost_usd: float | None,
    stopped_by: BatchgenError | None,
    exit_code: int,
    now: float | None = None,
) -> None:
    """The `run_finished` event: counts, tokens, average rates, cost, why it stopped and the exit code.

    Logged at INFO for exit 0, ERROR for an API or write error that stopped the job (3), WARNING otherwise.
    """
    elapsed = max((time.time() if now is None else now) - stats.started_at, 1e-9)
    usage = stats.usage
    output_tokens = (usage.candidates or 0) + (usage.thoughts or 0)
    level = logging.INFO if exit_code == 0 else logging.ERROR if exit_code == 3 else logging.WARNING
    cost = "" if cost_usd is None else f", ${cost_usd:,.6f}"
    why = "" if stopped_by is None else f"; stopped: {stopped_by}"
    log.log(
        level,
        "run %s finished with exit code %d: %s rows (%s) in %.1fs, %.1f rows/s%s%s",
        run_id,
        exit_code,
        f"{stats.done:,}",
        counts_text(stats.counts),
        elapsed,
        stats.done / elapsed,
        cost,
        why,
        extra={
            "event": "run_finished",
            "run_id": run_id,
            "exit_code": exit_code,
            "rows": stats.done,
            "skipped": stats.skipped_rows,
            "counts": {status.value: stats.counts[status] for status in reversed(Status) if stats.counts[status]},
            "elapsed_s": round(elapsed, 3),
            "rows_per_s": round(stats.done / elapsed, 3),
            "input_tokens_per_s": round((usage.prompt or 0) / elapsed, 1),
            "output_tokens_per_s": round(output_tokens / elapsed, 1),
            "tokens": usage.totals(),
            "attempts": stats.attempts,
            "responses": stats.responses,
            "reasks": stats.reasks,
            "rate_limited": stats.rate_limited,
            "cost_usd": None if cost_usd is None else round(cost_usd, 9),
            "stopped_by": None if stopped_by is None else type(stopped_by).__name__,
            "stop_reason": None if stopped_by is None else str(stopped_by),
            "http_status": stopped_by.http_status if isinstance(stopped_by, ApiError) else None,
        },
    )
