"""One `batchgen run`: build the edges (reader, client, limiter, writer) for a job and drive the runner.

This is where the pieces meet; the CLI only turns argv and the environment into a Job, a key and `RunOptions`,
and turns the `RunOutcome` into a printed summary and an exit code.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa

from batchgen.errors import BatchgenError, ConfigError, InputError
from batchgen.gemini.request import RequestTemplate
from batchgen.input.prompts import PromptBuilder
from batchgen.input.reader import BATCH_ROWS, InputSource
from batchgen.job import Job
from batchgen.online.client import Endpoint, GeminiClient
from batchgen.online.limiter.rate import LimiterSnapshot, Limits, RateLimiter
from batchgen.online.retry import Retrier, RetryPolicy
from batchgen.online.runner import Runner, RunPolicy
from batchgen.records import Prompt, Result, RunStats, Sink, Status
from batchgen.report.budget import Budget, BudgetedSink, budget_for
from batchgen.report.pricing import PriceTable
from batchgen.results import resume
from batchgen.results.sink import Layout, ParquetSink, claim_folder, utc_iso, write_manifest
from batchgen.results.verdict import judge
from batchgen.secret import ApiKey


@dataclass(frozen=True, slots=True)
class LiveRun:
    """A run that has started: what the CLI shows (counters, limiter, spend) and stops while it goes."""

    run_id: str
    runner: Runner
    limiter: RateLimiter
    budget: Budget | None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a run did: its id, live stats at the end, what it cost (None when the model has no price), and
    the error that stopped it early, if any."""

    run_id: str
    stats: RunStats
    stopped_by: BatchgenError | None
    output: Path
    budget: Budget | None = None
    # Failed rows over the whole results folder after this run (earlier runs included): what exit 1 judges.
    failed_fraction: float = 0.0
    # The rate limiter as the run left it (nothing waiting, no permit held, once the run is over).
    limiter: LimiterSnapshot | None = None


def new_run_id(now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Per-invocation choices that are not part of the job's identity.

    `run_id` names the run in the manifest and in every row it writes; the CLI picks it up front so it can
    record the run's exit code once the run is over.
    """

    limit: int | None = None
    allow_duplicate_ids: bool = False
    retry_failed: bool = True
    force: bool = False
    # A price file merged over the shipped table (`--prices`), for the running cost and the cost cap.
    prices: Path | None = None
    run_id: str = field(default_factory=new_run_id)


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


async def prepare_source(job: Job, options: RunOptions) -> tuple[InputSource, frozenset[str], int]:
    """Open the input and check its ids before anything is sent; returns (source, allowed duplicates, rows)."""
    # Rows carrying media hold whole files in memory: read them in small batches.
    batch_rows = 16 if job.input.media_field else BATCH_ROWS
    source = InputSource(job.input.path, prompt_builder(job), batch_rows=batch_rows)
    scan = await source.scan_ids()
    if scan.duplicates and not options.allow_duplicate_ids:
        shown = ", ".join(f"{k!r} x{v}" for k, v in list(scan.duplicates.items())[:5])
        more = f" and {len(scan.duplicates) - 5} more" if len(scan.duplicates) > 5 else ""
        raise InputError(
            f"duplicate ids: {shown}{more} (use --allow-duplicate-ids to suffix them)",
            file=str(job.input.path),
        )
    return source, frozenset(scan.duplicates), scan.rows


def layout_for(job: Job, keep: pa.Schema) -> Layout:
    schema = job.schema_
    if schema is None or not job.flatten:
        return Layout(keep=keep, typed=pa.schema([]))
    prefix = job.output.column_prefix

    def typed_columns(results: Sequence[Result]) -> list[pa.Array]:
        return schema.arrow_columns([r.output if r.status is Status.OK else None for r in results])

    return Layout(keep=keep, typed=schema.arrow_schema(prefix), typed_columns=typed_columns)


async def execute(
    job: Job,
    key: ApiKey,
    options: RunOptions,
    *,
    on_start: Callable[[LiveRun], None] = lambda run: None,
) -> RunOutcome:
    """Run `job` to completion (or until stopped) and record it in the results folder's manifest.

    Every finished row is priced as it is written when the model has a price; with `max_cost_usd` the run
    stops before it would pass the cap (`budget`). Raises ConfigError for a cap on a model without a price.
    """
    prices = PriceTable.load(options.prices)
    budget = budget_for(job.model, prices, job.limits.max_cost_usd, job_file=str(job.file))
    source, duplicates, rows = await prepare_source(job, options)
    keep = await source.keep_schema()
    folder = job.output.path
    # Held until the run is recorded: a second run into the folder meanwhile would resend every row not yet
    # written, and store them twice.
    with claim_folder(folder):
        resume.check_job(folder, job.fingerprint(), force=options.force)
        done = await anyio.to_thread.run_sync(lambda: resume.done_ids(folder, retry_failed=options.retry_failed))
        endpoint = Endpoint(
            base_url=job.base_url,
            model=job.model,
            auth=job.auth,
            stream=job.stream,
            timeout_s=job.limits.timeout_s,
        )
        limiter = _limiter(job)
        async with GeminiClient(endpoint, key, connections=job.limits.concurrency) as client:
            runner = _runner(job, client, limiter)
            remaining = max(0, rows - len(done.final))
            runner.stats.total_rows = remaining if options.limit is None else min(remaining, options.limit)
            runner.stats.skipped_rows = len(done.final)
            on_start(LiveRun(options.run_id, runner, limiter, budget))
            prompts = _limited(source.prompts(skip=done.final, duplicates=duplicates), options.limit)
            layout = layout_for(job, keep)
            failed = await _drive(job, options.run_id, runner, prompts, layout, budget, compact=done.rows > 0)
    return RunOutcome(
        run_id=options.run_id,
        stats=runner.stats,
        stopped_by=runner.stopped_by,
        output=folder,
        budget=budget,
        failed_fraction=failed,
        limiter=limiter.snapshot(),
    )


async def _drive(
    job: Job,
    run_id: str,
    runner: Runner,
    prompts: AsyncIterator[Prompt],
    layout: Layout,
    budget: Budget | None,
    *,
    compact: bool,
) -> float:
    """Run the prompts into the results folder, compact it and record the run; the folder's failed fraction.

    A run writes each id once, so only a folder that held rows before it (`compact`) can hold superseded
    rows: a first run skips the pass over every id, which would hold a hash per row.
    """
    folder = job.output.path
    started = time.time()
    sink = ParquetSink(
        folder,
        layout,
        run_id=run_id,
        model=job.model,
        flush_rows=job.output.flush_rows,
        flush_seconds=job.output.flush_seconds,
    )
    try:
        async with sink:
            # Recorded before the first request, so a run killed outright still leaves its job identity.
            write_manifest(folder, _job_record(job), _run_record(run_id, started, job, runner, ended=False))
            budgeted: Sink = sink if budget is None else BudgetedSink(sink, budget, runner)
            await runner.run(prompts, budgeted)
        with anyio.CancelScope(shield=True):
            if compact:
                await anyio.to_thread.run_sync(resume.compact, folder, run_id)
            failed = await anyio.to_thread.run_sync(resume.failed_fraction, folder)
    finally:
        write_manifest(folder, _job_record(job), _run_record(run_id, started, job, runner, ended=True))
    return failed


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


def _runner(job: Job, client: GeminiClient, limiter: RateLimiter) -> Runner:
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
    )


async def _limited(prompts: AsyncIterator[Prompt], limit: int | None) -> AsyncIterator[Prompt]:
    if limit is None:
        async for prompt in prompts:
            yield prompt
        return
    if limit <= 0:
        raise ConfigError("--limit must be positive")
    count = 0
    async for prompt in prompts:
        yield prompt
        count += 1
        if count >= limit:
            return


def _job_record(job: Job) -> dict[str, Any]:
    return {"file": str(job.file), "model": job.model, "fingerprint": job.fingerprint()}


def _run_record(run_id: str, started: float, job: Job, runner: Runner, *, ended: bool) -> dict[str, Any]:
    stats = runner.stats
    usage = stats.usage
    return {
        "run_id": run_id,
        "started_at": utc_iso(started),
        "ended_at": utc_iso(time.time()) if ended else None,
        "model": job.model,
        "exit_code": None,  # set by the CLI once the run has ended; stays null for a run killed outright
        "rows": stats.done,
        "skipped_rows": stats.skipped_rows,
        "counts": {status.value: count for status, count in stats.counts.items()},
        "tokens": usage.totals(),
        "stopped_by": None if runner.stopped_by is None else f"{type(runner.stopped_by).__name__}: {runner.stopped_by}",
    }
