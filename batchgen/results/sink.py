"""Edge: results become durable Parquet part files, plus a `_manifest.json` describing each run.

A part is written under a hidden temporary name, fsynced, then renamed into place, so a reader (or a rerun
after SIGKILL) never sees a half-written part. Parts are flushed every `flush_rows` rows or `flush_seconds`
seconds, whichever comes first, which bounds what a crash can lose.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.errors import ConfigError, OutputError
from batchgen.records import RESULT_COLUMNS, Result
from batchgen.results.metadata import EXTRA_FIELDS, extra_columns

MANIFEST = "_manifest.json"
# Hidden (readers skip names starting with "."), like the temporaries parts and the manifest are written to.
LOCK = ".batchgen.lock"

_TOKENS = pa.int64()
_FIELDS: dict[str, pa.DataType] = {
    "id": pa.string(),
    "status": pa.string(),
    "text": pa.string(),
    "output_json": pa.string(),
    "thoughts": pa.string(),
    "finish_reason": pa.string(),
    "block_reason": pa.string(),
    "prompt_token_count": _TOKENS,
    "candidates_token_count": _TOKENS,
    "thoughts_token_count": _TOKENS,
    "cached_content_token_count": _TOKENS,
    "tool_use_prompt_token_count": _TOKENS,
    "total_token_count": _TOKENS,
    "model": pa.string(),
    "model_version": pa.string(),
    "response_id": pa.string(),
    "attempts": pa.int32(),
    "responses": pa.int32(),
    "reasks": pa.int32(),
    "latency_ms": pa.float64(),
    "error": pa.string(),
    "http_status": pa.int32(),
    "run_id": pa.string(),
    "finished_at": pa.timestamp("ms", tz="UTC"),
}
assert (*_FIELDS, *EXTRA_FIELDS.names) == RESULT_COLUMNS, "writer and records disagree on the results contract"

# Result attribute (or usage field) feeding each fixed column.
_USAGE_COLUMNS = {
    "prompt_token_count": "prompt",
    "candidates_token_count": "candidates",
    "thoughts_token_count": "thoughts",
    "cached_content_token_count": "cached",
    "tool_use_prompt_token_count": "tool_use",
    "total_token_count": "total",
}

ExtraColumns = Callable[[Sequence[Result]], list[pa.Array]]


@dataclass(frozen=True, slots=True)
class Layout:
    """The Arrow schema of a job's results, and how to fill the columns beyond the fixed ones."""

    keep: pa.Schema
    typed: pa.Schema
    typed_columns: ExtraColumns | None = None

    @property
    def schema(self) -> pa.Schema:
        fixed = [pa.field(name, kind) for name, kind in _FIELDS.items()]
        return pa.schema(fixed + list(EXTRA_FIELDS) + list(self.keep) + list(self.typed))


class ParquetSink:
    """Buffers results and flushes them as atomic part files; implements `records.Sink`."""

    def __init__(
        self,
        folder: Path,
        layout: Layout,
        *,
        run_id: str,
        model: str,
        flush_rows: int = 5000,
        flush_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self.layout = layout
        self.schema = layout.schema
        self.run_id = run_id
        self.model = model
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._clock = clock
        self._buffer: list[tuple[Result, float]] = []
        self._parts = 0
        self._lock = anyio.Lock()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._failure: OutputError | None = None
        self.rows_written = 0

    def __repr__(self) -> str:
        return f"ParquetSink({str(self.folder)!r}, buffered={len(self._buffer)}, parts={self._parts})"

    async def __aenter__(self) -> Self:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create the results folder: {exc.strerror or exc}", path=str(self.folder)
            ) from exc
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._flush_periodically)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)
        # Whatever was received is flushed even when the run failed: every paid-for response must survive.
        with anyio.CancelScope(shield=True):
            await self.flush()
        if self._failure is not None and exc is None:
            raise self._failure

    async def write(self, result: Result) -> None:
        if self._failure is not None:
            raise self._failure
        self._buffer.append((result, self._clock()))
        if len(self._buffer) >= self.flush_rows:
            await self.flush()

    async def flush(self) -> None:
        """Write the buffered rows as one part file (no-op when empty)."""
        async with self._lock:
            if not self._buffer:
                return
            rows, self._buffer = self._buffer, []
            table = self._table(rows)
            name = f"part-{self.run_id}-{self._parts:05d}.parquet"
            self._parts += 1
            await anyio.to_thread.run_sync(write_part_atomically, self.folder, name, table)
            self.rows_written += len(rows)

    async def _flush_periodically(self) -> None:
        # A timed flush that fails must not surface from this background task (wrapped in an exception group,
        # far from the run): the next write raises it, which stops the run like a failed write would.
        while True:
            await anyio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except OutputError as exc:
                self._failure = exc
                return

    def _table(self, rows: Sequence[tuple[Result, float]]) -> pa.Table:
        results = [r for r, _ in rows]
        columns: list[pa.Array] = []
        for name, kind in _FIELDS.items():
            columns.append(pa.array(self._column(name, rows), type=kind))
        columns.extend(extra_columns([r.extras for r in results]))
        for field in self.layout.keep:
            columns.append(_keep_array([r.keep.get(field.name) for r in results], field.type))
        if self.layout.typed_columns is not None:
            columns.extend(self.layout.typed_columns(results))
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _column(self, name: str, rows: Sequence[tuple[Result, float]]) -> list[Any]:
        if name in _USAGE_COLUMNS:
            field = _USAGE_COLUMNS[name]
            return [getattr(r.usage, field) for r, _ in rows]
        if name == "model":
            return [self.model] * len(rows)
        if name == "run_id":
            return [self.run_id] * len(rows)
        if name == "finished_at":
            return [int(at * 1000) for _, at in rows]
        if name == "status":
            return [r.status.value for r, _ in rows]
        return [getattr(r, name) for r, _ in rows]


def _keep_array(values: list[Any], kind: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # A value that does not fit the column's type (inferred from leading JSONL rows) is kept as its JSON
        # text in a string column, else dropped to null rather than failing the whole part.
        return pa.array([_fit(v, kind) for v in values], type=kind)


def _fit(value: Any, kind: pa.DataType) -> Any:
    try:
        pa.array([value], type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return orjson.dumps(value).decode() if pa.types.is_string(kind) else None
    return value


@contextmanager
def claim_folder(folder: Path) -> Iterator[None]:
    """Hold the results folder for one run: refuse a concurrent run, and clear what a killed run left behind.

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
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        yield


def write_part_atomically(folder: Path, name: str, table: pa.Table) -> None:
    """Write `table` to `folder/name` so that the file appears whole or not at all."""
    temporary = folder / f".{name}.tmp"
    try:
        pq.write_table(table, temporary, compression="zstd")
        _fsync(temporary)
        os.replace(temporary, folder / name)
        _fsync(folder)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write part {name}: {exc.strerror or exc}", path=str(folder)) from exc


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def utc_iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise OutputError(f"unreadable manifest: {exc}", path=str(path)) from exc
    return data if isinstance(data, dict) else None


def write_manifest(folder: Path, job: Mapping[str, Any], run: Mapping[str, Any]) -> None:
    """Append `run` to the folder's manifest (created when absent), atomically; a run already there is replaced."""
    manifest = read_manifest(folder) or {"format": 1, "runs": []}
    manifest["job"] = dict(job)
    manifest["runs"] = [r for r in manifest.get("runs", []) if r.get("run_id") != run["run_id"]] + [dict(run)]
    _save_manifest(folder, manifest)


def record_exit_code(folder: Path, run_id: str, code: int) -> None:
    """Set the exit code of run `run_id` in the folder's manifest (no-op when the run is not recorded)."""
    manifest = read_manifest(folder)
    runs = (manifest or {}).get("runs", [])
    matching = [run for run in runs if isinstance(run, dict) and run.get("run_id") == run_id]
    if manifest is None or not matching:
        return
    matching[0]["exit_code"] = code
    _save_manifest(folder, manifest)


def _save_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    temporary = folder / f".{MANIFEST}.tmp"
    try:
        temporary.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        _fsync(temporary)
        os.replace(temporary, folder / MANIFEST)
        _fsync(folder)
    except OSError as exc:
        raise OutputError(f"cannot write the manifest: {exc.strerror or exc}", path=str(folder)) from exc
