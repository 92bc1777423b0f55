"""A run of a job on Ray: the driver's composition root, the cluster's counterpart of `pipeline.execute`.

The driver checks the job and its input as a local run does (ids, duplicates, prices, the folder's job), holds
the results folder's lock, reads which ids are done once and ships them to the workers with the plan. Ray Data
then reads the input (`rows.InputRows`) in blocks of `[ray] block_rows` rows and hands them to a pool of
`[ray] workers` actors, each running batchgen's own runner (`worker.RunnerUDF`) under the one shared quota
(`authority.Authority`). Results come back through Ray Data, which delivers the output of a block it retried
(its actor died) once, and the driver commits them as ordinary parts (`commit.Committer`), records the run in
the manifest with its exit code and compacts the folder when needed: the folder is the one a local run leaves.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from batchgen.console.progress import DEFAULT_INTERVAL_S
from batchgen.distributed.authority import Authority, Status, Stop
from batchgen.distributed.commit import Committer
from batchgen.distributed.done import DoneIds
from batchgen.distributed.rows import InputRows
from batchgen.distributed.worker import Plan, RunnerUDF
from batchgen.errors import BatchgenError, ConfigError, ExitCode, InputError, OutputError, exit_code_for
from batchgen.input.reader import InputSource
from batchgen.job import Job, RaySpec
from batchgen.online.limiter.rate import LimiterSnapshot
from batchgen.pipeline import LiveRun, RunOptions, RunSummary, job_record, limits_for, open_input
from batchgen.records import RunStats
from batchgen.report.budget import Budget, budget_for
from batchgen.report.pricing import PriceTable
from batchgen.results import resume
from batchgen.results.folder import RunRecord, claim, record_run, utc_iso
from batchgen.results.table import Layout
from batchgen.secret import ApiKey

log = logging.getLogger("batchgen.distributed")

STATUS_S: Final = 0.5
"""How often the driver reads the authority's status for the display (shared limiter, workers in flight)."""

OBJECT_STORE_BYTES: Final = 512 * 1024**2
"""A local instance's object store: blocks of results are small; Ray's default would take 30 % of RAM."""


async def execute(
    job: Job, key: ApiKey, options: RunOptions, *, on_start: Callable[[LiveRun], None] = lambda run: None
) -> RunSummary:
    """Run `job` on Ray to completion (or until stopped) and record it in the folder's manifest.

    Raises ConfigError / InputError before anything is sent, as a local run does.
    """
    if options.limit is not None:
        raise ConfigError("--limit is not supported with engine ray (run the sample locally)")
    budget = budget_for(job.model, PriceTable.load(options.prices), job.limits.max_cost_usd, job_file=str(job.file))
    source, duplicates, rows = await open_input(job, allow_duplicate_ids=options.allow_duplicate_ids)
    if duplicates:
        raise ConfigError("--allow-duplicate-ids is not supported with engine ray: make the input's ids unique")
    layout = Layout(
        keep=await source.keep_schema(), typed=job.schema_ if job.flatten else None, prefix=job.output.column_prefix
    )
    folder = job.output.path
    with claim(folder):
        resume.check_job(folder, job.fingerprint(), force=options.force)
        final, stored = await anyio.to_thread.run_sync(
            lambda: resume.final_ids(folder, retry_failed=options.retry_failed)
        )
        done = await anyio.to_thread.run_sync(lambda: DoneIds(resume.in_chunks(final)))
        stats = RunStats(total_rows=max(0, rows - len(done)), skipped_rows=len(done))
        offsets = {} if job.input.id_field else await anyio.to_thread.run_sync(_offsets, source)
        plan = Plan(job, options.run_id, layout, done, offsets, len(source.files) > 1, _fresh(budget))
        with _session(job, key):
            run = _Run(job, options.run_id, stats, budget, plan, source)
            on_start(LiveRun(options.run_id, stats, run, budget, run))
            failed = await run.drive(compact=stored > 0)
    return RunSummary(
        run_id=options.run_id,
        output=folder,
        stats=stats,
        exit_code=run.exit_code(failed),
        stopped_by=run.stopped_by,
        budget=budget,
        failed_fraction=failed,
        limiter=run.snapshot(),
    )


class _Run:
    """One run on the cluster, seen from the driver: the authority, the dataset, the commits, the manifest.

    It is also what a display reads (`snapshot`: the shared limiter) and what Ctrl-C stops (`stop`).
    """

    def __init__(
        self, job: Job, run_id: str, stats: RunStats, budget: Budget | None, plan: Plan, source: InputSource
    ) -> None:
        self._job = job
        self._run_id = run_id
        self._stats = stats
        self._plan = plan
        self._source = source
        self._started = anyio.current_time()
        self._started_wall = time.time()
        # Typed Any: Ray's stubs do not see an actor's remote methods. One event loop serves every call.
        self._authority: Any = ray.remote(Authority).options(num_cpus=0, max_concurrency=1000).remote(limits_for(job))
        self._status: Status | None = None
        self._stopping: BatchgenError | None = None
        self._committer = Committer(
            job.output.path,
            run_id,
            stats,
            budget,
            flush_rows=job.output.flush_rows,
            flush_seconds=job.output.flush_seconds,
        )

    def __repr__(self) -> str:
        return f"<ray run {self._run_id}: {self._stats.done} rows committed, stopping={self._stopping}>"

    @property
    def stopped_by(self) -> BatchgenError | None:
        stop = None if self._status is None else self._status.stop
        return stop.error() if stop is not None else self._stopping

    def snapshot(self) -> LimiterSnapshot:
        """The shared limiter as last read from the authority (every `STATUS_S`)."""
        if self._status is None:
            return _IDLE
        return self._status.limiter

    def stop(self, reason: BatchgenError | None = None) -> None:
        """Every worker takes no new rows; rows in flight finish and are committed. Safe to call twice."""
        if reason is not None and self._stopping is None:
            self._stopping = reason
            self._authority.stop.remote(Stop.of(reason))

    async def drive(self, *, compact: bool) -> float:
        """Run the dataset into the folder, compact it and record the run; the folder's failed fraction."""
        folder = self._job.output.path
        failed = 0.0
        error: BatchgenError | None = None
        try:
            self._record(exit_code=None)
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch)
                group.start_soon(self._committer.flush_periodically)
                await self._consume()
                group.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await self._committer.flush()
                await self._read_status()
                self._log_workers()
                if compact or self._committer.repeated:
                    await anyio.to_thread.run_sync(resume.compact, folder, self._run_id)
                failed = await anyio.to_thread.run_sync(resume.failed_fraction, folder)
        except BatchgenError as exc:
            error = exc
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._committer.flush()
            self._record(exit_code=self.exit_code(failed, error))
            ray.kill(self._authority)
        return failed

    def exit_code(self, failed_fraction: float, error: BatchgenError | None = None) -> ExitCode:
        stopped_by = error or self.stopped_by
        if stopped_by is not None:
            return exit_code_for(stopped_by)
        if failed_fraction > self._job.limits.max_failed_fraction:
            return ExitCode.FAILED_ROWS
        return ExitCode.OK

    async def _consume(self) -> None:
        batches = iter(self._dataset().iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2))
        try:
            while True:
                # Not abandoned on cancel: a thread still inside Ray after the session ends would start a new
                # local instance (Ray's auto-init). A second Ctrl-C waits for the block being received.
                table = await anyio.to_thread.run_sync(_next_block, batches)
                if table is None:
                    return
                await self._committer.add(table)
        finally:
            del batches  # dropping the iterator stops the pipeline, and every worker with it

    def _dataset(self) -> ray.data.Dataset:
        spec: RaySpec = self._job.ray
        rows = InputRows(self._source.files, self._source.kind, block_rows=spec.block_rows)
        dataset: ray.data.Dataset = (
            ray.data.read_datasource(rows)
            # Small blocks: what a worker's death repeats, and how often the driver commits.
            .repartition(target_num_rows_per_block=spec.block_rows)
            .map_batches(
                RunnerUDF,
                fn_constructor_args=(self._plan, self._authority),
                batch_size=spec.block_rows,
                batch_format="pyarrow",
                num_cpus=spec.worker_cpus,
                compute=ray.data.ActorPoolStrategy(
                    size=spec.workers, max_concurrent_calls_per_actor=spec.blocks_per_worker
                ),
            )
        )
        return dataset

    async def _watch(self) -> None:
        """Keep the authority's status fresh for the display, and log each worker's figures now and then."""
        logged = anyio.current_time()
        while True:
            await self._read_status()
            if anyio.current_time() - logged >= DEFAULT_INTERVAL_S:
                self._log_workers()
                logged = anyio.current_time()
            await anyio.sleep(STATUS_S)

    async def _read_status(self) -> None:
        status: Status = await self._authority.status.remote()
        self._status = status
        self._stats.in_flight = sum(w.in_flight for w in status.workers.values())
        self._stats.rate_limited = sum(w.rate_limited for w in status.workers.values())

    def _log_workers(self) -> None:
        if self._status is None:
            return
        for state in self._status.workers.values():
            log.info(
                "worker %s: %d rows done, %d in flight, %d attempts, %d x 429, $%.6f",
                state.worker,
                state.done,
                state.in_flight,
                state.attempts,
                state.rate_limited,
                state.spent_usd,
                extra={
                    "event": "worker_progress",
                    "run_id": self._run_id,
                    "worker": state.worker,
                    "host": state.host,
                    "pid": state.pid,
                    "done": state.done,
                    "in_flight": state.in_flight,
                    "attempts": state.attempts,
                    "rate_limited": state.rate_limited,
                    "cost_usd": round(state.spent_usd, 9),
                    "authority_calls": self._status.calls,
                },
            )

    def _record(self, *, exit_code: ExitCode | None) -> None:
        stats, stopped_by = self._stats, self.stopped_by
        run = RunRecord(
            run_id=self._run_id,
            started_at=utc_iso(self._started_wall),
            ended_at=None if exit_code is None else utc_iso(time.time()),
            model=self._job.model,
            exit_code=None if exit_code is None else int(exit_code),
            rows=stats.done,
            skipped_rows=stats.skipped_rows,
            counts={status.value: count for status, count in stats.counts.items()},
            tokens=stats.usage.totals(),
            stopped_by=None if stopped_by is None else f"{type(stopped_by).__name__}: {stopped_by}",
        )
        record_run(self._job.output.path, job_record(self._job), run)


@contextmanager
def _session(job: Job, key: ApiKey) -> Iterator[None]:
    """Ray for the run: the caller's when already initialised (a notebook, a test), else one started (no
    address) or joined (`[ray] address`) here and shut down after the run."""
    # Ray Data's own dataclass assigns its deprecated fields when first built (ray/data/context.py).
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.data\.context")
    if ray.is_initialized():
        _configure_data()
        yield
        return
    address = job.ray.address
    local = address is None
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
            # A local instance's workers get the key from here; a cluster's read it from their own environment.
            runtime_env={"env_vars": {job.api_key_env: key.reveal()}} if local else None,
            num_cpus=os.cpu_count() if local else None,
            object_store_memory=OBJECT_STORE_BYTES if local else None,
        )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot start or reach Ray at {address or 'a new local instance'}: {exc}") from exc
    try:
        _configure_data()
        yield
    finally:
        ray.shutdown()


def _configure_data() -> None:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def _next_block(batches: Iterator[Any]) -> pa.Table | None:
    try:
        table: pa.Table = next(batches)
    except StopIteration:
        return None
    except ray.exceptions.RayError as exc:
        raise OutputError(f"the Ray dataset failed: {exc}", path="ray") from exc
    return table


def _offsets(source: InputSource) -> dict[str, int]:
    """Each input file's first row number in the whole input (a job without an id field numbers rows)."""
    offsets: dict[str, int] = {}
    first = 0
    for file in source.files:
        offsets[str(file)] = first
        first += _rows_in(file, source.kind)
    return offsets


def _rows_in(file: Path, kind: str) -> int:
    try:
        if kind == "parquet":
            return int(pq.ParquetFile(file).metadata.num_rows)
        with file.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read: {exc}", file=str(file)) from exc


def _fresh(budget: Budget | None) -> Budget | None:
    """A worker's own budget: the run's price and cap, nothing spent yet."""
    return None if budget is None else Budget(budget.price, budget.cap_usd)


_IDLE = LimiterSnapshot(
    state="starting",
    rpm=None,
    tpm=None,
    configured_rpm=None,
    configured_tpm=None,
    requests_per_day=None,
    waiting=0,
    cooling_down_until=None,
    cooldown_remaining=0.0,
    rate_limited=0,
    admitted=0,
    tokens=0,
    achieved_rpm=0.0,
    achieved_tpm=0.0,
)
