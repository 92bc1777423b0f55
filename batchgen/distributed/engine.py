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
from batchgen.distributed.authority import Authority, Status, Stop, WorkerState
from batchgen.distributed.commit import Committer
from batchgen.distributed.done import DoneIds
from batchgen.distributed.rows import InputRows
from batchgen.distributed.worker import Plan, RunnerUDF
from batchgen.errors import BatchgenError, ConfigError, InputError, OutputError
from batchgen.input.reader import InputSource
from batchgen.job import Job, RaySpec
from batchgen.online.limiter.rate import LimiterSnapshot
from batchgen.pipeline import LiveRun, Recorded, RunOptions, RunSummary, limits_for, prepare, take_over
from batchgen.records import RunStats
from batchgen.report.budget import Budget
from batchgen.results import resume
from batchgen.results.folder import claim
from batchgen.secret import ApiKey

log = logging.getLogger("batchgen.distributed")

STATUS_S: Final = 0.5
"""How often the driver reads the authority's status for the display (shared limiter, workers in flight)."""

_BOM: Final = b"\xef\xbb\xbf"

OBJECT_STORE_BYTES: Final = 512 * 1024**2
"""A local instance's object store: blocks of results are small; Ray's default would take 30 % of RAM."""


async def execute(
    job: Job, key: ApiKey, options: RunOptions, *, on_start: Callable[[LiveRun], None] = lambda run: None
) -> RunSummary:
    """Run `job` on Ray to completion (or until stopped) and record it in the folder's manifest.

    Raises ConfigError / InputError before anything is sent, as a local run does.
    """
    if options.limit is not None or options.skip is not None:
        raise ConfigError("--limit is not supported with engine ray (run a sample locally)")
    budget, opened, layout = await prepare(job, options)
    if opened.duplicates:
        raise ConfigError("--allow-duplicate-ids is not supported with engine ray: make the input's ids unique")
    source = opened.source
    folder = job.output.path
    with claim(folder):
        layout = await take_over(folder, job, options, layout)
        final, _ = await anyio.to_thread.run_sync(
            lambda: resume.final_ids(folder, retry_failed=options.retry_failed, fingerprint=job.fingerprint())
        )
        done = await anyio.to_thread.run_sync(lambda: DoneIds(resume.in_chunks(final)))
        stats = RunStats(total_rows=max(0, opened.rows - len(done)), skipped_rows=len(done))
        offsets = await anyio.to_thread.run_sync(_offsets, source)
        plan = Plan(job, options.run_id, layout, done, offsets, len(source.files) > 1, _fresh(budget))
        with _session(job, key):
            run = _Run(job, options.run_id, stats, budget, plan, source)
            on_start(LiveRun(options.run_id, stats, run, budget, run))
            recorded = Recorded(job, options.run_id, run)
            # Compacted whatever the folder held: should Ray ever deliver an id twice, the newest row stays.
            tally = await recorded.around(run.drive, compact=True)
    return RunSummary(
        run_id=options.run_id,
        output=folder,
        stats=stats,
        exit_code=recorded.exit_code(tally),
        stopped_by=run.stopped_by,
        budget=budget,
        tally=tally,
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
        self._aborted = False
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

    @property
    def stats(self) -> RunStats:
        return self._stats

    @property
    def stopping(self) -> bool:
        return self._stopping is not None or (self._status is not None and self._status.stop is not None)

    def abort(self, reason: BatchgenError | None = None) -> None:
        """Stop, and stop receiving at once: blocks not yet received are lost to this run (the next sends them)."""
        self.stop(reason)
        self._aborted = True

    async def drive(self) -> None:
        """Receive every block the workers answer and commit it; the authority's last status is kept."""
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch)
                group.start_soon(self._committer.flush_periodically)
                await self._consume()
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._committer.flush()
                await self._read_status()
                self._log_workers()
        # The authority is not killed here: workers still report to it as the pool shuts down. Ray ends it once
        # the last handle (this run's, the workers') is gone, or with the session.

    async def _consume(self) -> None:
        batches = iter(self._dataset().iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2))
        try:
            while True:
                # Not abandoned on cancel: a thread still inside Ray after the session ends would start a new
                # local instance (Ray's auto-init). A second Ctrl-C waits for the block being received.
                table = await anyio.to_thread.run_sync(_next_block, batches)
                if table is None or self._aborted:
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
        """A `worker_progress` line per worker: rows committed from it (exact: counted as the driver writes
        them), and its own last report (in flight, attempts, 429s, spend; up to `link.REPORT_S` old)."""
        if self._status is None:
            return
        reported = self._status.workers
        committed = self._committer.by_worker
        for worker in sorted(set(reported) | set(committed)):
            state = reported.get(worker, WorkerState(worker))
            log.info(
                "worker %s: %d rows committed, %d in flight, %d attempts, %d x 429, $%.6f",
                worker,
                committed[worker],
                state.in_flight,
                state.attempts,
                state.rate_limited,
                state.spent_usd,
                extra={
                    "event": "worker_progress",
                    "run_id": self._run_id,
                    "worker": worker,
                    "host": state.host,
                    "pid": state.pid,
                    "done": committed[worker],
                    "in_flight": state.in_flight,
                    "attempts": state.attempts,
                    "rate_limited": state.rate_limited,
                    "cost_usd": round(state.spent_usd, 9),
                    "authority_calls": self._status.calls,
                },
            )


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
            # As `input.reader` counts rows: non-blank lines, a UTF-8 byte-order mark on the first not counted.
            return sum(1 for n, line in enumerate(handle) if (line if n else line.removeprefix(_BOM)).strip())
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
