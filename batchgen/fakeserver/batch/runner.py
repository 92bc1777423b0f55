"""Running a batch job: its timeline, its lines answered over time, and its output delivered at the end.

A job waits PENDING for `pending_share` of its turnaround, then runs: its lines are answered in a shuffled
order, paced so that line k of n is done k/n of the way through the running time (so `batchStats` moves and a
cancel finds some lines done). Then it SUCCEEDS and, `output_lag_s` later, its output appears: a results file
`files/batch-<id>` (JSONL, in the order answered) or the inline responses (in input order). A job fated to
fail stops halfway through its lines, FAILED; one fated to expire never runs and ends EXPIRED at its
turnaround. Neither has output. Everything waits on timers; a cancel or delete cancels the task.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import orjson

from batchgen.fakeserver.batch.answers import Context, answer
from batchgen.fakeserver.batch.config import BatchConfig
from batchgen.fakeserver.batch.files import FileStore
from batchgen.fakeserver.batch.jobs import CANCELLED, EXPIRED, FAILED, RUNNING, SUCCEEDED, BatchJob
from batchgen.fakeserver.batch.ledger import BatchLedger
from batchgen.fakeserver.batch.resources import Clock, failed_precondition
from batchgen.fakeserver.errors import RpcError

# Lines answered between two timer waits: about 1/_STEPS of the job, so progress shows in steps, and at most
# _SLICE, so a big job leaves the event loop free for other requests.
_STEPS = 20
_SLICE = 256
# The operation errors of jobs that end without succeeding (google.rpc codes; the wording is the fake's own).
JOB_FAILED = RpcError(500, "INTERNAL", "The batch failed: an internal error occurred while processing it.")
JOB_EXPIRED = RpcError(504, "DEADLINE_EXCEEDED", "The batch expired before it could be processed.")
JOB_CANCELLED = RpcError(499, "CANCELLED", "The batch was cancelled.")


@dataclass(frozen=True, slots=True)
class Timeline:
    """When a job runs and how it ends: "succeed", "fail" or "expire"."""

    pending_s: float
    running_s: float
    fate: str

    @classmethod
    def draw(cls, config: BatchConfig, rng: random.Random, directive: str | None) -> Timeline:
        spread = config.turnaround_jitter_s
        turnaround = max(0.0, config.turnaround_s + rng.uniform(-spread, spread))
        fail, expire = rng.random(), rng.random()
        if directive == "batch_failed" or (directive is None and fail < config.fail_rate):
            fate = "fail"
        elif directive == "batch_expired" or (directive is None and expire < config.expire_rate):
            fate = "expire"
        else:
            fate = "succeed"
        pending = turnaround * config.pending_share
        return cls(pending, turnaround - pending, fate)


class Runner:
    """One job's task: it walks the job through its timeline; `cancel` and `close` end it early."""

    def __init__(
        self,
        job: BatchJob,
        context: Context,
        timeline: Timeline,
        *,
        config: BatchConfig,
        files: FileStore,
        ledger: BatchLedger,
        clock: Clock,
    ) -> None:
        self.job = job
        self._context = context
        self._timeline = timeline
        self._config = config
        self._files = files
        self._ledger = ledger
        self._clock = clock
        self._order = [line.index for line in job.spec.lines]
        if config.shuffle:
            random.Random(f"{context.seed}:{job.number}:order").shuffle(self._order)
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Runner {self.job!r} {self._timeline.fate}>"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"fake {self.job.name}")

    async def close(self) -> None:
        """Stop the task and wait for it, leaving the job as it is (a delete, or the server shutting down)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])

    def cancel(self) -> None:
        """Cancel a PENDING or RUNNING job: CANCELLED at once, with the lines done so far as output when
        configured; a job that has ended is refused (400 FAILED_PRECONDITION)."""
        if not self.job.active:
            raise failed_precondition(f"{self.job.name} is {self.job.state} and can no longer be cancelled.")
        if self._task is not None:
            # The task only ever waits on timers, so it stops at its current wait, with nothing half done.
            self._task.cancel()
        self._end(CANCELLED, JOB_CANCELLED)
        if self._config.cancel_output == "partial" and self.job.results:
            self._deliver()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        timeline = self._timeline
        await asyncio.sleep(timeline.pending_s)
        if timeline.fate == "expire":
            self._end(EXPIRED, JOB_EXPIRED)
            return
        self.job.move(RUNNING, self._clock())
        start = loop.time()
        total = len(self._order)
        stop_at = total // 2 if timeline.fate == "fail" else total
        size = max(1, min(_SLICE, total // _STEPS))
        for done in range(0, stop_at, size):
            chosen = self._order[done : min(done + size, stop_at)]
            # The slice is answered when its last line is due: line k of n at k/n of the running time.
            due = start + timeline.running_s * (done + len(chosen)) / total
            await asyncio.sleep(max(0.0, due - loop.time()))
            self.job.results.extend(answer(self.job.spec.lines[index], self._context) for index in chosen)
        if timeline.fate == "fail":
            self._end(FAILED, JOB_FAILED)
            return
        self._end(SUCCEEDED, None)
        # Without a lag, no request may see SUCCEEDED without its output: no wait at all in between.
        if self._config.output_lag_s:
            await asyncio.sleep(self._config.output_lag_s)
        self._deliver()

    def _end(self, state: str, error: RpcError | None) -> None:
        self.job.move(state, self._clock())
        self.job.error = error
        self._ledger.ended[state] += 1

    def _deliver(self) -> None:
        """Write the output of the lines answered, and count them in the ledger."""
        job = self.job
        outputs = [result.output for result in job.results if result.output is not None]
        if job.spec.inline:
            ordered = sorted((r for r in job.results if r.output is not None), key=lambda r: r.index)
            job.output = {"inlinedResponses": {"inlinedResponses": [r.output for r in ordered]}}
        else:
            data = b"".join(orjson.dumps(output) + b"\n" for output in outputs)
            stored = self._files.add(
                data, mime_type="application/jsonl", file_id=f"batch-{job.batch_id}", source="GENERATED"
            )
            self._ledger.files["generated"] += 1
            self._ledger.files["generated_bytes"] += len(data)
            job.output = {"responsesFile": stored.name}
        for result in job.results:
            self._ledger.line_written(job.name, result.key, result.outcome, result.usage)
