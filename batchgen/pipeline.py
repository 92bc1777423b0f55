"""One run of a job, assembled: input -> limiter + online carrier -> runner -> results folder.

This is the composition root. It builds the edges from a `Job` (the input source, the HTTP client, the rate
limiter, the Parquet sink, the budget), claims the results folder, drives the runner, compacts the folder and
records the run in its manifest with its exit code. Nothing below this module knows what a job file is;
`batchgen.api` and the CLI call in here.
"""

from __future__ import annotations

import functools
import gc
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio

from batchgen.errors import BatchgenError, ConfigError, ExitCode, InputError, exit_code_for
from batchgen.gemini.request import RequestTemplate
from batchgen.input.prompts import PromptBuilder
from batchgen.input.reader import BATCH_ROWS, TYPE_SAMPLE_ROWS, Columns, IdScan, InputSource
from batchgen.job import Job
from batchgen.online.client import Endpoint, GeminiClient
from batchgen.online.limiter.rate import LimiterSnapshot, Limits, RateLimiter
from batchgen.online.retry import Retrier, RetryPolicy
from batchgen.online.runner import Runner, RunPolicy
from batchgen.records import Prompt, RunStats
from batchgen.report.budget import Budget, budget_for
from batchgen.report.pricing import PriceTable
from batchgen.results import resume
from batchgen.results.folder import RunRecord, check_writable, claim, folder_schema, record_run, utc_iso
from batchgen.results.sink import ParquetSink
from batchgen.results.table import Layout, features_of
from batchgen.results.verdict import judge
from batchgen.secret import ApiKey

T = TypeVar("T")

log = logging.getLogger(__name__)


def run_blocking(function: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Run an async function of batchgen to the end in a new event loop (uvloop when installed), collecting
    cycles less often meanwhile (see `_fewer_collections`)."""
    with _fewer_collections():
        return anyio.run(functools.partial(function, *args, **kwargs), **_backend())


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Collect cycles less often during a run, which allocates many short-lived objects per row, few cyclic.

    With CPython's default thresholds (700, 10, 10) the collector ran every few rows and promoted every object
    that outlived a handful of rows (requests in flight, buffered results), so the full collections that
    followed rescanned them all, a large share of a run's CPU at high concurrency (docs/performance.md).
    Objects made at start-up (modules, the job) are frozen out of every
    scan; a young generation of 50,000 lets a row's objects die before they are ever scanned. Both are undone
    afterwards, for callers that go on in the same process.
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _backend() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"backend_options": {"use_uvloop": True}}


def new_run_id(now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Per-invocation choices that are not part of the job's identity.

    `run_id` names the run in the manifest and in every row it writes.
    """

    limit: int | None = None
    allow_duplicate_ids: bool = False
    retry_failed: bool = True
    force: bool = False
    # A price file merged over the shipped table (`--prices`), for the running cost and the cost cap.
    prices: Path | None = None
    run_id: str = field(default_factory=new_run_id)
    # Ids not to send besides those the folder holds (an estimate's sample skips the rows already done).
    skip: Container[str] | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"--limit must be a positive number of rows, not {self.limit}")


@dataclass(frozen=True, slots=True)
class LiveRun:
    """A run under way: what a display shows (counters, limiter, spend), and the handle that stops it."""

    run_id: str
    stats: RunStats
    limiter: RateLimiter
    budget: Budget | None
    _runner: Runner

    def stop(self, reason: BatchgenError | None = None) -> None:
        """Send nothing more; requests already out get the job's grace period. Safe to call more than once."""
        self._runner.stop(reason)

    def abort(self, reason: BatchgenError | None = None) -> None:
        """Stop, and cancel the requests still out at once; what finished is still written and recorded."""
        self._runner.abort(reason)

    @property
    def stopping(self) -> bool:
        return self._runner.stopping


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run did: its counters, what it cost (None when the model has no price), the error that stopped it
    early (if any) and the exit code a scheduler gets."""

    run_id: str
    output: Path
    stats: RunStats
    exit_code: ExitCode
    stopped_by: BatchgenError | None = None
    budget: Budget | None = None
    # Rows by status over the whole results folder after this run (earlier runs included): what exit 1 judges.
    tally: resume.Tally = field(default_factory=resume.Tally)
    # The rate limiter as the run left it.
    limiter: LimiterSnapshot | None = None

    @property
    def cost_usd(self) -> float | None:
        return None if self.budget is None else self.budget.spent.total

    @property
    def failed_fraction(self) -> float:
        """Failed rows over the whole results folder after this run: what exit 1 judges."""
        return self.tally.failed_fraction


def prompt_builder(job: Job) -> PromptBuilder:
    return PromptBuilder(
        id_field=job.input.id_field,
        prompt_template=job.input.prompt_template,
        prompt_field=job.input.prompt_field,
        contents_field=job.input.contents_field,
        keep_columns=job.output.keep_columns,
        media_field=job.input.media_field,
        media_uri_field=job.input.media_uri_field,
        mime_field=job.input.mime_field,
        media_root=job.input.path if job.input.path.is_dir() else job.input.path.parent,
    )


@dataclass(frozen=True, slots=True)
class OpenedInput:
    """The input of a job, checked: its source, the duplicate ids allowed (suffixed), and its id scan."""

    source: InputSource
    duplicates: frozenset[str]
    scan: IdScan

    @property
    def rows(self) -> int:
        return self.scan.rows


async def open_input(job: Job, *, allow_duplicate_ids: bool = False) -> OpenedInput:
    """Open the input and check, before anything is sent, that it has the columns the job names and that its
    ids are unique (unless allowed); a ConfigError / InputError names the job key or the input file."""
    # Rows carrying media hold whole files in memory: read them in small batches.
    batch_rows = 16 if job.input.media_field else BATCH_ROWS
    source = InputSource(job.input.path, prompt_builder(job), batch_rows=batch_rows)
    _check_columns(job, source.builder, await source.columns())
    scan = await source.scan_ids()
    if scan.duplicates and not allow_duplicate_ids:
        shown = ", ".join(f"{k!r} x{v}" for k, v in list(scan.duplicates.items())[:5])
        more = f" and {len(scan.duplicates) - 5} more" if len(scan.duplicates) > 5 else ""
        raise InputError(
            f"duplicate ids: {shown}{more} (use --allow-duplicate-ids to suffix them)",
            file=str(job.input.path),
        )
    return OpenedInput(source, frozenset(scan.duplicates), scan)


# Columns named in a "no such column" error, at most.
_SHOWN_COLUMNS = 20


def _check_columns(job: Job, builder: PromptBuilder, columns: Columns) -> None:
    """Every column the job names must be in the input: a template or id field naming one that is not would
    fail every row; a kept one would be a column of nulls."""
    problems = builder.missing_columns(columns.names)
    if not problems:
        return
    key, why = problems[0]
    names = ", ".join(columns.names[:_SHOWN_COLUMNS]) + (", ..." if len(columns.names) > _SHOWN_COLUMNS else "")
    names = names or "no columns"
    has = f"{columns.file} has {names}"
    if columns.sampled is not None:
        has = f"the rows of {columns.file} have {names}" + (
            f" (the first {columns.sampled:,} rows were read)" if columns.sampled >= TYPE_SAMPLE_ROWS else ""
        )
    raise ConfigError(f"{why}; {has}", file=str(job.file), key=key)


def check_output(job: Job, *, force: bool = False) -> None:
    """What a run would refuse about the results folder, checked before anything is sent or created: a path
    that cannot be a folder, and a folder holding another job's results (unless `force`)."""
    folder = job.output.path
    try:
        check_writable(folder)
    except ConfigError as exc:
        raise ConfigError(exc.detail, file=str(job.file), key="output.path") from None
    if folder.is_dir():
        resume.check_job(folder, job.fingerprint(), force=force)


def endpoint(job: Job) -> Endpoint:
    return Endpoint(
        base_url=job.base_url, model=job.model, auth=job.auth, stream=job.stream, timeout_s=job.limits.timeout_s
    )


async def execute(
    job: Job,
    key: ApiKey,
    options: RunOptions,
    *,
    on_start: Callable[[LiveRun], None] = lambda run: None,
) -> RunSummary:
    """Run `job` to completion (or until stopped) and record it, with its exit code, in the folder's manifest.

    Raises ConfigError / InputError before anything is sent (bad input, a cap on a model without a price, a
    folder another run holds or another job wrote).
    """
    budget = budget_for(job.model, PriceTable.load(options.prices), job.limits.max_cost_usd, job_file=str(job.file))
    opened = await open_input(job, allow_duplicate_ids=options.allow_duplicate_ids)
    source, duplicates, rows = opened.source, opened.duplicates, opened.rows
    check_output(job, force=options.force)
    layout = Layout(
        keep=await source.keep_schema(),
        typed=job.schema_ if job.flatten else None,
        prefix=job.output.column_prefix,
        features=features_of(job.request),
    )
    folder = job.output.path
    # Held until the run is recorded: a second run into the folder meanwhile would resend every row not yet
    # written, and store them twice.
    with claim(folder):
        changed = resume.check_job(folder, job.fingerprint(), force=options.force)
        if changed:
            # A changed job takes the folder over (--force) and sends every row again: the folder takes its shape.
            await anyio.to_thread.run_sync(resume.reshape, folder, options.run_id, layout.natural)
        # Parts keep the shape of those the folder holds: one schema per folder (duckdb and pyarrow datasets
        # read a folder by its first part's).
        layout = layout.within(await anyio.to_thread.run_sync(folder_schema, folder))
        _warn_left_out(layout, folder)
        done = await anyio.to_thread.run_sync(
            lambda: resume.done_ids(folder, retry_failed=options.retry_failed, fingerprint=job.fingerprint())
        )
        remaining = max(0, rows - len(done.final))
        stats = RunStats(
            total_rows=remaining if options.limit is None else min(remaining, options.limit),
            skipped_rows=len(done.final),
        )
        limiter = _limiter(job)
        async with GeminiClient(endpoint(job), key, connections=job.limits.concurrency) as client:
            runner = _runner(job, client, limiter, stats, budget)
            on_start(LiveRun(options.run_id, stats, limiter, budget, runner))
            skip = done.final if options.skip is None else _Either(done.final, options.skip)
            prompts = _limited(source.prompts(skip=skip, duplicates=duplicates), options.limit)
            run = _Recorded(job, options.run_id, runner)
            tally = await run.drive(prompts, layout, compact=done.rows > 0)
    return RunSummary(
        run_id=options.run_id,
        output=folder,
        stats=stats,
        exit_code=run.exit_code(tally),
        stopped_by=runner.stopped_by,
        budget=budget,
        tally=tally,
        limiter=limiter.snapshot(),
    )


def _warn_left_out(layout: Layout, folder: Path) -> None:
    missing = layout.left_out()
    if missing:
        log.warning(
            "%s was written by an earlier batchgen or job: its parts have no %s column(s), so this run's parts "
            "leave them out too (one schema per folder); write to a new --output to get them",
            folder,
            ", ".join(missing),
            extra={"event": "columns_left_out", "output": str(folder), "columns": missing},
        )


class _Recorded:
    """A run driven into the results folder and recorded in its manifest, before the first request and after
    the last (also when cancelled outright, so the manifest says how the run ended)."""

    def __init__(self, job: Job, run_id: str, runner: Runner) -> None:
        self._job = job
        self._run_id = run_id
        self._runner = runner
        self._started = time.time()

    async def drive(self, prompts: AsyncIterator[Prompt], layout: Layout, *, compact: bool) -> resume.Tally:
        """Run the prompts into the folder, compact it and record the run; the folder's rows by status.

        A run writes each id once, so only a folder that held rows before it (`compact`) can hold superseded
        rows: a first run skips the pass over every id, which would hold a hash per row. Small parts (a slow
        run flushes a few rows every `flush_seconds`; a killed run leaves its own) are merged either way.
        """
        job, folder = self._job, self._job.output.path
        sink = ParquetSink(
            folder,
            layout,
            run_id=self._run_id,
            model=job.model,
            flush_rows=job.output.flush_rows,
            flush_seconds=job.output.flush_seconds,
        )
        tally = resume.Tally()
        error: BatchgenError | None = None
        try:
            async with sink:
                # Recorded before the first request, so a run killed outright still leaves its job identity.
                self._record(exit_code=None)
                await self._runner.run(prompts, sink)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    functools.partial(
                        resume.compact, folder, self._run_id, superseded=compact, target_rows=job.output.flush_rows
                    )
                )
                tally = await anyio.to_thread.run_sync(resume.tally, folder)
        except BatchgenError as exc:  # a write error: the run ends with it
            error = exc
            raise
        finally:
            self._record(exit_code=self.exit_code(tally, error))
        return tally

    def exit_code(self, tally: resume.Tally, error: BatchgenError | None = None) -> ExitCode:
        """The run's exit code: the error that stopped it, else exit 1 when no row of the job is `ok` or more
        of them are `failed` than `max_failed_fraction` allows (over the folder: a rerun's few retried rows
        do not decide for the whole job), else 0."""
        stopped_by = error or self._runner.stopped_by
        if stopped_by is not None:
            return exit_code_for(stopped_by)
        if tally.rows and not tally.ok:
            return ExitCode.FAILED_ROWS
        if tally.failed_fraction > self._job.limits.max_failed_fraction:
            return ExitCode.FAILED_ROWS
        return ExitCode.OK

    def _record(self, *, exit_code: ExitCode | None) -> None:
        stats, stopped_by = self._runner.stats, self._runner.stopped_by
        run = RunRecord(
            run_id=self._run_id,
            started_at=utc_iso(self._started),
            ended_at=None if exit_code is None else utc_iso(time.time()),
            model=self._job.model,
            exit_code=None if exit_code is None else int(exit_code),
            rows=stats.done,
            skipped_rows=stats.skipped_rows,
            counts={status.value: count for status, count in stats.counts.items()},
            tokens=stats.usage.totals(),
            stopped_by=None if stopped_by is None else f"{type(stopped_by).__name__}: {stopped_by}",
            fingerprint=self._job.fingerprint(),
        )
        record_run(self._job.output.path, _job_record(self._job), run)


def _limiter(job: Job) -> RateLimiter:
    """The limiter for a job: its quotas, and the window its server counts them over."""
    limits = job.limits
    return RateLimiter(
        Limits(
            requests_per_minute=limits.requests_per_minute,
            tokens_per_minute=limits.tokens_per_minute,
            requests_per_day=limits.requests_per_day,
            window_s=limits.quota_window_s,
        )
    )


def _runner(job: Job, client: GeminiClient, limiter: RateLimiter, stats: RunStats, budget: Budget | None) -> Runner:
    limits = job.limits
    schema = job.schema_
    json_mode = job.json_mode
    return Runner(
        client,
        template=RequestTemplate(job.request),
        limiter=limiter,
        retrier=Retrier(RetryPolicy(max_attempts=limits.max_attempts)),
        judge=lambda reply: judge(reply, json_mode=json_mode, validator=schema),
        policy=RunPolicy(
            concurrency=limits.concurrency,
            max_reasks=limits.max_reasks if json_mode else 0,
            reask_max_output_tokens=limits.reask_max_output_tokens,
            max_prompt_tokens=limits.max_prompt_tokens,
            grace_s=limits.grace_s,
        ),
        count_tokens=client.count_tokens if limits.token_estimate == "count" else None,
        admission=budget,
        stats=stats,
    )


async def _limited(prompts: AsyncIterator[Prompt], limit: int | None) -> AsyncIterator[Prompt]:
    if limit is None:
        async for prompt in prompts:
            yield prompt
        return
    count = 0
    async for prompt in prompts:
        yield prompt
        count += 1
        if count >= limit:
            return  # without reading a row more


class _Either:
    """Ids in either of two containers."""

    def __init__(self, first: Container[str], second: Container[str]) -> None:
        self._first = first
        self._second = second

    def __contains__(self, value: object) -> bool:
        return value in self._first or value in self._second


def _job_record(job: Job) -> dict[str, Any]:
    return {"file": str(job.file), "model": job.model, "fingerprint": job.fingerprint()}
