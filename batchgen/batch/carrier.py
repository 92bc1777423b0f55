"""Batch mode's carrier: a run's rows spooled into Batch API jobs, each job followed to its end, its results
written into the results folder; the jobs a stopped or killed run left behind re-attached, never resubmitted.

    attach    the folder's live jobs (`results.batches`) are taken up in the phase each was left in; their
              ids are skipped when new rows are read
    spool     new rows become input lines (the online request bodies), a job per `max_file_bytes`
    follow    each job from upload to its results file (`follow.Follower`)
    collect   ended jobs' rows joined by key with the input (`collect`): written, resubmitted in follow-up
              jobs, or sent online (`online.OnlineLanes`); one pass over the input for every job ready

Each step saves the job's new phase before the next one starts, so a run killed anywhere resumes where it was:
nothing submitted twice, no job forgotten. Stopping (Ctrl-C) leaves the jobs running at the Batch API; rows
already online get the runner's grace period. Implements the carrier interface `pipeline` drives (run, stop,
abort, stats, stopped_by), like the online runner.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc

from batchgen.batch.collect import Elsewhere, Judge, Online, Plan, Resubmit, Write, dispose
from batchgen.batch.follow import FOLLOWED, BatchPolicy, Book, Follower, Jobs, log_event
from batchgen.batch.online import MakeRunner, OnlineLanes
from batchgen.errors import (
    ApiError,
    BatchgenError,
    OutputError,
)
from batchgen.gemini.batch import request_line
from batchgen.gemini.request import RequestTemplate
from batchgen.input.ids import IdSet
from batchgen.records import Admission, Prompt, Result, RunStats, Sink, Status
from batchgen.results import rows
from batchgen.results.batches import (
    Batches,
    Carried,
    Spool,
    Submission,
    job_id,
    read_batches,
    read_rows,
    remove,
    requests_path,
    results_path,
    rows_path,
)

log = logging.getLogger(__name__)
Rows = Callable[[Container[str]], AsyncIterator[Prompt]]
"""The input's prompts, in order, but for the ids in the container given (a pass over the input)."""


class DurableSink(Sink, Protocol):
    """A sink that can be told to make what it holds durable (a job is marked collected only after that)."""

    async def flush(self) -> None: ...


class BatchCarrier:
    """Runs prompts through Batch API jobs into a sink; see the module docstring."""

    def __init__(
        self,
        jobs: Jobs,
        *,
        folder: Path,
        origin: Mapping[str, Any],
        templates: Mapping[str, RequestTemplate],
        online_templates: Mapping[str, RequestTemplate],
        judge: Judge,
        policy: BatchPolicy,
        rows: Rows,
        final: Container[str],
        make_runner: MakeRunner,
        stats: RunStats,
        admission: Admission | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._jobs = jobs
        self._folder = folder
        self._origin = dict(origin)
        self._templates = templates
        self._online_templates = online_templates
        self._judge = judge
        self._policy = policy
        self._rows = rows
        self._final = final
        self._make_runner = make_runner
        self._admission = admission
        self._clock = clock
        self._sleep = sleep
        self.stats = stats
        self.stopped_by: BatchgenError | None = None
        self._book = Book(folder, Batches.new(origin))
        self._follower = Follower(jobs, self._book, policy, ended=self._queue, clock=clock, sleep=sleep)
        self._numbers: Iterator[int] = itertools.count(1)
        self._in_jobs = IdSet()
        self._ready: list[str] = []
        self._spooling = True
        self._wake = anyio.Event()
        self._online_left: Counter[str] = Counter()
        self._scope = anyio.CancelScope()
        self._work: anyio.abc.TaskGroup | None = None
        self._lanes: OnlineLanes | None = None
        self._sink: DurableSink | None = None

    def __repr__(self) -> str:
        return f"BatchCarrier({self.note()}, done={self.stats.done}, stopping={self.stopping})"

    @property
    def stopping(self) -> bool:
        return self._scope.cancel_called

    @property
    def live_jobs(self) -> tuple[Submission, ...]:
        """The folder's jobs still on their way (after a stop: those a rerun takes up)."""
        return self._book.batches.live

    @property
    def jobs_at_google(self) -> tuple[Submission, ...]:
        """Live jobs that exist at the Batch API (or may: a create whose answer was lost), running on without
        this run."""
        return tuple(job for job in self._book.batches.live if job.phase in ("creating", "running"))

    def stop(self, reason: BatchgenError | None = None) -> None:
        """Stop at once: jobs stay at the Batch API for a rerun to re-attach; rows online get their grace period."""
        if reason is not None and self.stopped_by is None:
            self.stopped_by = reason
        self._scope.cancel()
        if self._lanes is not None:
            self._lanes.stop(reason)

    def abort(self, reason: BatchgenError | None = None) -> None:
        """Stop, and cancel the online requests still out at once (a second Ctrl-C)."""
        self.stop(reason)
        if self._lanes is not None:
            self._lanes.abort(reason)

    def note(self) -> str:
        """What the run waits on, for the progress display."""
        live = self._book.batches.live
        phases = Counter(job.state.lower() if job.phase == "running" and job.state else job.phase for job in live)
        text = f"batch: {len(live)} job(s)" + (
            f" ({', '.join(f'{n} {p}' for p, n in sorted(phases.items()))})" if live else ""
        )
        online = 0 if self._lanes is None else self._lanes.rows
        return text + (f", {online:,} row(s) online" if online else "")

    async def run(self, prompts: AsyncIterator[Prompt], sink: DurableSink) -> RunStats:
        """Send every prompt through batch jobs (until stopped) and write each row's result to `sink` once."""
        self._sink = sink
        lanes = OnlineLanes(
            self._make_runner,
            sink,
            templates=self._online_templates,
            max_reasks=self._policy.rules.max_reasks,
            written=self._online_written,
            stopped=self.stop,
            clock=self._clock,
        )
        self._lanes = lanes
        await self._guarded(self._attach)
        async with anyio.create_task_group() as outer:
            outer.start_soon(lanes.run)
            with self._scope:
                async with anyio.create_task_group() as work:
                    self._work = work
                    self._resume(work)
                    work.start_soon(self._guarded, self._collector)
                    await self._guarded(self._spool, prompts)
            lanes.close()
        return self.stats

    async def _guarded(self, step: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run one of the carrier's tasks; an API or write error it meets stops the run, with that reason."""
        try:
            await step(*args)
        except (ApiError, OutputError) as exc:
            self.stop(exc)

    # --- attach and spool ------------------------------------------------------------------------------------

    async def _attach(self) -> None:
        """Take up the folder's live jobs: their ids are in flight, and each running job holds a slot."""
        batches = await anyio.to_thread.run_sync(read_batches, self._folder)
        self._book.batches = Batches.new(self._origin) if batches is None else replace(batches, origin=self._origin)
        self._numbers = itertools.count(len(self._book.batches.jobs) + 1)
        live = self._book.batches.live
        self._in_jobs, waiting = await anyio.to_thread.run_sync(self._live_ids, live)
        self.stats.in_flight += waiting
        for job in live:
            self._follower.attach(job)
        if live:
            ids = ", ".join(f"{job.id} ({job.phase})" for job in live)
            log.info(
                "re-attaching to %d batch job(s) of an earlier run: %s",
                len(live),
                ids,
                extra={"event": "batch_reattach", "jobs": [job.id for job in live]},
            )
        await self._book.save()

    def _live_ids(self, live: tuple[Submission, ...]) -> tuple[IdSet, int]:
        waiting = 0

        def chunks() -> Iterator[list[str]]:
            nonlocal waiting
            for job in live:
                ids = [key for key, _ in read_rows(self._folder, job.id)]
                waiting += sum(1 for key in ids if key not in self._final)
                yield ids

        return IdSet(chunks()), waiting

    def _resume(self, work: anyio.abc.TaskGroup) -> None:
        for job in self._book.batches.live:
            if job.phase in FOLLOWED:
                work.start_soon(self._guarded, self._follower.follow, job.id)
            else:  # ended or online: its rows are collected again, skipping those already written
                self._ready.append(job.id)

    async def _spool(self, prompts: AsyncIterator[Prompt]) -> None:
        spooler = _Spooler(self, "base")
        try:
            async for prompt in prompts:
                if prompt.id in self._in_jobs:
                    continue  # in a live job of an earlier run, which is followed instead
                if self._refused():
                    break
                if prompt.problem is not None:
                    await self._emit(rows.unsendable(prompt, prompt.problem), in_flight=False)
                    continue
                line = request_line(prompt.id, self._templates["base"].render(prompt.contents))
                if len(line) > self._policy.max_file_bytes:
                    problem = f"its request is {len(line):,} bytes, more than a batch input file may hold (max_file_mb)"
                    await self._emit(rows.unsendable(prompt, problem), in_flight=False)
                    continue
                self.stats.in_flight += 1
                if (sealed := await spooler.add(prompt.id, line, None)) is not None:
                    await self._submitted(sealed)
            if (sealed := await spooler.finish()) is not None:
                await self._submitted(sealed)
        finally:
            spooler.discard()
            self._spooling = False
            self._wake.set()

    def _refused(self) -> bool:
        refusal = None if self._admission is None else self._admission.refusal(self.stats.in_flight)
        if refusal is not None and self.stopped_by is None:
            self.stopped_by = refusal  # the jobs spooled so far still go out and are collected
        return refusal is not None

    async def _submitted(self, *jobs: Submission) -> None:
        """Jobs whose files are sealed: recorded, then followed."""
        await self._book.save(*jobs)
        self._follow_all(jobs)

    def _follow_all(self, jobs: tuple[Submission, ...] | list[Submission]) -> None:
        assert self._work is not None
        for job in jobs:
            self._work.start_soon(self._guarded, self._follower.follow, job.id)

    def _new_id(self) -> str:
        return job_id(next(self._numbers))

    # --- follow a job to its end -----------------------------------------------------------------------------

    # --- collect ended jobs ----------------------------------------------------------------------------------

    def _queue(self, name: str) -> None:
        """A job ended: its rows are collected in the collector's next pass."""
        self._ready.append(name)
        self._wake.set()

    async def _collector(self) -> None:
        while True:
            self._wake = anyio.Event()
            if self._ready:
                ready, self._ready = self._ready, []
                await self._collect(ready)
                continue
            # Done when no job can end any more and none that ended waits to be collected (a job is `ended` on
            # record a moment before it joins `_ready`): what is left is online, in the lanes' hands.
            if not self._spooling and all(job.phase == "online" for job in self._book.batches.live):
                return
            await self._wake.wait()

    async def _collect(self, names: list[str]) -> None:
        """One pass over the input for every job in `names`: each of their rows written, resubmitted or sent
        online; then, once the rows written are durable, the jobs and their follow-ups saved in one write."""
        plans = {name: Plan(self._folder, self._book.get(name), self._final) for name in names}
        for plan in plans.values():
            await anyio.to_thread.run_sync(plan.load)
        skip = Elsewhere(plans, self._final)
        spoolers = {template: _Spooler(self, template) for template in self._templates}
        follow_ups: list[Submission] = []
        try:
            async for prompt in self._rows(skip):
                plan = skip.plan_of(prompt.id)
                plan.found += 1
                line = plan.line(prompt.id)
                action = dispose(
                    prompt,
                    plan.job,
                    plan.carried.get(prompt.id),
                    line,
                    rules=self._policy.rules,
                    judge=self._judge,
                    stats=self.stats,
                    now=self._clock(),
                )
                if isinstance(action, Write):
                    await self._emit(action.result)
                elif isinstance(action, Resubmit):
                    body = self._templates[action.template].render(prompt.contents)
                    if sealed := await spoolers[action.template].add(
                        prompt.id, request_line(prompt.id, body), action.carried
                    ):
                        follow_ups.append(sealed)
                elif isinstance(action, Online):
                    self._online_left[plan.job.id] += 1
                    self.stats.in_flight -= 1  # the runner counts it while it is out
                    assert self._lanes is not None
                    await self._lanes.send(prompt, plan.job.id, action.template, action.carried)
            for spooler in spoolers.values():
                if (sealed := await spooler.finish()) is not None:
                    follow_ups.append(sealed)
        finally:
            for spooler in spoolers.values():
                spooler.discard()
            for plan in plans.values():
                plan.close()
        for plan in plans.values():
            self._gone(plan)
        await self._settle([plan.job for plan in plans.values()], follow_ups)

    def _gone(self, plan: Plan) -> None:
        """Rows a job holds that the input no longer has (it was edited between runs): nothing to join their
        answers with, so they are not written; said loudly, and no longer counted in flight."""
        gone = len(plan.members) - plan.found - plan.final
        if gone > 0:
            log.warning(
                "batch job %s: %d of its rows are no longer in the input; their answers are not written",
                plan.job.id,
                gone,
                extra={"event": "batch_rows_gone", "job": plan.job.id, "rows": gone},
            )
            self.stats.in_flight -= gone

    async def _settle(self, jobs: list[Submission], follow_ups: list[Submission]) -> None:
        assert self._sink is not None
        await self._sink.flush()
        settled = [job.to("online") if self._online_left[job.id] else job.to("collected") for job in jobs]
        await self._book.save(*settled, *follow_ups)
        for job in settled:
            online = f", {self._online_left[job.id]:,} row(s) sent online" if self._online_left[job.id] else ""
            log_event(job, f"batch job {job.id} collected{online}")
        for job in follow_ups:
            log_event(job, f"batch job {job.id} follows up {job.rows:,} row(s) (re-asks, missing keys, lost jobs)")
        self._follow_all(follow_ups)
        for job in settled:
            if job.phase == "collected":
                await self._clean(job)

    async def _online_written(self, name: str) -> None:
        """A row sent online was written: its job is collected once its last one is, durably."""
        self._online_left[name] -= 1
        job = self._book.get(name)
        if self._online_left[name] == 0 and job.phase == "online":
            assert self._sink is not None
            await self._sink.flush()
            await self._book.save(collected := job.to("collected"))
            await self._clean(collected)

    async def _clean(self, job: Submission) -> None:
        """A collected job's files are no longer needed: the local ones go, and the remote ones (best effort:
        the Files API deletes them after 48 h anyway)."""
        paths = (
            rows_path(self._folder, job.id),
            results_path(self._folder, job.id),
            requests_path(self._folder, job.id),
        )
        await anyio.to_thread.run_sync(lambda: remove(*paths))
        for file in (job.file, job.output_file):
            if file is None:
                continue
            try:
                await self._jobs.delete_file(file)
            except ApiError as exc:
                log.debug("could not delete %s: %s", file, exc)

    async def _emit(self, result: Result, *, in_flight: bool = True) -> None:
        assert self._sink is not None
        await self._sink.write(result)
        if in_flight:
            self.stats.in_flight -= 1
        self.stats.record(result)
        if self._admission is not None:
            self._admission.charge(result)
        if result.status is not Status.OK:
            rows.log_problem(result)


class _Spooler:
    """Fills spools of one template one after another, each up to the job size limit; a full one is sealed."""

    def __init__(self, carrier: BatchCarrier, template: str) -> None:
        self._carrier = carrier
        self._template = template
        self._spool: Spool | None = None

    async def add(self, key: str, line: bytes, carried: Carried | None) -> Submission | None:
        """Add a row; the job that filled up to make room for it, sealed, if one did."""
        sealed = None
        if self._spool is not None and self._spool.size + len(line) > self._carrier._policy.max_file_bytes:
            sealed = await self.finish()
        if self._spool is None:
            self._spool = Spool(self._carrier._folder, self._carrier._new_id(), self._template).__enter__()
        self._spool.add(key, line, carried)
        return sealed

    async def finish(self) -> Submission | None:
        """Seal the spool being filled (None when there is none)."""
        spool, self._spool = self._spool, None
        if spool is None:
            return None
        try:
            return await anyio.to_thread.run_sync(spool.seal)
        finally:
            spool.__exit__(None, None, None)

    def discard(self) -> None:
        if self._spool is not None:
            self._spool.__exit__(None, None, None)
            self._spool = None
