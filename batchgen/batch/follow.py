"""One batch job's life, from its spooled files to its results file: what the carrier follows each job with.

    spooled  -> upload the input file (resumable)                                          -> uploaded
    uploaded -> create the job, within `max_jobs` at once; after a failed create, look it
                up by its display name before creating it again (never two jobs)           -> running
    creating -> (left by a killed run) look the job up; create it only if it is not there  -> running
    running  -> poll it (after 1 s, then at doubling intervals up to `poll_s`), cancel it
                at the deadline, and once it ends download its results file                -> ended

Every step saves the job's new phase in the run's `Book` (the folder's record, `results.batches`) before the
next one starts, so a run killed between any two steps takes the job up where it was.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import anyio

from batchgen.batch.collect import Rules
from batchgen.errors import (
    ApiError,
    AuthError,
    FatalApiError,
    OutputError,
    RateLimited,
    RequestRejected,
)
from batchgen.gemini.batch import SUCCEEDED, Operation
from batchgen.results.batches import (
    Batches,
    Submission,
    batch_dir,
    remove,
    requests_path,
    results_path,
    save_batches,
)
from batchgen.results.folder import place

log = logging.getLogger(__name__)
# Polls of a job that SUCCEEDED without naming its results file yet (a live quirk) before it counts as lost.
_OUTPUT_LAG_POLLS = 10
_FIRST_POLL_S = 1.0


class Jobs(Protocol):
    """The Files and Batch API calls the carrier makes (`batch.client.BatchClient`)."""

    async def upload(self, path: Path, display_name: str) -> str: ...
    async def create(self, display_name: str, input_file: str) -> Operation: ...
    async def get(self, name: str) -> Operation: ...
    async def find(self, display_name: str) -> Operation | None: ...
    async def cancel(self, name: str) -> None: ...
    async def download(self, file: str, destination: Path) -> int: ...
    async def delete_file(self, file: str) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How jobs are made and followed, and what a row may get (`rules`)."""

    rules: Rules
    max_file_bytes: int
    max_jobs: int = 100
    poll_s: float = 30.0
    deadline_s: float | None = None
    # Create calls that fail (and the job was not made) before the run stops with the error.
    max_attempts: int = 6


class Book:
    """The folder's record of batch jobs as a run keeps it: changed in memory at once, for every reader, and
    saved to the folder in order, each write holding every change before it."""

    def __init__(self, folder: Path, batches: Batches) -> None:
        self.folder = folder
        self.batches = batches
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"Book({len(self.batches.jobs)} jobs, {len(self.batches.live)} live)"

    def get(self, job_id: str) -> Submission:
        return self.batches.get(job_id)

    def display_name(self, job: Submission) -> str:
        return self.batches.display_name(job)

    async def save(self, *changed: Submission) -> None:
        """Record changed jobs (new ones added); durable once this returns."""
        self.batches = self.batches.updated(*changed)
        async with self._lock:
            await anyio.to_thread.run_sync(save_batches, self.folder, self.batches)


class Follower:
    """Follows jobs through their phases (see the module docstring); `ended(job_id)` is told of each job that
    reaches `ended`. Holds the run's slots: jobs pending or running at once."""

    def __init__(
        self,
        jobs: Jobs,
        book: Book,
        policy: BatchPolicy,
        *,
        ended: Callable[[str], None],
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._jobs = jobs
        self._book = book
        self._policy = policy
        self._ended = ended
        self._clock = clock
        self._sleep = sleep
        self._folder = book.folder
        self._slots = _Slots(policy.max_jobs)

    def __repr__(self) -> str:
        return f"Follower(slots {self._slots.used}/{self._slots.limit})"

    def attach(self, job: Submission) -> None:
        """A job an earlier run left running holds a slot from the start."""
        if job.phase == "running":
            self._slots.force()

    async def follow(self, name: str) -> None:
        """Take job `name` from the phase it is in to `ended` (or leave it where a stop finds it)."""
        while (job := self._book.get(name)).phase in _STEPS:
            await _STEPS[job.phase](self, job)

    async def _upload(self, job: Submission) -> None:
        file = await self._jobs.upload(requests_path(self._folder, job.id), self._book.display_name(job))
        await self._book.save(job.to("uploaded", file=file))

    async def _create(self, job: Submission) -> None:
        """Create the job: a create is never retried blindly (after a lost answer a retry would make a second
        job): after a failure the job is looked up by its display name, and created again only if absent."""
        await self._slots.take()
        file, name = job.file, self._book.display_name(job)
        assert file is not None
        for attempt in itertools.count(1):
            await self._book.save(job.to("creating"))
            try:
                operation = await self._jobs.create(name, file)
            except (RequestRejected, AuthError) as exc:
                # A file the Files API no longer has is answered 403 PERMISSION_DENIED ("...or it may not exist").
                self._slots.give()
                await self._upload_again(job, exc)
                return
            except ApiError as exc:
                found = None if isinstance(exc, FatalApiError) else await self._jobs.find(name)
                if found is None:
                    await self._book.save(job.to("uploaded"))
                    await self._back_off(exc, attempt)
                    continue
                operation = found
            await self._running(job, operation)
            return

    async def _upload_again(self, job: Submission, error: ApiError) -> None:
        """The create was refused: its input file may be gone (the Files API keeps files 48 h). It is uploaded
        once more; refused again (or the upload refused: a bad key), the run stops with the error."""
        if job.note == "uploaded again":
            raise error
        log.warning("batch job %s: its input file was refused (%s); uploading it again", job.id, error)
        await self._book.save(job.to("spooled", file=None, note="uploaded again"))

    async def _back_off(self, error: ApiError, attempt: int) -> None:
        if isinstance(error, FatalApiError):
            raise error
        if isinstance(error, RateLimited) and self._slots.used > 1:
            # Too many jobs (or enqueued tokens) at once: wait for one of ours to end, then try again.
            self._slots.give()
            await self._slots.take(after_next_free=True)
            return
        if attempt >= self._policy.max_attempts:
            raise error
        delay = getattr(error, "retry_after", None) or min(self._policy.poll_s, 2.0**attempt)
        await self._sleep(delay)

    async def _recover(self, job: Submission) -> None:
        """A job left `creating`: if the create reached the API, it is followed; else it is created again."""
        operation = await self._jobs.find(self._book.display_name(job))
        if operation is None:
            await self._book.save(job.to("uploaded"))
            return
        self._slots.force()
        await self._running(job, operation)

    async def _running(self, job: Submission, operation: Operation) -> None:
        created = _epoch(operation.create_time) or self._clock()
        counts = dict(operation.counts)
        running = job.to("running", job=operation.name, created_at=created, state=operation.state, counts=counts)
        await self._book.save(running)
        log_event(running, f"batch job {job.id} is {operation.name}: {job.rows:,} rows, {job.size:,} bytes")
        await anyio.to_thread.run_sync(remove, requests_path(self._folder, job.id))

    async def _watch(self, job: Submission) -> None:
        """Poll the job until it ends (cancelling it at the deadline), then fetch its results."""
        delay = min(_FIRST_POLL_S, self._policy.poll_s)
        lagged = 0
        while True:
            operation = await self._poll(job)
            if operation is not None:
                job = await self._noted(job, operation)
                if operation.terminal and (operation.state != SUCCEEDED or operation.responses_file):
                    break
                lagged += operation.terminal
                if lagged > _OUTPUT_LAG_POLLS:
                    break
            left = self._until_deadline(job)
            if left is not None and left <= 0 and job.outcome != "deadline":
                job = await self._cancel_at_deadline(job)
                continue
            await self._sleep(delay if left is None else max(0.0, min(delay, left)))
            delay = min(delay * 2, self._policy.poll_s)
        await self._end(job, operation)

    async def _poll(self, job: Submission) -> Operation | None:
        assert job.job is not None
        try:
            return await self._jobs.get(job.job)
        except RequestRejected as exc:  # the job is gone (deleted): its rows are lost with it
            return Operation(job.job, "NOT_FOUND", error=str(exc), done=True)
        except FatalApiError:
            raise
        except ApiError as exc:
            # A transient failure outlasting its retries: the job is still there; look again later.
            log.warning("batch job %s: cannot get its state (%s); trying again later", job.job, exc)
            return None

    async def _noted(self, job: Submission, operation: Operation) -> Submission:
        if (operation.state, dict(operation.counts)) == (job.state, dict(job.counts)):
            return job
        changed = job.to("running", state=operation.state, counts=dict(operation.counts))
        await self._book.save(changed)
        return changed

    def _until_deadline(self, job: Submission) -> float | None:
        deadline = self._policy.deadline_s
        if deadline is None or job.created_at is None:
            return None
        return job.created_at + deadline - self._clock()

    async def _cancel_at_deadline(self, job: Submission) -> Submission:
        name = job.job
        assert name is not None
        # Saved first: a rerun must know that this job's rows go online, whatever state it ends in.
        await self._book.save(job := job.to("running", outcome="deadline"))
        log.info("batch job %s passed its deadline: cancelling it; its rows not answered go online", name)
        try:
            await self._jobs.cancel(name)
        except RequestRejected as exc:  # it ended meanwhile
            log.info("batch job %s: cancel refused (%s)", name, exc)
        return job

    async def _end(self, job: Submission, operation: Operation | None) -> None:
        self._slots.give()
        assert operation is not None
        succeeded = operation.state == SUCCEEDED and operation.responses_file is not None
        outcome = "succeeded" if succeeded else job.outcome or "lost"
        note = operation.error or (None if succeeded else f"ended {operation.state}")
        results = operation.responses_file is not None
        if results:
            assert operation.responses_file is not None
            await self._download(job, operation.responses_file)
        ended = job.to(
            "ended",
            outcome=outcome,
            results=results,
            output_file=operation.responses_file,
            note=note,
            state=operation.state,
            ended_at=self._clock(),
        )
        await self._book.save(ended)
        log_event(
            ended, f"batch job {job.id} ended {operation.state}" + (f": {note}" if note and not succeeded else "")
        )
        self._ended(job.id)

    async def _download(self, job: Submission, file: str) -> None:
        final = results_path(self._folder, job.id)
        temporary = batch_dir(self._folder) / f".{final.name}.tmp"
        await self._jobs.download(file, temporary)
        try:
            await anyio.to_thread.run_sync(place, temporary, final)
        except OSError as exc:
            raise OutputError(f"cannot keep a batch results file: {exc.strerror or exc}", path=str(final)) from exc


_STEPS: Mapping[str, Callable[[Follower, Submission], Awaitable[None]]] = {
    "spooled": Follower._upload,
    "uploaded": Follower._create,
    "creating": Follower._recover,
    "running": Follower._watch,
}
"""What follows each phase of a job until it ends; ended jobs are collected, not followed."""
FOLLOWED = frozenset(_STEPS)


class _Slots:
    """Jobs pending or running at once, within the limit: `take` waits for room; `force` takes it regardless
    (a job that already exists)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = anyio.Event()

    async def take(self, *, after_next_free: bool = False) -> None:
        if after_next_free:
            await self._freed.wait()
        while self.used >= self.limit:
            await self._freed.wait()
        self.used += 1

    def force(self) -> None:
        self.used += 1

    def give(self) -> None:
        self.used -= 1
        self._freed.set()
        self._freed = anyio.Event()


def log_event(job: Submission, message: str) -> None:
    """An operator's line about a batch job, with its figures as event fields for the JSON log."""
    fields = {
        "event": "batch_job",
        "job": job.id,
        "phase": job.phase,
        "batch": job.job,
        "rows": job.rows,
        "state": job.state,
    }
    log.info("%s", message, extra=fields)


def _epoch(timestamp: str | None) -> float | None:
    """An RFC 3339 time (nanoseconds allowed) in seconds since the epoch."""
    if not timestamp:
        return None
    whole, _, fraction = timestamp.rstrip("Z").partition(".")
    try:
        seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    except ValueError:
        return None
    return seconds + (float(f"0.{fraction}") if fraction.isdigit() else 0.0)
