"""One `batchgen run`: build the edges (reader, client, limiter, writer) for a job and drive the runner.

This is where the pieces meet; the CLI only turns argv and the environment into a Job, a key and `RunOptions`,
and turns the `RunOutcome` into a printed summary and an exit code.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa

from batchgen import ledger
from batchgen.client import Endpoint, GeminiClient
from batchgen.errors import BatchgenError, ConfigError, InputError
from batchgen.gemini import RequestTemplate
from batchgen.job import Job
from batchgen.limiter import LimiterSnapshot, Limits, RateLimiter
from batchgen.outcome import judge
from batchgen.prompts import PromptBuilder
from batchgen.reader import BATCH_ROWS, InputSource
from batchgen.records import Prompt, Result, Status
from batchgen.retry import Retrier, RetryPolicy
from batchgen.runner import Runner, RunPolicy
from batchgen.secret import ApiKey
from batchgen.stats import RunStats
from batchgen.writer import Layout, ParquetSink, utc_iso, write_manifest


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Per-invocation choices that are not part of the job's identity."""

    limit: int | None = None
    allow_duplicate_ids: bool = False
    retry_failed: bool = True
    force: bool = False


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a run did: its id, live stats at the end, the error that stopped it early (if any), and the rate
    limiter as the run left it."""

    run_id: str
    stats: RunStats
    stopped_by: BatchgenError | None
    output: Path
    limiter: LimiterSnapshot


def new_run_id(now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(2)}"


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
    on_start: Callable[[Runner], None] = lambda runner: None,
) -> RunOutcome:
    """Run `job` to completion (or until stopped) and record it in the results folder's manifest."""
    source, duplicates, rows = await prepare_source(job, options)
    keep = await source.keep_schema()
    folder = job.output.path
    ledger.check_job(folder, job.fingerprint(), force=options.force)
    done = await anyio.to_thread.run_sync(lambda: ledger.done_ids(folder, retry_failed=options.retry_failed))
    run_id = new_run_id()
    started = time.time()
    endpoint = Endpoint(
        base_url=job.base_url,
        model=job.model,
        auth=job.auth,
        stream=job.stream,
        timeout_s=job.limits.timeout_s,
    )
    limiter = RateLimiter(_limits_for(job))
    async with GeminiClient(endpoint, key, connections=job.limits.concurrency) as client:
        runner = _runner(job, client, limiter)
        remaining = max(0, rows - len(done.final))
        runner.stats.total_rows = remaining if options.limit is None else min(remaining, options.limit)
        runner.stats.skipped_rows = len(done.final)
        on_start(runner)
        sink = ParquetSink(
            job.output.path,
            layout_for(job, keep),
            run_id=run_id,
            model=job.model,
            flush_rows=job.output.flush_rows,
            flush_seconds=job.output.flush_seconds,
        )
        try:
            async with sink:
                # Recorded before the first request, so a run killed outright still leaves its job identity.
                write_manifest(folder, _job_record(job), _run_record(run_id, started, job, runner, ended=False))
                prompts = _limited(source.prompts(skip=done.final, duplicates=duplicates), options.limit)
                await runner.run(prompts, sink)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(ledger.compact, folder, run_id)
        finally:
            write_manifest(folder, _job_record(job), _run_record(run_id, started, job, runner, ended=True))
    return RunOutcome(
        run_id=run_id, stats=runner.stats, stopped_by=runner.stopped_by, output=folder, limiter=limiter.snapshot()
    )


def _limits_for(job: Job) -> Limits:
    """The limiter's settings for a job: its quotas, and the window its server counts them over."""
    limits = job.limits
    return Limits(
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
        requests_per_day=limits.requests_per_day,
        window_s=limits.quota_window_s,
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
        "rows": stats.done,
        "skipped_rows": stats.skipped_rows,
        "counts": {status.value: count for status, count in stats.counts.items()},
        "tokens": {
            "prompt": usage.prompt or 0,
            "candidates": usage.candidates or 0,
            "thoughts": usage.thoughts or 0,
            "cached": usage.cached or 0,
            "tool_use": usage.tool_use or 0,
            "total": usage.total or 0,
        },
        "stopped_by": None if runner.stopped_by is None else f"{type(runner.stopped_by).__name__}: {runner.stopped_by}",
    }
