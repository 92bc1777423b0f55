"""What each row of an ended batch job becomes: its results line joined by key, never by position.

A job's results file is indexed by key (`IdIndex`: where each key's line starts), its rows file read for the ids
it holds and what they carry from earlier tries, and the input read once for the rows of every job being
collected. Each row then gets one `Action`:

    Write     its final result: answered (judged exactly as online), or failed with the error its line carried
    Resubmit  into a follow-up batch job: a re-ask, a key missing from the output, a row of a job that was lost
    Online    sent online: a row of a job cancelled at its deadline, or a re-ask when re-asks go online

Bounds: a missing key is resubmitted `max_resubmits` times, a row of a lost job (failed, expired, cancelled
by someone else) once; after that the row is written `failed`, saying why.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from batchgen.errors import ApiError, MalformedResponse, OutputError
from batchgen.gemini.batch import ResultLine, parse_result_line
from batchgen.gemini.response import Reply, parse_response
from batchgen.input.ids import IdIndex, IdSet
from batchgen.records import Prompt, Result, RunStats, Status
from batchgen.results import rows
from batchgen.results.batches import Carried, Submission, read_rows, results_path
from batchgen.results.verdict import REASKABLE, Verdict

Judge = Callable[[Reply], Verdict]
# A row of a lost job gets this many more jobs before it is written failed.
MAX_LOST = 1
TRAFFIC = "batch"
_ROW_CHUNK = 65_536


@dataclass(frozen=True, slots=True)
class Write:
    result: Result


@dataclass(frozen=True, slots=True)
class Resubmit:
    """Into a follow-up job rendered with `template` (base or reask), carrying the row's tries so far."""

    template: str
    carried: Carried


@dataclass(frozen=True, slots=True)
class Online:
    """Online, rendered with `template`, carrying the row's tries so far."""

    template: str
    carried: Carried


Action = Write | Resubmit | Online


@dataclass(frozen=True, slots=True)
class Rules:
    """The job's limits on what a row may get: re-asks, resubmissions of a missing key, where re-asks go."""

    max_reasks: int
    max_resubmits: int
    reasks_online: bool
    # The template a re-ask after truncation is sent with: `reask` when it differs from the job's own (a raised
    # maxOutputTokens), else `base`, so that both kinds of re-ask share one follow-up job.
    truncated_template: str = "base"


def dispose(
    prompt: Prompt,
    job: Submission,
    carried: Carried | None,
    line: ResultLine | None,
    *,
    rules: Rules,
    judge: Judge,
    stats: RunStats,
    now: float,
) -> Action:
    """What one row of an ended job becomes, given its results line (None when its key has none); the run's
    counters learn of its request and of the response billed for it, if any."""
    carried = copy.deepcopy(carried) if carried is not None else Carried()
    tally = carried.tally
    # The row was sent once more, in this job; its latency runs from the first job that held it (wall clock).
    tally.sent(job.created_at if job.created_at is not None else now)
    if job.phase == "online":
        # Collected again after a rerun: the run that ended this job counted its request and answer.
        return Online(job.template, carried)
    stats.sent()
    if line is None:
        return _unanswered(prompt, job, carried, rules, now)
    if line.error is not None:
        return Write(_failed(prompt, carried, line.error, now))
    assert line.response is not None
    try:
        reply = parse_response(line.response)
    except MalformedResponse as exc:
        return Write(_failed(prompt, carried, exc, now))
    tally.answered(reply.usage)
    stats.answered(reply.usage)
    verdict = judge(reply)
    if verdict.status in REASKABLE and tally.reasks < rules.max_reasks:
        tally.reasks += 1
        template = rules.truncated_template if verdict.status is Status.TRUNCATED else job.template
        return Online(template, carried) if rules.reasks_online else Resubmit(template, carried)
    return Write(rows.answered(prompt, tally, reply, verdict, now=now, traffic=TRAFFIC))


def _unanswered(prompt: Prompt, job: Submission, carried: Carried, rules: Rules, now: float) -> Action:
    if job.outcome == "deadline":
        return Online(job.template, carried)
    if job.outcome == "succeeded":
        carried.resubmits += 1
        if carried.resubmits <= rules.max_resubmits:
            return Resubmit(job.template, carried)
        error = f"its key was missing from the output of {carried.resubmits} batch job(s) ({job.job})"
        return Write(_failed(prompt, carried, error, now))
    carried.lost += 1
    if carried.lost <= MAX_LOST:
        return Resubmit(job.template, carried)
    state = job.state or "ended"
    error = f"batch job {job.job} ended {state} without answering it" + (f": {job.note}" if job.note else "")
    return Write(_failed(prompt, carried, error, now))


def _failed(prompt: Prompt, carried: Carried, error: ApiError | str, now: float) -> Result:
    return rows.failed(prompt, carried.tally, error, now=now, traffic=TRAFFIC)


# --- the jobs of one pass over the input ---------------------------------------------------------------------


class Plan:
    """One ended job's side of a pass: the ids it holds (how many already final), what they carry, and its
    results file by key.

    Built in a worker thread (`load`); `line` reads one key's line from the open results file.
    """

    def __init__(self, folder: Path, job: Submission, final: Container[str]) -> None:
        self.job = job
        self.folder = folder
        self.members = IdSet()
        self.carried: dict[str, Carried] = {}
        # Its rows met in the input, and those already final before the pass (not read again).
        self.found = 0
        self.final = 0
        self._final_ids = final
        self._index = IdIndex()
        self._results: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"Plan({self.job.id}, {len(self.members)} rows, {len(self._index)} results lines)"

    def load(self) -> Plan:
        """Read the rows file and index the results file (blocking)."""
        self.members = IdSet(self._member_chunks())
        if self.job.results and self.job.phase == "ended":
            path = results_path(self.folder, self.job.id)
            try:
                self._results = path.open("rb")
            except OSError as exc:
                raise OutputError(f"cannot read a batch results file: {exc.strerror or exc}", path=str(path)) from exc
            self._index = IdIndex(_keys_and_offsets(self._results))
        return self

    def close(self) -> None:
        if self._results is not None:
            self._results.close()

    def line(self, key: str) -> ResultLine | None:
        """The results line of `key`; None when the output has none."""
        offset = self._index.get(key)
        if offset is None or self._results is None:
            return None
        self._results.seek(offset)
        return parse_result_line(self._results.readline())

    def _member_chunks(self) -> Iterator[list[str]]:
        chunk: list[str] = []
        for key, carried in read_rows(self.folder, self.job.id):
            chunk.append(key)
            self.final += key in self._final_ids
            if carried is not None:
                self.carried[key] = carried
            if len(chunk) >= _ROW_CHUNK:
                yield chunk
                chunk = []
        yield chunk


def _keys_and_offsets(handle: IO[bytes]) -> Iterator[tuple[str, int]]:
    offset = 0
    for raw in handle:
        key = parse_result_line(raw).key
        if key is not None:
            yield key, offset
        offset += len(raw)


class Elsewhere(Container[str]):
    """The ids a pass skips: those no job of the pass holds, and those already final in the folder."""

    def __init__(self, plans: Mapping[str, Plan], final: Container[str]) -> None:
        self._plans = tuple(plans.values())
        self._final = final

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str) or value in self._final:
            return True
        return not any(value in plan.members for plan in self._plans)

    def plan_of(self, key: str) -> Plan:
        return next(plan for plan in self._plans if key in plan.members)
