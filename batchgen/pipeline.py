"""One run of a job, assembled: input -> limiter + carrier (online runner, or Batch API jobs) -> results folder.

This is the composition root. It builds the edges from a `Job` (the input source, the HTTP client, the rate
limiter, the Parquet sink, the budget), claims the results folder, drives the carrier (the online runner, or
in batch mode the Batch API carrier with the online runner injected for rows it sends online), compacts the
folder and records the run in its manifest with its exit code. Nothing below this module knows what a job file is;
`batchgen.api` and the CLI call in here.
"""

from __future__ import annotations

import functools
import gc
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio

from batchgen.batch.carrier import BatchCarrier
from batchgen.batch.client import BatchClient
from batchgen.batch.collect import Rules
from batchgen.batch.follow import BatchPolicy
from batchgen.console.format import duration
from batchgen.errors import BatchgenError, ConfigError, ExitCode, InputError, exit_code_for
from batchgen.gemini.request import RequestTemplate
from batchgen.input.prompts import PromptBuilder
from batchgen.input.reader import BATCH_ROWS, TYPE_SAMPLE_ROWS, Columns, IdScan, InputSource
from batchgen.job import TIMEOUT_S, Job
from batchgen.online.client import Endpoint, GeminiClient
from batchgen.online.limiter.rate import LimiterSnapshot, Limits, RateLimiter
from batchgen.online.retry import Retrier, RetryPolicy
from batchgen.online.runner import Judge, Runner, RunPolicy
from batchgen.records import Admission, Generate, Limiter, Prompt, RunStats
from batchgen.report.budget import Budget, budget_for
from batchgen.report.pricing import PriceTable
from batchgen.results import resume
from batchgen.results.batches import read_batches
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


class _Stoppable(Protocol):
    def stop(self, reason: BatchgenError | None = None) -> None: ...

    def abort(self, reason: BatchgenError | None = None) -> None: ...

    @property
    def stopping(self) -> bool: ...


class _Snapshots(Protocol):
    def snapshot(self) -> LimiterSnapshot: ...


@dataclass(frozen=True, slots=True)
class LiveRun:
    """A run under way: what a display shows (counters, limiter, spend, what rows wait on), and the handle
    that stops it.

    The limiter is anything with the limiter's `snapshot()`, the runner anything that stops like a `Runner`:
    a run on a cluster (`batchgen.distributed`) shows the shared limiter and stops every worker.
    """

    run_id: str
    stats: RunStats
    limiter: _Snapshots
    budget: Budget | None
    _runner: _Stoppable
    # What the display says rows wait on when they take long (Batch API jobs, Flex calls); None: nothing.
    note: Callable[[], str | None] | None = None

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
    # Batch mode: the folder's batch jobs still at the Batch API when the run ended (a rerun collects them).
    live_batch_jobs: int = 0

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
    return Endpoint(base_url=job.base_url, model=job.model, auth=job.auth, stream=job.stream, timeout_s=job.timeout_s)


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
    budget, opened, layout = await prepare(job, options)
    source, duplicates, rows = opened.source, opened.duplicates, opened.rows
    folder = job.output.path
    # Held until the run is recorded: a second run into the folder meanwhile would resend every row not yet
    # written, and store them twice.
    with claim(folder):
        layout = await take_over(folder, job, options, layout)
        done = await anyio.to_thread.run_sync(
            lambda: resume.done_ids(folder, retry_failed=options.retry_failed, fingerprint=job.fingerprint())
        )
        remaining = max(0, rows - len(done.final))
        stats = RunStats(
            total_rows=remaining if options.limit is None else min(remaining, options.limit),
            skipped_rows=len(done.final),
        )
        limiter = RateLimiter(limits_for(job))
        async with (
            GeminiClient(endpoint(job), key, connections=job.limits.concurrency) as client,
            _carrier(job, key, _Online(job, client, limiter, stats, budget), opened, done) as carrier,
        ):
            on_start(LiveRun(options.run_id, stats, limiter, budget, carrier, _note(job, carrier)))
            skip = done.final if options.skip is None else _Either(done.final, options.skip)
            prompts = _limited(source.prompts(skip=skip, duplicates=duplicates), options.limit)
            run = _Recorded(job, options.run_id, carrier)
            tally = await run.drive(prompts, layout, compact=done.rows > 0)
    return RunSummary(
        run_id=options.run_id,
        output=folder,
        stats=stats,
        exit_code=run.exit_code(tally),
        stopped_by=carrier.stopped_by,
        budget=budget,
        tally=tally,
        limiter=limiter.snapshot(),
        live_batch_jobs=len(carrier.jobs_at_google) if isinstance(carrier, BatchCarrier) else 0,
    )


class Carrier(Protocol):
    """What carries a run's rows into its sink: the online `Runner`, or the `BatchCarrier`."""

    stats: RunStats
    stopped_by: BatchgenError | None

    async def run(self, prompts: AsyncIterator[Prompt], sink: ParquetSink, /) -> RunStats: ...

    def stop(self, reason: BatchgenError | None = None) -> None: ...

    def abort(self, reason: BatchgenError | None = None) -> None: ...

    @property
    def stopping(self) -> bool: ...


@asynccontextmanager
async def _carrier(
    job: Job, key: ApiKey, online: _Online, opened: OpenedInput, done: resume.Done
) -> AsyncIterator[Carrier]:
    """The job's carrier: the online runner, or (mode = "batch") the Batch API carrier with its client open."""
    folder = job.output.path
    if job.mode == "online":
        await anyio.to_thread.run_sync(_no_live_batch_jobs, folder)
        yield online.runner()
        return
    retry = Retrier(RetryPolicy(max_attempts=job.limits.max_attempts))
    timeout = job.limits.timeout_s or TIMEOUT_S
    source, duplicates = opened.source, opened.duplicates
    async with BatchClient(job.base_url, job.model, key, retry=retry, auth=job.auth, timeout_s=timeout) as jobs:
        yield BatchCarrier(
            jobs,
            folder=folder,
            origin={"base_url": job.base_url, "auth": job.auth, "api_key_env": job.api_key_env, "model": job.model},
            templates=online.batch_templates(),
            online_templates=online.fallback_templates(),
            judge=online.judge(),
            policy=_batch_policy(job),
            rows=lambda skip: source.prompts(skip=skip, duplicates=duplicates),
            final=done.final,
            make_runner=online.runner,
            stats=online.stats,
            admission=online.budget,
        )


def _no_live_batch_jobs(folder: Path) -> None:
    batches = read_batches(folder)
    live = () if batches is None else batches.live
    if live:
        raise ConfigError(
            f"{folder} has {len(live)} batch job(s) still under way: rerun with --mode batch to collect them, or "
            f"`batchgen cancel {folder}` to give them up (their rows are then sent again)"
        )


def _batch_policy(job: Job) -> BatchPolicy:
    limits, batch = job.limits, job.batch
    rules = Rules(
        max_reasks=limits.max_reasks if job.json_mode else 0,
        max_resubmits=batch.max_resubmits,
        reasks_online=batch.reasks == "online",
        truncated_template="reask" if limits.reask_max_output_tokens else "base",
    )
    return BatchPolicy(
        rules=rules,
        max_file_bytes=int(batch.max_file_mb * 1024 * 1024),
        max_jobs=batch.max_jobs,
        poll_s=batch.poll_s,
        deadline_s=batch.deadline_s,
        max_attempts=limits.max_attempts,
    )


def _note(job: Job, carrier: Carrier) -> Callable[[], str | None] | None:
    """What a display says while rows take long: batch jobs and their states; Flex calls that take minutes."""
    if isinstance(carrier, BatchCarrier):
        return carrier.note
    if job.service_tier != "flex":
        return None
    text = f"Flex tier: each answer can take minutes (timeout {duration(job.timeout_s)})"
    return lambda: text


async def prepare(job: Job, options: RunOptions) -> tuple[Budget | None, OpenedInput, Layout]:
    """Every check before the folder is claimed (prices and cap, the input, the output path), and the layout
    of the job's parts: what any engine runs a job with."""
    budget = budget_for(job.model, PriceTable.load(options.prices), job.limits.max_cost_usd, job_file=str(job.file))
    opened = await open_input(job, allow_duplicate_ids=options.allow_duplicate_ids)
    check_output(job, force=options.force)
    layout = Layout(
        keep=await opened.source.keep_schema(),
        typed=job.schema_ if job.flatten else None,
        prefix=job.output.column_prefix,
        features=features_of(job.request),
    )
    return budget, opened, layout


async def take_over(folder: Path, job: Job, options: RunOptions, layout: Layout) -> Layout:
    """The claimed folder made this job's (a changed job forced in reshapes it), and the layout of the parts
    this run writes into it."""
    changed = resume.check_job(folder, job.fingerprint(), force=options.force)
    if changed:
        # A changed job takes the folder over (--force) and sends every row again: the folder takes its shape.
        await anyio.to_thread.run_sync(resume.reshape, folder, options.run_id, layout.natural)
    # Parts keep the shape of those the folder holds: one schema per folder (duckdb and pyarrow datasets
    # read a folder by its first part's).
    layout = layout.within(await anyio.to_thread.run_sync(folder_schema, folder))
    _warn_left_out(layout, folder)
    return layout


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


class _Outcome(Protocol):
    """What a run's record reads: its counters and what stopped it (a `Runner`, or a run on a cluster)."""

    @property
    def stats(self) -> RunStats: ...

    @property
    def stopped_by(self) -> BatchgenError | None: ...


class Recorded:
    """A run writing into the results folder, recorded in its manifest before the first request and after the
    last (also when cancelled outright, so the manifest says how the run ended)."""

    def __init__(self, job: Job, run_id: str, outcome: _Outcome) -> None:
        self._job = job
        self._run_id = run_id
        self._outcome = outcome
        self._started = time.time()

    async def around(self, write: Callable[[], Awaitable[None]], *, compact: bool) -> resume.Tally:
        """Record the run, `write` its rows, compact the folder and record the run's end; the folder's rows by
        status.

        A run writes each id once, so only a folder that held rows before it (`compact`) can hold superseded
        rows: a first run skips the pass over every id, which would hold a hash per row. Small parts (a slow
        run flushes a few rows every `flush_seconds`; a killed run leaves its own) are merged either way.
        """
        job, folder = self._job, self._job.output.path
        tally = resume.Tally()
        error: BatchgenError | None = None
        try:
            # Recorded before the first request, so a run killed outright still leaves its job identity.
            self._record(exit_code=None)
            await write()
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
        stopped_by = error or self._outcome.stopped_by
        if stopped_by is not None:
            return exit_code_for(stopped_by)
        if tally.rows and not tally.ok:
            return ExitCode.FAILED_ROWS
        if tally.failed_fraction > self._job.limits.max_failed_fraction:
            return ExitCode.FAILED_ROWS
        return ExitCode.OK

    def _record(self, *, exit_code: ExitCode | None) -> None:
        stats, stopped_by = self._outcome.stats, self._outcome.stopped_by
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
        record_run(self._job.output.path, job_record(self._job), run)


class _Recorded(Recorded):
    """A local run: the carrier's rows through a Parquet sink into the folder."""

    def __init__(self, job: Job, run_id: str, runner: Carrier) -> None:
        super().__init__(job, run_id, runner)
        self._runner = runner

    async def drive(self, prompts: AsyncIterator[Prompt], layout: Layout, *, compact: bool) -> resume.Tally:
        """Run the prompts into the folder (see `around`)."""
        job = self._job
        sink = ParquetSink(
            job.output.path,
            layout,
            run_id=self._run_id,
            model=job.model,
            flush_rows=job.output.flush_rows,
            flush_seconds=job.output.flush_seconds,
        )

        async def write() -> None:
            async with sink:
                await self._runner.run(prompts, sink)

        return await self.around(write, compact=compact)


def limits_for(job: Job) -> Limits:
    """The limiter's settings for a job: its quotas, and the window its server counts them over."""
    limits = job.limits
    return Limits(
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
        requests_per_day=limits.requests_per_day,
        window_s=limits.quota_window_s,
    )


def runner_for(
    job: Job,
    client: GeminiClient,
    limiter: Limiter,
    stats: RunStats,
    admission: Admission | None,
    *,
    generate: Generate | None = None,
    template: RequestTemplate | None = None,
    max_reasks: int | None = None,
) -> Runner:
    """The job's runner: its retries, verdicts, re-asks and concurrency, over `client` (or `generate`, a
    carrier in front of it) under `limiter`; with the job's request and re-asks, or the `template` and
    `max_reasks` given (rows the batch carrier sends online)."""
    limits = job.limits
    json_mode = job.json_mode
    return Runner(
        client if generate is None else generate,
        template=RequestTemplate(job.request) if template is None else template,
        limiter=limiter,
        retrier=Retrier(RetryPolicy(max_attempts=limits.max_attempts)),
        judge=judge_for(job),
        policy=RunPolicy(
            concurrency=limits.concurrency,
            max_reasks=(limits.max_reasks if json_mode else 0) if max_reasks is None else max_reasks,
            reask_max_output_tokens=limits.reask_max_output_tokens,
            max_prompt_tokens=limits.max_prompt_tokens,
            grace_s=limits.grace_s,
        ),
        count_tokens=client.count_tokens if limits.token_estimate == "count" else None,
        admission=admission,
        stats=stats,
    )


def judge_for(job: Job) -> Judge:
    """The verdict on a reply under the job's output mode and schema."""
    schema, json_mode = job.schema_, job.json_mode
    return lambda reply: judge(reply, json_mode=json_mode, validator=schema)


@dataclass(frozen=True, slots=True)
class _Online:
    """The online carrier's parts for a job: runners over one client, limiter, counters and budget, with the
    job's request or (rows the batch carrier sends online) another template."""

    job: Job
    client: GeminiClient
    limiter: RateLimiter
    stats: RunStats
    budget: Budget | None

    def runner(self, template: RequestTemplate | None = None, max_reasks: int | None = None) -> Runner:
        return runner_for(
            self.job, self.client, self.limiter, self.stats, self.budget, template=template, max_reasks=max_reasks
        )

    def judge(self) -> Judge:
        return judge_for(self.job)

    def batch_templates(self) -> dict[str, RequestTemplate]:
        """Batch lines' requests: the job's (no serviceTier: the Batch API is a tier of its own), and the one
        re-asks after truncation use."""
        return self._templates(RequestTemplate(self.job.request).with_service_tier("standard"))

    def fallback_templates(self) -> dict[str, RequestTemplate]:
        """Requests of rows a batch job sends online: the job's, at Flex when `[batch] fallback = "flex"`."""
        template = RequestTemplate(self.job.request)
        flex = self.job.batch.fallback == "flex"
        return self._templates(template.with_service_tier("flex") if flex else template)

    def _templates(self, base: RequestTemplate) -> dict[str, RequestTemplate]:
        tokens = self.job.limits.reask_max_output_tokens
        return {"base": base, "reask": base.with_generation_config(maxOutputTokens=tokens) if tokens else base}


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


def job_record(job: Job) -> dict[str, Any]:
    """The job's identity as the results folder's manifest records it."""
    return {"file": str(job.file), "model": job.model, "fingerprint": job.fingerprint()}
