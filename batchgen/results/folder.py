"""The results folder on disk: its part files, its manifest of runs, and the lock a writing run holds.

    part-<run_id>-<nnnnn>.parquet    rows of the results contract, written whole or not at all
    part-<run_id>-c<nnnnn>.parquet   a part rewritten by compaction (superseded rows dropped)
    _manifest.json                   the job's identity and one record per run
    .batchgen.lock                   held (flock) by the run writing the folder
    .<name>.tmp                      a part or manifest being written; removed by the next run
    _batch/                          batch mode's jobs and their files (`results.batches`)

Every write goes to a hidden temporary name, is fsynced, then renamed into place, so a reader (or a rerun
after SIGKILL) never sees half a file. Readers skip names starting with `_` or `.`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.errors import ConfigError, OutputError

MANIFEST = "_manifest.json"
LOCK = ".batchgen.lock"
_PART_GLOB = "part-*.parquet"
_FORMAT = 1


def part_name(run_id: str, sequence: int, *, compacted: bool = False) -> str:
    """The file name of a run's `sequence`-th part (or of a part compaction rewrote)."""
    return f"part-{run_id}-{'c' if compacted else ''}{sequence:05d}.parquet"


def compacted_names(folder: Path, run_id: str) -> Iterator[str]:
    """Names for the parts run `run_id` rewrites (compaction, reshaping), skipping those the folder has: a
    rename onto an existing part would replace its rows."""
    for sequence in count():
        name = part_name(run_id, sequence, compacted=True)
        if not (folder / name).exists():
            yield name


def part_files(folder: Path) -> list[Path]:
    """The folder's parts, in name order (a run's parts in the order it wrote them)."""
    return sorted(folder.glob(_PART_GLOB)) if folder.is_dir() else []


def read_part(part: Path, columns: list[str] | None = None) -> pa.Table:
    """One part (or some of its columns); an unreadable part is an OutputError naming it."""
    try:
        # One file in this thread, without pre-buffering: `pq.read_table` over hundreds of parts leaves Arrow's
        # thread pool and dataset machinery resident (docs/performance.md), for no speed here.
        return pq.ParquetFile(part, pre_buffer=False).read(columns=columns, use_threads=False)
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"unreadable results part (remove it to resend its rows): {exc}", path=str(part)) from exc


def part_schema(part: Path) -> pa.Schema:
    """The columns a part holds, read from its footer alone."""
    try:
        return pq.read_schema(part)
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"unreadable results part (remove it to resend its rows): {exc}", path=str(part)) from exc


def folder_schema(folder: Path) -> pa.Schema | None:
    """The schema of the folder's newest part (the one a run into it writes its own parts in), or None."""
    parts = part_files(folder)
    return part_schema(parts[-1]) if parts else None


def part_row_count(part: Path) -> int:
    """How many rows a part holds, read from its footer alone."""
    try:
        return int(pq.ParquetFile(part).metadata.num_rows)
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"unreadable results part (remove it to resend its rows): {exc}", path=str(part)) from exc


def write_part(folder: Path, name: str, table: pa.Table) -> None:
    """Write `table` to `folder/name` so that the file appears whole or not at all."""
    temporary = folder / f".{name}.tmp"
    try:
        pq.write_table(table, temporary, compression="zstd")
        place(temporary, folder / name)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write part {name}: {exc.strerror or exc}", path=str(folder)) from exc


def write_whole(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that the file appears whole or not at all (raises OSError)."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(data)
        place(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def place(temporary: Path, final: Path) -> None:
    """Move a finished temporary file to its final name durably: its bytes, then the rename (raises OSError)."""
    _fsync(temporary)
    os.replace(temporary, final)
    _fsync(final.parent)


def check_writable(folder: Path) -> None:
    """Raise ConfigError when `folder` cannot become a results folder: it is a file, lies under one, or its
    nearest existing parent cannot be written. Nothing is created."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file; results go to a folder (of Parquet parts): name a folder")
    existing = next((path for path in (folder, *folder.parents) if path.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise ConfigError(f"cannot create {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write in {existing} (permission denied)")


@contextmanager
def claim(folder: Path) -> Iterator[None]:
    """Hold the folder for one run: refuse a concurrent run, and clear what a killed run left behind.

    The claim is an flock on a hidden file, which the kernel releases when its holder exits, even by SIGKILL:
    there is never a stale lock to remove by hand. Only the holder may delete temporaries, since another
    writer's would still be in use.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = (folder / LOCK).open("a+")
    except OSError as exc:
        raise OutputError(f"cannot create the results folder: {exc.strerror or exc}", path=str(folder)) from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ConfigError(
                f"{folder} is being written by another batchgen run (pid {holder}); wait for it to end or use "
                "another --output"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        for stale in (*folder.glob(".*.tmp"), *folder.glob("_*/.*.tmp")):
            stale.unlink(missing_ok=True)
        yield


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as the manifest records it; written when it starts and again when it ends.

    `exit_code` stays None for a run killed outright; `ended_at` too.
    """

    run_id: str
    started_at: str | None = None
    ended_at: str | None = None
    model: str | None = None
    exit_code: int | None = None
    rows: int = 0
    skipped_rows: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)
    tokens: Mapping[str, int] = field(default_factory=dict)
    stopped_by: str | None = None
    # The fingerprint of the job the run ran: its rows answer that version of the job.
    fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """What `_manifest.json` holds: the identity of the job that writes the folder, and its runs."""

    job: Mapping[str, Any] = field(default_factory=dict)
    runs: tuple[RunRecord, ...] = ()

    @property
    def fingerprint(self) -> str | None:
        value = self.job.get("fingerprint")
        return value if isinstance(value, str) else None


def read_manifest(folder: Path) -> Manifest | None:
    """The folder's manifest; None when it has none. A manifest that cannot be read is an OutputError."""
    path = folder / MANIFEST
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise OutputError(f"unreadable manifest: {exc}", path=str(path)) from exc
    runs = data.get("runs", []) if isinstance(data, dict) else None
    job = data.get("job", {}) if isinstance(data, dict) else None
    if not isinstance(runs, list) or not isinstance(job, dict) or not all(_is_run(run) for run in runs):
        raise OutputError("not a batchgen manifest: `runs` must be a list of objects with a run_id", path=str(path))
    return Manifest(job=job, runs=tuple(_run_record(run) for run in runs))


def record_run(folder: Path, job: Mapping[str, Any], run: RunRecord) -> None:
    """Record `run` (replacing an earlier record of the same run) and the job's identity, atomically.

    Runs recorded without a fingerprint (by an older batchgen) get the one the manifest held until now, so
    they keep naming the job they ran once a changed job takes the folder over.
    """
    manifest = read_manifest(folder) or Manifest()
    earlier = (
        r if r.fingerprint is not None else replace(r, fingerprint=manifest.fingerprint)
        for r in manifest.runs
        if r.run_id != run.run_id
    )
    _save(folder, Manifest(job=dict(job), runs=(*earlier, run)))


def record_exit_code(folder: Path, run_id: str, code: int) -> None:
    """Set the exit code of run `run_id` (no-op when the folder has no record of it)."""
    manifest = read_manifest(folder)
    if manifest is None or all(run.run_id != run_id for run in manifest.runs):
        return
    runs = tuple(_with_exit_code(run, code) if run.run_id == run_id else run for run in manifest.runs)
    _save(folder, Manifest(job=manifest.job, runs=runs))


def utc_iso(at: float) -> str:
    """A time (seconds since the epoch) as the manifest writes it: 2026-11-25T16:07:50Z."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _is_run(run: Any) -> bool:
    return isinstance(run, dict) and isinstance(run.get("run_id"), str)


def _run_record(run: Mapping[str, Any]) -> RunRecord:
    def text(key: str) -> str | None:
        value = run.get(key)
        return None if value is None else str(value)

    def number(key: str) -> int:
        value = run.get(key)
        return value if isinstance(value, int) else 0

    def counts(key: str) -> dict[str, int]:
        value = run.get(key)
        return {str(k): v for k, v in value.items() if isinstance(v, int)} if isinstance(value, dict) else {}

    exit_code = run.get("exit_code")
    return RunRecord(
        run_id=str(run["run_id"]),
        started_at=text("started_at"),
        ended_at=text("ended_at"),
        model=text("model"),
        exit_code=exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None,
        rows=number("rows"),
        skipped_rows=number("skipped_rows"),
        counts=counts("counts"),
        tokens=counts("tokens"),
        stopped_by=text("stopped_by"),
        fingerprint=text("fingerprint"),
    )


def _with_exit_code(run: RunRecord, code: int) -> RunRecord:
    return replace(run, exit_code=code)


def _save(folder: Path, manifest: Manifest) -> None:
    document = {"format": _FORMAT, "job": dict(manifest.job), "runs": [asdict(run) for run in manifest.runs]}
    try:
        write_whole(folder / MANIFEST, orjson.dumps(document, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise OutputError(f"cannot write the manifest: {exc.strerror or exc}", path=str(folder)) from exc


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
