"""A results folder's batch jobs looked at (`batchgen status`) and given up (`batchgen cancel`), between runs.

Status reads the folder's record of its jobs (`results.batches`) and, for the jobs still under way, asks the
Batch API how each stands; it changes nothing. Cancel holds the folder as a run would, cancels every job not
yet ended and releases its rows: the next `batchgen run` sends them again (online or in new jobs). Jobs that
ended already keep their answers, and the next run collects them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio

from batchgen.batch.follow import Jobs
from batchgen.errors import ApiError, ConfigError, FatalApiError, RequestRejected
from batchgen.gemini.batch import Operation
from batchgen.results.batches import Batches, Submission, read_batches, remove, requests_path, save_batches
from batchgen.results.folder import claim

log = logging.getLogger(__name__)
# Phases of a job that has not ended: what `cancel` stops.
_UNDER_WAY = ("spooled", "uploaded", "creating", "running")
_CANCELLED = "cancelled by batchgen cancel"


@dataclass(frozen=True, slots=True)
class JobStatus:
    """One job: as recorded, and as the API shows it now (None when not asked, or it could not say)."""

    record: Submission
    now: Operation | None = None
    problem: str | None = None

    @property
    def state(self) -> str:
        return (self.now.state if self.now else self.record.state) or "-"

    def count(self, name: str) -> int:
        counts = self.now.counts if self.now else self.record.counts
        return int(counts.get(name, 0))


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """A folder's batch jobs, oldest first; `origin` is where they live."""

    folder: Path
    batches: Batches
    jobs: tuple[JobStatus, ...]

    @property
    def live(self) -> int:
        return sum(1 for job in self.jobs if job.record.live)


def read_record(folder: Path) -> Batches:
    """The folder's record of batch jobs; a ConfigError when it has none."""
    batches = read_batches(folder)
    if batches is None:
        raise ConfigError(f"{folder} has no batch jobs (it was never run with mode = batch)")
    return batches


async def status(folder: Path, jobs: Jobs | None) -> FolderStatus:
    """Every job of the folder; the live ones as the API shows them now when `jobs` (a client) is given."""
    batches = await anyio.to_thread.run_sync(read_record, folder)
    found = []
    for record in batches.jobs:
        if jobs is None or not record.live or record.job is None:
            found.append(JobStatus(record))
            continue
        try:
            found.append(JobStatus(record, await jobs.get(record.job)))
        except FatalApiError:
            raise
        except ApiError as exc:
            found.append(JobStatus(record, problem=str(exc)))
    return FolderStatus(folder, batches, tuple(found))


async def cancel(folder: Path, jobs: Jobs) -> tuple[list[Submission], list[Submission]]:
    """Cancel every job of the folder not yet ended and release its rows; (the jobs cancelled, the jobs
    that had ended and wait for a run to collect them). Refused while a run holds the folder."""
    with claim(folder):
        batches = await anyio.to_thread.run_sync(read_record, folder)
        cancelled: list[Submission] = []
        for record in batches.live:
            if record.phase not in _UNDER_WAY:
                continue
            name = record.job or await _created(batches, record, jobs)
            if name is not None:
                await _cancel(jobs, name)
            released = record.to("released", note=_CANCELLED, job=name)
            batches = batches.updated(released)
            await anyio.to_thread.run_sync(save_batches, folder, batches)
            await anyio.to_thread.run_sync(remove, requests_path(folder, record.id))
            cancelled.append(released)
        ended = [record for record in batches.live if record.phase not in _UNDER_WAY]
    return cancelled, ended


async def _created(batches: Batches, record: Submission, jobs: Jobs) -> str | None:
    if record.phase != "creating":
        return None
    found = await jobs.find(batches.display_name(record))
    return None if found is None else found.name


async def _cancel(jobs: Jobs, name: str) -> None:
    try:
        await jobs.cancel(name)
    except RequestRejected as exc:  # it ended meanwhile; its rows are released all the same
        log.info("batch job %s could not be cancelled: %s", name, exc)


def render(folder_status: FolderStatus) -> str:
    """The folder's jobs as a small table, and what to do next."""
    batches = folder_status.batches
    origin = batches.origin
    rows = sum(job.record.rows for job in folder_status.jobs)
    lines = [
        f"{folder_status.folder}: {len(folder_status.jobs)} batch job(s), {folder_status.live} under way, "
        f"{rows:,} rows sent in all; model {origin.get('model')}, at {origin.get('base_url')}"
    ]
    header = ("job", "phase", "state", "rows", "answered", "failed", "pending", "created (UTC)", "batch")
    table = [header]
    for job in folder_status.jobs:
        record = job.record
        table.append(
            (
                record.id,
                record.phase,
                job.state,
                f"{record.rows:,}",
                f"{job.count('successfulRequestCount'):,}",
                f"{job.count('failedRequestCount'):,}",
                f"{job.count('pendingRequestCount'):,}",
                _time(record.created_at),
                record.job or "-",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines.extend(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table
    )
    lines.extend(f"  {job.record.id}: {job.problem}" for job in folder_status.jobs if job.problem)
    lines.extend(f"  {job.record.id}: {job.record.note}" for job in folder_status.jobs if job.record.note)
    if folder_status.live:
        lines.append(
            "Rerun the job (`batchgen run JOB`) to collect the jobs under way; "
            f"`batchgen cancel {folder_status.folder}` gives them up and sends their rows again next run."
        )
    return "\n".join(lines) + "\n"


def _time(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
