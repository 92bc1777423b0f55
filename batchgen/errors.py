"""Every error batchgen raises, grouped by what the caller does next.

    BatchgenError
    ├── ConfigError              fix the job file or the flags, then rerun (exit 2; nothing was sent)
    │   └── SchemaError          a response schema the API would reject (file + JSON pointer)
    ├── InputError               the input cannot be read at all (file, line/row)
    ├── OutputError              the results folder cannot be written (disk full, permissions): stop, keep parts
    ├── BudgetExhausted          the run's cost would pass max_cost_usd: stop taking rows (exit 4), rerun to resume
    ├── Interrupted              SIGINT / SIGTERM: stop taking rows (exit 130 / 143), rerun to resume
    └── ApiError                 the API answered with an error, or not at all (HTTP status when there was one)
        ├── RetryableError       worth another attempt after a wait
        │   ├── RateLimited      429 RESOURCE_EXHAUSTED, per-minute (or unnamed) quota
        │   ├── ServerError      500 / 502 / 503 / 504
        │   ├── TransportError   timeout, connection refused or reset, stream cut short (`connect`: no
        │   │                    connection could be made at all: refused, DNS, TLS)
        │   └── MalformedResponse  HTTP 200 whose body is not a GenerateContentResponse
        ├── RequestRejected      400 / 404 / 413 ... for this request: the row fails, the job goes on
        └── FatalApiError        the whole job must stop (exit 3)
            ├── AuthError        401 / 403, or 400 with reason API_KEY_INVALID
            ├── JobRejected      the API refuses the job's request itself (unknown model, same 400 on the first rows)
            ├── Unreachable      no connection to base_url on any of the first requests (refused, DNS, TLS)
            └── QuotaExhausted   a per-day quota is spent: resume after it resets

Errors carry their context as attributes so callers never parse messages. `ExitCode` is what a run that
ended on each of them exits with.
"""

from __future__ import annotations

import signal
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """A run's exit code, for schedulers (also recorded in the results folder's manifest)."""

    OK = 0
    FAILED_ROWS = 1
    """Completed, but no row of the job ended `ok`, or more of its rows ended `failed` than `[limits]
    max_failed_fraction` allows (default 0.1)."""
    CONFIG = 2
    """Usage or configuration error (job file, flags, schema, input, a folder another run holds): nothing sent."""
    FATAL = 3
    """Stopped by an auth error, a rejected job, a spent daily quota or a write error (resumable)."""
    COST = 4
    """Stopped by the cost cap (resumable)."""
    SIGINT = 130
    SIGTERM = 143


class BatchgenError(Exception):
    """Base of every error raised by batchgen."""


class ConfigError(BatchgenError):
    """The job file or a command-line flag is invalid; raised before any request is sent."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.file = file
        self.key = key
        self.detail = message


class SchemaError(ConfigError):
    """A response schema is one the API would reject; `pointer` is the JSON pointer of the problem."""

    def __init__(self, message: str, *, file: str | None = None, pointer: str = "") -> None:
        super().__init__(f"{message} (at {pointer or '/'})", file=file)
        self.pointer = pointer


class InputError(BatchgenError):
    """The input cannot be read (missing, unreadable, truncated); `line` or `row` locate it when known."""

    def __init__(self, message: str, *, file: str, line: int | None = None, row: int | None = None) -> None:
        where = file if line is None and row is None else f"{file}:{line if line is not None else f'row {row}'}"
        super().__init__(f"{where}: {message}")
        self.file = file
        self.line = line
        self.row = row


class OutputError(BatchgenError):
    """The results folder cannot be written; parts already renamed into place stay valid."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.detail = message


class BudgetExhausted(BatchgenError):
    """The run's cost, with the rows in flight, would pass the cap; the run stops taking rows and can resume.

    `spent_usd` is what the finished rows cost, `projected_usd` that plus the rows in flight at their average
    cost so far.
    """

    def __init__(self, *, cap_usd: float, spent_usd: float, projected_usd: float) -> None:
        super().__init__(
            f"cost cap ${cap_usd:,.4f} reached: ${spent_usd:,.4f} spent, ${projected_usd:,.4f} with the rows "
            "in flight; the cap is per run: rerun to resume (spending up to the cap again), or raise "
            "max_cost_usd (--max-cost) to go further in one run"
        )
        self.cap_usd = cap_usd
        self.spent_usd = spent_usd
        self.projected_usd = projected_usd


class Interrupted(BatchgenError):
    """The run was told to stop by a signal; rows in flight got the grace period, the rest resume next run."""

    def __init__(self, signal_number: int) -> None:
        name = signal.Signals(signal_number).name
        super().__init__(f"{name} received; rerun the same command to resume")
        self.signal_number = signal_number

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.SIGTERM if self.signal_number == signal.SIGTERM else ExitCode.SIGINT


class ApiError(BatchgenError):
    """The API returned an error, or no usable answer; `http_status` is None when nothing came back.

    `details` is the error body's `details` array as compact JSON text (ErrorInfo, QuotaFailure, RetryInfo,
    Help, DebugInfo...), when it had one.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        status: str | None = None,
        reason: str | None = None,
        details: str | None = None,
    ) -> None:
        prefix = " ".join(str(p) for p in (http_status, status) if p)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.http_status = http_status
        self.status = status
        self.reason = reason
        self.details = details


class RetryableError(ApiError):
    """A transient failure; `retry_after` is the server's requested wait in seconds, when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """429 RESOURCE_EXHAUSTED; `quota_id` is the QuotaFailure quota that tripped, when the body named one."""

    def __init__(self, message: str, *, quota_id: str | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.quota_id = quota_id


class ServerError(RetryableError):
    """500 / 502 / 503 / 504 from the server."""


class TransportError(RetryableError):
    """No complete HTTP answer: timeout, refused or reset connection, stream cut before its last event.

    `connect` is true when no connection could be made at all (refused, DNS, TLS): on the first requests of a
    job that means a wrong base URL or a server that is down, not a transient fault.
    """

    def __init__(self, message: str, *, connect: bool = False, **context: Any) -> None:
        super().__init__(message, **context)
        self.connect = connect


class MalformedResponse(RetryableError):
    """HTTP 200 whose body is not JSON, or not a GenerateContentResponse."""


class RequestRejected(ApiError):
    """The API refused this one request (400 INVALID_ARGUMENT, 404, ...); other rows may still succeed."""


class FatalApiError(ApiError):
    """An API error that no other row can get past; the job stops (exit code 3)."""


class AuthError(FatalApiError):
    """The key is missing, invalid or not allowed (401, 403, 400 API_KEY_INVALID)."""


class JobRejected(FatalApiError):
    """Every request of this job would be refused: an unknown model (404) or the same 400 on the first rows."""


class Unreachable(FatalApiError):
    """No connection could be made to the API on any of the job's first requests (refused, DNS, TLS)."""


class QuotaExhausted(FatalApiError):
    """A per-day quota is spent; rerunning after it resets resumes the job."""

    def __init__(self, message: str, *, quota_id: str | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.quota_id = quota_id


def exit_code_for(error: BatchgenError) -> ExitCode:
    """The exit code of a run that `error` stopped."""
    if isinstance(error, Interrupted):
        return error.exit_code
    if isinstance(error, BudgetExhausted):
        return ExitCode.COST
    if isinstance(error, ConfigError | InputError):
        return ExitCode.CONFIG
    return ExitCode.FATAL
