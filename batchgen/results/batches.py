"""The batch jobs a results folder waits on: what `mode = "batch"` keeps on disk so that no job is submitted
twice and none is lost, whatever kills the run.

    _batch/jobs.json             every batch job of the folder: its rows, its file, its name, its phase
    _batch/<id>.rows.jsonl       the ids the job holds, in its input file's order, with what earlier tries cost
    _batch/<id>.requests.jsonl   its input file as uploaded, kept until the job exists
    _batch/<id>.results.jsonl    its results file as downloaded, kept until its rows are written

Every file appears whole or not at all (`folder.write_whole`, `folder.place`). A job's record moves through
these phases, each saved before the step that follows it starts:

    spooled    its two local files are written; nothing is sent yet
    uploaded   its input file is in the Files API (`file`)
    creating   a create call may have reached the API: a rerun first looks the job up by its display name
    running    the job exists (`job`, `created_at`) and is polled
    ended      it ended (`outcome`: succeeded, lost or deadline), its results file downloaded if it had one
    online     its rows not yet written go online (past its deadline, or re-asked online)
    collected  every row is written, or handed to a follow-up job saved in the same write
    released   cancelled by `batchgen cancel`: its rows not yet written are no longer waited for
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import orjson

from batchgen.errors import OutputError
from batchgen.records import Usage
from batchgen.results.folder import place, write_whole
from batchgen.results.rows import Tally

BATCH_DIR = "_batch"
JOBS = "jobs.json"
PHASES = ("spooled", "uploaded", "creating", "running", "ended", "online", "collected", "released")
# Phases of a job whose rows are still on their way: their ids are neither final nor free to send again.
LIVE = frozenset(PHASES[:6])
OUTCOMES = ("succeeded", "lost", "deadline")
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Submission:
    """One batch job of the folder, as recorded (see the module docstring for `phase`).

    `template` says which request its lines were rendered with: the job's (`base`) or the one re-asks after
    truncation use (`reask`). `outcome` says how it ended: `succeeded`; `lost` (failed, expired or cancelled
    by someone else: its rows get one more job); `deadline` (cancelled at the deadline: its rows go online).
    """

    id: str
    phase: str
    rows: int
    size: int
    template: str = "base"
    file: str | None = None
    job: str | None = None
    created_at: float | None = None
    state: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    outcome: str | None = None
    results: bool = False
    output_file: str | None = None
    note: str | None = None
    ended_at: float | None = None

    @property
    def live(self) -> bool:
        return self.phase in LIVE

    def to(self, phase: str, **changes: Any) -> Submission:
        """This record in `phase`, with `changes`."""
        assert phase in PHASES, phase
        return replace(self, phase=phase, **changes)


@dataclass(frozen=True, slots=True)
class Batches:
    """Everything `_batch/jobs.json` holds.

    `token` tells this folder's jobs apart from any other's: each job's display name carries it. `origin` is
    where the jobs live (base_url, auth, api_key_env, model), for `batchgen status` and `batchgen cancel`.
    """

    token: str
    origin: Mapping[str, Any]
    jobs: tuple[Submission, ...] = ()

    @classmethod
    def new(cls, origin: Mapping[str, Any]) -> Batches:
        return cls(secrets.token_hex(4), dict(origin))

    def display_name(self, submission: Submission) -> str:
        return f"batchgen {self.token} {submission.id}"

    @property
    def live(self) -> tuple[Submission, ...]:
        return tuple(job for job in self.jobs if job.live)

    def get(self, job_id: str) -> Submission:
        return next(job for job in self.jobs if job.id == job_id)

    def updated(self, *changed: Submission) -> Batches:
        """These records replacing those of the same ids, new ones added at the end."""
        by_id = {job.id: job for job in changed}
        kept = tuple(by_id.pop(job.id, job) for job in self.jobs)
        return replace(self, jobs=kept + tuple(by_id.values()))


def job_id(number: int) -> str:
    """The id of the folder's `number`-th batch job (1-based): s00001, s00002..."""
    return f"s{number:05d}"


def batch_dir(folder: Path) -> Path:
    return folder / BATCH_DIR


def rows_path(folder: Path, job_id: str) -> Path:
    return batch_dir(folder) / f"{job_id}.rows.jsonl"


def requests_path(folder: Path, job_id: str) -> Path:
    return batch_dir(folder) / f"{job_id}.requests.jsonl"


def results_path(folder: Path, job_id: str) -> Path:
    return batch_dir(folder) / f"{job_id}.results.jsonl"


def read_batches(folder: Path) -> Batches | None:
    """The folder's batch jobs; None when it never had any. An unreadable record is an OutputError."""
    path = batch_dir(folder) / JOBS
    try:
        data = orjson.loads(path.read_bytes())
        return Batches(
            token=str(data["token"]),
            origin=dict(data.get("origin") or {}),
            jobs=tuple(_submission(job) for job in data.get("jobs", [])),
        )
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise OutputError(f"unreadable record of batch jobs: {exc}", path=str(path)) from exc


def save_batches(folder: Path, batches: Batches) -> None:
    """Replace the record of batch jobs, durably (written whole, fsynced, renamed)."""
    document = {
        "format": _FORMAT,
        "token": batches.token,
        "origin": dict(batches.origin),
        "jobs": [_submission_fields(job) for job in batches.jobs],
    }
    try:
        batch_dir(folder).mkdir(parents=True, exist_ok=True)
        write_whole(batch_dir(folder) / JOBS, orjson.dumps(document, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise OutputError(f"cannot write the record of batch jobs: {exc.strerror or exc}", path=str(folder)) from exc


def remove(*paths: Path) -> None:
    """Delete local files a job no longer needs (those already gone are fine)."""
    for path in paths:
        path.unlink(missing_ok=True)


def _submission(data: Mapping[str, Any]) -> Submission:
    names = {f.name for f in dataclasses.fields(Submission)}
    fields = {key: value for key, value in data.items() if key in names}
    if fields.get("phase") not in PHASES:
        raise ValueError(f"job {fields.get('id')!r} has no known phase")
    return Submission(**fields)


def _submission_fields(job: Submission) -> dict[str, Any]:
    # Optional fields at their defaults are left out, so that a record reads at a glance.
    return {key: value for key, value in dataclasses.asdict(job).items() if key in _REQUIRED or value != _DEFAULTS[key]}


_REQUIRED = ("id", "phase", "rows", "size")
_DEFAULTS = dataclasses.asdict(Submission("", "spooled", 0, 0))


# --- rows of a job ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Carried:
    """What a row brings into a batch job from its earlier tries: its tally (requests, responses billed, usage,
    re-asks, when it was first sent, on the wall clock), how often its key was missing from a job's output,
    and how often a job holding it ended without answering it."""

    tally: Tally = field(default_factory=Tally)
    resubmits: int = 0
    lost: int = 0

    def to_json(self) -> dict[str, Any]:
        tally = self.tally
        usage = {key: value for key, value in dataclasses.asdict(tally.usage).items() if value is not None}
        return {
            "attempts": tally.attempts,
            "responses": tally.responses,
            "reasks": tally.reasks,
            "first_sent": tally.first_sent,
            "usage": usage,
            "resubmits": self.resubmits,
            "lost": self.lost,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Carried:
        usage = {key: _tupled(value) for key, value in (data.get("usage") or {}).items()}
        tally = Tally(
            attempts=int(data.get("attempts", 0)),
            responses=int(data.get("responses", 0)),
            usage=Usage(**usage),
            reasks=int(data.get("reasks", 0)),
            first_sent=data.get("first_sent"),
        )
        return cls(tally, int(data.get("resubmits", 0)), int(data.get("lost", 0)))


def _tupled(value: Any) -> Any:
    # Lists in JSON were tuples in the value (per-modality breakdowns); hashable and comparable again.
    return tuple(_tupled(item) for item in value) if isinstance(value, list) else value


def read_rows(folder: Path, job_id: str) -> Iterator[tuple[str, Carried | None]]:
    """The ids a job holds, in order, each with what it carried into the job (None for a first try)."""
    path = rows_path(folder, job_id)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise OutputError(f"cannot read the rows of batch job {job_id}: {exc.strerror or exc}", path=str(path)) from exc
    with handle:
        for line in handle:
            entry = orjson.loads(line)
            carried = entry.get("carried")
            yield entry["id"], None if carried is None else Carried.from_json(carried)


class Spool:
    """A new batch job's two local files being filled: its input lines and its rows. `seal` makes them whole
    (fsync, rename) and gives the job's record; until then they are hidden temporaries a rerun removes."""

    def __init__(self, folder: Path, job_id: str, template: str = "base") -> None:
        self.folder = folder
        self.job_id = job_id
        self.template = template
        self.rows = 0
        self.size = 0
        self._paths = (requests_path(folder, job_id), rows_path(folder, job_id))
        self._handles: list[IO[bytes]] = []

    def __repr__(self) -> str:
        return f"Spool({self.job_id}, rows={self.rows}, size={self.size})"

    def __enter__(self) -> Self:
        try:
            batch_dir(self.folder).mkdir(parents=True, exist_ok=True)
            self._handles = [_temporary(path).open("wb") for path in self._paths]
        except OSError as exc:
            raise OutputError(f"cannot write a batch input file: {exc.strerror or exc}", path=str(self.folder)) from exc
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.close()
        for path in self._paths:
            _temporary(path).unlink(missing_ok=True)  # gone already when sealed

    def add(self, key: str, line: bytes, carried: Carried | None = None) -> None:
        """Append one row: its input line (see `gemini.batch.request_line`) and its id with what it carries."""
        requests, rows = self._handles
        entry: dict[str, Any] = {"id": key}
        if carried is not None:
            entry["carried"] = carried.to_json()
        try:
            requests.write(line)
            rows.write(orjson.dumps(entry) + b"\n")
        except OSError as exc:
            raise OutputError(f"cannot write a batch input file: {exc.strerror or exc}", path=str(self.folder)) from exc
        self.rows += 1
        self.size += len(line)

    def seal(self) -> Submission:
        """Make both files whole and durable (blocking: call it in a thread); the new job's record."""
        try:
            for handle, path in zip(self._handles, self._paths, strict=True):
                handle.close()
                place(_temporary(path), path)
        except OSError as exc:
            raise OutputError(f"cannot write a batch input file: {exc.strerror or exc}", path=str(self.folder)) from exc
        return Submission(self.job_id, "spooled", self.rows, self.size, self.template)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")
