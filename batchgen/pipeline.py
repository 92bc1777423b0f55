"""One run of a job, assembled: input -> limiter + online carrier -> runner -> results folder.

This is the composition root. It builds the edges from a `Job` (the input source, the HTTP client, the rate
limiter, the Parquet sink, the budget), claims the results folder, drives the runner, compacts the folder and
records the run in its manifest with its exit code. Nothing below this module knows what a job file is;
`batchgen.api` and the CLI call in here.
"""

from __future__ import annotations

import functools
import gc
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio

from batchgen.errors import BatchgenError, ConfigError, ExitCode, InputError, exit_code_for
from batchgen.gemini.request import RequestTemplate
from batchgen.input.prompts import PromptBuilder
from batchgen.input.reader import BATCH_ROWS, InputSource
from batchgen.job import Job
from batchgen.online.client import Endpoint, GeminiClient
from batchgen.online.limiter.rate import LimiterSnapshot, Limits, RateLimiter
from batchgen.online.retry import Retrier, RetryPolicy
from batchgen.online.runner import Runner, RunPolicy
from batchgen.records import Prompt, RunStats
from batchgen.report.budget import Budget, budget_for
from batchgen.report.pricing import PriceTable
from batchgen.results import resume
from batchgen.results.folder import RunRecord, claim, record_run, utc_iso
from batchgen.results.sink import ParquetSink
from batchgen.results.table import Layout
from batchgen.results.verdict import judge
from batchgen.secret import ApiKey

T = TypeVar("T")


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
        """Take no new rows; rows in flight get the job's grace period. Safe to call more than once."""
        self._runner.stop(reason)


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
    # Failed rows over the whole results folder after this run (earlier runs included): what exit 1 judges.
    failed_fraction: float = 0.0
    # The rate limiter as the run left it.
    limiter: LimiterSnapshot | None = None

    @property
    def cost_usd(self) -> float | None:
        return None if self.budget is None else self.budget.spent.total


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


async def open_input(job: Job, *, allow_duplicate_ids: bool = False) -> tuple[InputSource, frozenset[str], int]:
    """Open the input and check its ids before anything is sent; returns (source, allowed duplicates, rows)."""
    # Rows carrying media hold whole files in memory: read them in small batches.
    batch_rows = 16 if job.input.media_field else BATCH_ROWS
    source = InputSource(job.input.path, prompt_builder(job), batch_rows=batch_rows)
    scan = await source.scan_ids()
    if scan.duplicates and not allow_duplicate_ids:
        shown = ", ".join(f"{k!r} x{v}" for k, v in list(scan.duplicates.items())[:5])
        more = f" and {len(scan.duplicates) - 5} more" if len(scan.duplicates) > 5 else ""
        raise InputError(
            f"duplicate ids: {shown}{more} (use --allow-duplicate-ids to suffix them)",
            file=str(job.input.path),
        )
    return source, frozenset(scan.duplicates), scan.rows


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
    source, duplicates, rows = await open_input(job, allow_duplicate_ids=options.allow_duplicate_ids)
    layout = Layout(
        keep=await source.keep_schema(),
        typed=job.schema_ if job.flatten else None,
        prefix=job.output.column_prefix,
    )
    folder = job.output.path
    # Held until the run is recorded: a second run into the folder meanwhile would resend every row not yet
    # written, and store them twice.
    with claim(folder):
        resume.check_job(folder, job.fingerprint(), force=options.force)
        done = await anyio.to_thread.run_sync(lambda: resume.done_ids(folder, retry_failed=options.retry_failed))
        remaining = max(0, rows - len(done.final))
        stats = RunStats(
            total_rows=remaining if options.limit is None else min(remaining, options.limit),
            skipped_rows=len(done.final),
        )
        limiter = _limiter(job)
        async with GeminiClient(endpoint(job), key, connections=job.limits.concurrency) as client:
            runner = _runner(job, client, limiter, stats, budget)
            on_start(LiveRun(options.run_id, stats, limiter, budget, runner))
            prompts = _limited(source.prompts(skip=done.final, duplicates=duplicates), options.limit)
            run = _Recorded(job, options.run_id, runner)
            failed = await run.drive(prompts, layout, compact=done.rows > 0)
    return RunSummary(
        run_id=options.run_id,
        output=folder,
        stats=stats,
        exit_code=run.exit_code(failed),
        stopped_by=runner.stopped_by,
        budget=budget,
        failed_fraction=failed,
        limiter=limiter.snapshot(),
    )


class _Recorded:
    """A run driven into the results folder and recorded in its manifest, before the first request and after
    the last (also when cancelled outright, so the manifest says how the run ended)."""

    def __init__(self, job: Job, run_id: str, runner: Runner) -> None:
        self._job = job
        self._run_id = run_id
        self._runner = runner
        self._started = time.time()

    async def drive(self, prompts: AsyncIterator[Prompt], layout: Layout, *, compact: bool) -> float:
        """Run the prompts into the folder, compact it and record the run; the folder's failed fraction.

        A run writes each id once, so only a folder that held rows before it (`compact`) can hold superseded
        rows: a first run skips the pass over every id, which would hold a hash per row.
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
        failed = 0.0
        error: BatchgenError | None = None
        try:
            async with sink:
                # Recorded before the first request, so a run killed outright still leaves its job identity.
                self._record(exit_code=None)
                await self._runner.run(prompts, sink)
            with anyio.CancelScope(shield=True):
                if compact:
                    await anyio.to_thread.run_sync(resume.compact, folder, self._run_id)
                failed = await anyio.to_thread.run_sync(resume.failed_fraction, folder)
        except BatchgenError as exc:  # a write error: the run ends with it
            error = exc
            raise
        finally:
            self._record(exit_code=self.exit_code(failed, error))
        return failed

    def exit_code(self, failed_fraction: float, error: BatchgenError | None = None) -> ExitCode:
        stopped_by = error or self._runner.stopped_by
        if stopped_by is not None:
            return exit_code_for(stopped_by)
        if failed_fraction > self._job.limits.max_failed_fraction:
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


def _job_record(job: Job) -> dict[str, Any]:
    return {"file": str(job.file), "model": job.model, "fingerprint": job.fingerprint()}
