"""The Python API: run, check and estimate a job, read its results back. The CLI is a thin shell over it.

    summary = batchgen.run_job("jobs/demo.toml", local_server=True, limits={"concurrency": 8})
    table = batchgen.read_results("out/demo")          # a pyarrow Table; .to_pandas() for a DataFrame

A job is a job file's path, a `Job` (`load_job`, `job_from_dict`) or a mapping of the job file's shape.
Keyword overrides replace top-level keys (`model`, `base_url`) or entries of `input`, `output` and `limits`.
The API key comes from `api_key`, else from the environment variable the job names (`api_key_env`);
`local_server=True` runs against batchgen's own local Gemini server instead, with no key.
"""

from __future__ import annotations

import functools
import importlib
import os
import random
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio
import pyarrow as pa
import pyarrow.compute as pc

from batchgen import fakeserver
from batchgen.batch import control
from batchgen.batch.client import BatchClient
from batchgen.errors import ApiError, ConfigError
from batchgen.gemini.request import RequestTemplate
from batchgen.job import Job, job_from_dict, load_job
from batchgen.online.client import GeminiClient
from batchgen.online.retry import Retrier, RetryPolicy
from batchgen.pipeline import (
    LiveRun,
    OpenedInput,
    RunOptions,
    RunSummary,
    check_output,
    endpoint,
    execute,
    open_input,
    run_blocking,
)
from batchgen.records import Prompt
from batchgen.report.breakdown import build_report, load_results
from batchgen.report.budget import Budget, budget_for
from batchgen.report.estimate import Estimate, InputTokens, Sample
from batchgen.report.pricing import PriceTable
from batchgen.results import resume
from batchgen.results.batches import Batches, Submission
from batchgen.results.read import read_results as _read_results
from batchgen.secret import ApiKey

JobLike = Job | str | os.PathLike[str] | Mapping[str, Any]
T = TypeVar("T")
P = ParamSpec("P")

# `:countTokens` calls in flight at once: they have their own quota, and a sample is small.
_COUNT_CONCURRENCY = 8


def as_job(job: JobLike, **overrides: Any) -> Job:
    """`job` as a validated `Job`, with `overrides` applied (paths in overrides relative to the working folder)."""
    if isinstance(job, Job):
        loaded = job
    elif isinstance(job, Mapping):
        loaded = job_from_dict(job)
    else:
        loaded = load_job(Path(job))
    return loaded.with_overrides(**_absolute_paths(overrides)) if overrides else loaded


def key_from_environment(job: Job, environ: Mapping[str, str] = os.environ) -> ApiKey:
    """The key from the environment variable the job names; a ConfigError naming it when it is not set."""
    value = environ.get(job.api_key_env, "").strip()
    if not value:
        raise ConfigError(
            f"environment variable {job.api_key_env} is not set (or use --local-server)",
            file=str(job.file),
            key="api_key_env",
        )
    return ApiKey(value, source=f"environment variable {job.api_key_env}")


async def run_job_async(
    job: JobLike,
    *,
    local_server: bool = False,
    api_key: str | None = None,
    limit: int | None = None,
    allow_duplicate_ids: bool = False,
    retry_failed: bool = True,
    force: bool = False,
    prices: str | os.PathLike[str] | None = None,
    on_start: Callable[[LiveRun], None] | None = None,
    **overrides: Any,
) -> RunSummary:
    """Run a job to the end (a rerun resumes) and return its summary; `summary.exit_code` is the CLI's.

    Raises ConfigError / InputError (nothing sent) for a bad job, input, key or results folder. `run_job` is
    the same, blocking, for code outside an event loop.
    """
    options = RunOptions(
        limit=limit,
        allow_duplicate_ids=allow_duplicate_ids,
        retry_failed=retry_failed,
        force=force,
        prices=None if prices is None else Path(prices),
    )
    resolved = as_job(job, **overrides)
    run = _engine(resolved)
    async with _target(resolved, local_server, api_key) as (target, key):
        return await run(target, key, options, on_start=on_start or (lambda run: None))


@dataclass(frozen=True, slots=True)
class Checked:
    """What `check_job` found: the job, its input rows, its budget (None when the model has no price), and the
    input lines that are no row at all (they become `failed` rows), with the first one's problem."""

    job: Job
    rows: int
    budget: Budget | None
    unreadable: int = 0
    first_unreadable: str | None = None


def check_job(
    job: JobLike,
    *,
    prices: str | os.PathLike[str] | None = None,
    local_server: bool = False,
    api_key: str | None = None,
    **overrides: Any,
) -> Checked:
    """Every start-up check of a run (job, schema, key, input, ids, prices), with nothing sent; raises on the
    first problem (ConfigError / InputError naming the file and key, line or row). The key is checked as a run
    would look for it: `api_key`, else the job's environment variable, unless `local_server`."""
    resolved = as_job(job, **overrides)
    if not local_server and api_key is None:
        key_from_environment(resolved)
    budget = budget_for(resolved.model, _prices(prices), resolved.limits.max_cost_usd, job_file=str(resolved.file))
    scan = anyio.run(_opened, resolved).scan
    check_output(resolved)
    return Checked(resolved, scan.rows, budget, scan.unreadable, scan.first_unreadable)


async def _opened(job: Job) -> OpenedInput:
    return await open_input(job)


async def estimate_job_async(
    job: JobLike,
    *,
    sample: int = 0,
    count_tokens: int = 0,
    local_server: bool = False,
    api_key: str | None = None,
    prices: str | os.PathLike[str] | None = None,
    seed: int = 0,
    **overrides: Any,
) -> Estimate:
    """Rows, tokens, cost and duration of a job before it runs: nothing is sent unless `sample` rows are run
    for real (into a temporary folder) or `count_tokens` rows are sent to `:countTokens`. `estimate_job` is
    the same, blocking."""
    if sample < 0 or count_tokens < 0:
        raise ConfigError("--sample and --count-tokens take a number of rows >= 0")
    resolved = as_job(job, **overrides)
    price_file = None if prices is None else Path(prices)
    return await _estimate(resolved, sample, count_tokens, local_server, api_key, price_file, seed)


def batch_status(
    folder: str | os.PathLike[str],
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    refresh: bool = True,
) -> control.FolderStatus:
    """The batch jobs of a results folder (mode = "batch"): as recorded, and the ones under way as the Batch API
    shows them now (when `refresh` and a key is at hand: `api_key`, else the variable the job names)."""
    path = Path(folder)

    async def look() -> control.FolderStatus:
        batches = control.read_record(path)
        key = _batch_key(batches, api_key, required=False) if refresh else None
        if key is None:
            return await control.status(path, None)
        async with _batch_client(batches, key, base_url) as jobs:
            return await control.status(path, jobs)

    return anyio.run(look)


def cancel_batches(
    folder: str | os.PathLike[str], *, api_key: str | None = None, base_url: str | None = None
) -> tuple[list[Submission], list[Submission]]:
    """Cancel the batch jobs of a results folder that have not ended, and release their rows (the next run
    sends them again); (the jobs cancelled, the jobs that had ended, which the next run collects)."""
    path = Path(folder)

    async def stop() -> tuple[list[Submission], list[Submission]]:
        batches = control.read_record(path)
        key = _batch_key(batches, api_key, required=True)
        assert key is not None
        async with _batch_client(batches, key, base_url) as jobs:
            return await control.cancel(path, jobs)

    return anyio.run(stop)


def _batch_key(batches: Batches, value: str | None, *, required: bool) -> ApiKey | None:
    if value:
        return ApiKey(value)
    name = str(batches.origin.get("api_key_env") or "GEMINI_API_KEY")
    found = os.environ.get(name, "").strip()
    if not found and required:
        raise ConfigError(f"environment variable {name} is not set: the batch jobs cannot be reached without a key")
    return ApiKey(found) if found else None


def _batch_client(batches: Batches, key: ApiKey, base_url: str | None) -> BatchClient:
    origin = batches.origin
    return BatchClient(
        base_url or str(origin.get("base_url") or "https://generativelanguage.googleapis.com"),
        str(origin.get("model") or ""),
        key,
        retry=Retrier(RetryPolicy(max_attempts=3)),
        auth=str(origin.get("auth") or "x-goog-api-key"),
    )


def _blocking(function: Callable[P, Awaitable[T]]) -> Callable[P, T]:
    """`function`, run to the end in an event loop of its own (see `pipeline.run_blocking`)."""

    @functools.wraps(function)
    def blocking(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_blocking(function, *args, **kwargs)

    return blocking


run_job = _blocking(run_job_async)
estimate_job = _blocking(estimate_job_async)


def read_results(
    folders: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], columns: Sequence[str] | None = None
) -> pa.Table:
    """The rows of one or more results folders as a pyarrow Table (`.to_pandas()`, `polars.from_arrow`)."""
    paths = [Path(folders)] if isinstance(folders, str | os.PathLike) else [Path(f) for f in folders]
    return _read_results(paths, columns)


async def _estimate(
    job: Job, sample: int, count: int, local_server: bool, key: str | None, prices: Path | None, seed: int
) -> Estimate:
    price = PriceTable.load(prices).find(job.model)
    opened = await open_input(job)
    rows = opened.rows
    done = await anyio.to_thread.run_sync(
        lambda: resume.done_ids(job.output.path, retry_failed=True, fingerprint=job.fingerprint())
    )
    template = RequestTemplate(job.request)
    pending = opened.source.prompts(skip=done.final, duplicates=opened.duplicates)
    local, picked = await _local_pass(pending, template, count, seed)
    tokens = InputTokens(local, "local estimate (4 characters per token, as the limiter paces)")
    measured: Sample | None = None
    # Only rows a run would send are worth paying for: none when the job is done.
    sample = min(sample, max(0, rows - len(done.final)))
    if picked or sample:
        async with _target(job, local_server, key) as (target, api):
            if picked:
                tokens = await _counted(target, api, template, picked, local)
            if sample:
                measured = await _sample_run(target, api, sample, prices, skip=done.final)
    return Estimate(job=job, rows=rows, done=len(done.final), input=tokens, sample=measured, price=price)


async def _local_pass(
    prompts: AsyncIterator[Prompt], template: RequestTemplate, keep: int, seed: int
) -> tuple[int, list[Prompt]]:
    """The local token estimate summed over every sendable prompt, and a uniform sample of `keep` of them."""
    rng = random.Random(seed)
    total = 0
    seen = 0
    picked: list[Prompt] = []
    async for prompt in prompts:
        if prompt.problem is not None:
            continue
        total += template.estimate_tokens(prompt.contents)
        seen += 1
        # Reservoir sampling: each prompt ends in the sample with probability keep / seen, memory stays `keep`.
        if len(picked) < keep:
            picked.append(prompt)
        elif keep and (slot := rng.randrange(seen)) < keep:
            picked[slot] = prompt
    return total, picked


async def _counted(job: Job, key: ApiKey, template: RequestTemplate, picked: list[Prompt], local: int) -> InputTokens:
    counted = [0] * len(picked)
    gate = anyio.CapacityLimiter(_COUNT_CONCURRENCY)
    async with GeminiClient(endpoint(job), key, connections=_COUNT_CONCURRENCY) as client:

        async def count(index: int, prompt: Prompt) -> None:
            async with gate:
                counted[index] = await client.count_tokens(template.render(prompt.contents))

        async with anyio.create_task_group() as group:
            for index, prompt in enumerate(picked):
                group.start_soon(count, index, prompt)
    estimated = sum(template.estimate_tokens(prompt.contents) for prompt in picked)
    ratio = sum(counted) / estimated if estimated else 1.0
    return InputTokens(
        round(local * ratio),
        f"local estimate x {ratio:.3f}, the ratio :countTokens found on {len(picked)} sampled rows",
    )


async def _sample_run(job: Job, key: ApiKey, rows: int, prices: Path | None, *, skip: Container[str]) -> Sample:
    """The first `rows` rows a run would send (not those in `skip`, already done) run exactly as `batchgen run`
    would, into a temporary folder, and measured."""
    with tempfile.TemporaryDirectory(prefix="batchgen-sample-") as folder:
        # Online even for a batch job: output tokens and re-asks are the same, and a batch could take hours.
        sample_job = job.with_overrides(output={"path": Path(folder)}, mode="online")
        summary = await execute(sample_job, key, RunOptions(limit=rows, prices=prices, skip=skip))
        if isinstance(summary.stopped_by, ApiError):  # a bad key or model: no estimate is worth showing
            raise summary.stopped_by
        if not summary.stats.done:
            return Sample(0, {}, 0, 0, 0, 0, None, None)
        table = await anyio.to_thread.run_sync(load_results, [Path(folder)])
    price_table = PriceTable.load(prices)
    priced = build_report(table, price_table).totals.cost.total if price_table.find(job.model) else None
    stats = summary.stats
    usage = stats.usage
    latency = pc.mean(table["latency_ms"]).as_py()
    return Sample(
        rows=stats.done,
        counts=dict(stats.counts),
        prompt_tokens=usage.prompt or 0,
        output_tokens=(usage.candidates or 0) + (usage.thoughts or 0),
        responses=stats.responses,
        attempts=stats.attempts,
        latency_s=None if latency is None else latency / 1000,
        cost_usd=priced,
    )


def _engine(job: Job) -> Callable[..., Awaitable[RunSummary]]:
    """What runs the job: this process (`execute`), or a Ray cluster (`engine = "ray"`, the `ray` extra)."""
    if job.engine == "local":
        return execute
    try:
        engine = importlib.import_module("batchgen.distributed.engine")
    except ImportError as exc:
        raise ConfigError(
            f"engine ray needs Ray: pip install 'batchgen[ray]' ({exc})", file=str(job.file), key="engine"
        ) from exc
    run: Callable[..., Awaitable[RunSummary]] = engine.execute
    return run


@asynccontextmanager
async def _target(job: Job, local_server: bool, key: str | None) -> AsyncIterator[tuple[Job, ApiKey]]:
    """The job and key to send with: as given, or pointed at a local Gemini server started for the call."""
    if not local_server:
        yield job, ApiKey(key, source="the api_key argument") if key else key_from_environment(job)
        return
    async with fakeserver.FakeServer(fakeserver.ServerConfig()) as server:
        yield job.with_overrides(base_url=server.url), ApiKey(server.api_key)


def _prices(file: str | os.PathLike[str] | None) -> PriceTable:
    return PriceTable.load(None if file is None else Path(file))


def _absolute_paths(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Override paths are relative to the working folder (a job file's own paths, to its folder)."""
    changed = dict(overrides)
    for section in ("input", "output"):
        if isinstance(changed.get(section), Mapping) and "path" in changed[section]:
            changed[section] = {**changed[section], "path": Path(changed[section]["path"]).resolve()}
    return changed
