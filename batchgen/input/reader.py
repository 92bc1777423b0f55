"""Edge: stream prompts out of JSONL or Parquet input, a file or a folder of parts, in bounded batches.

Files are read in a worker thread a batch at a time, so memory holds one batch, never the input. A line or row
that cannot become a prompt still yields a `Prompt` (with `problem` set), so it is reported, never dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Container, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchgen.errors import ConfigError, InputError
from batchgen.input.ids import IdHashes
from batchgen.input.prompts import PromptBuilder, unusable
from batchgen.records import Prompt

BATCH_ROWS = 1024
# The id check reads Parquet ids in chunks of this many rows.
SCAN_ROWS = 65536
# Keep-column types of JSONL input are inferred from this many leading rows.
TYPE_SAMPLE_ROWS = 1000


@dataclass(frozen=True, slots=True)
class IdScan:
    """What a pass over the ids found: the row count, the ids seen more than once (with counts), and the lines
    that cannot be a row at all (malformed JSON, not UTF-8), with the first one's problem."""

    rows: int
    duplicates: dict[str, int]
    unreadable: int = 0
    first_unreadable: str | None = None


@dataclass(frozen=True, slots=True)
class Columns:
    """The columns of the input's rows, as far as they are known before it is read: the first file's Parquet
    schema, or the keys found in its first `TYPE_SAMPLE_ROWS` JSONL rows (`sampled`, None for a schema)."""

    file: Path
    names: tuple[str, ...]
    sampled: int | None = None


class InputSource:
    """The prompts of one input path (file or folder), read lazily."""

    def __init__(self, path: Path, builder: PromptBuilder, *, batch_rows: int = BATCH_ROWS) -> None:
        self.path = path
        self.builder = builder
        self.files = _input_files(path)
        self.kind = self.files[0].suffix.lstrip(".")
        self._batch_rows = batch_rows

    def __repr__(self) -> str:
        return f"InputSource({str(self.path)!r}, {len(self.files)} {self.kind} file(s))"

    async def prompts(self, skip: Container[str] = (), duplicates: Collection[str] = ()) -> AsyncIterator[Prompt]:
        """Every row's prompt in input order, minus those whose id is in `skip` (already done).

        Ids in `duplicates` (allowed by the user) are suffixed from their second occurrence on: `a`, `a#2`, ...
        """
        seen: dict[str, int] = {}
        batches = self._batches()
        while True:
            batch = await anyio.to_thread.run_sync(next, batches, None)
            if batch is None:
                return
            for prompt in batch:
                if prompt.id in duplicates:
                    seen[prompt.id] = occurrence = seen.get(prompt.id, 0) + 1
                    if occurrence > 1:
                        prompt = replace(prompt, id=f"{prompt.id}#{occurrence}")
                if prompt.id not in skip:
                    yield prompt

    async def scan_ids(self) -> IdScan:
        """Count rows and find duplicate ids, reading only what ids need (memory stays in Arrow buffers)."""
        return await anyio.to_thread.run_sync(self._scan_ids)

    async def columns(self) -> Columns:
        """The columns of the rows (`Columns`), for the start-up checks of what a job names."""
        return await anyio.to_thread.run_sync(self._columns)

    async def keep_schema(self) -> pa.Schema:
        """Arrow types of the keep columns: the Parquet schema's, or inferred from leading JSONL rows."""
        return await anyio.to_thread.run_sync(self._keep_schema)

    def _batches(self) -> Iterator[list[Prompt]]:
        index = 0
        for file in self.files:
            rows = file_rows(file, self.kind, self._batch_rows)
            batch: list[Prompt] = []
            # In a folder, a line number alone does not tell two files' bad lines apart, and their locators
            # become ids: the file's name goes in front.
            prefix = "" if len(self.files) == 1 else f"{file.name}:"
            for line_or_row, row, problem in rows:
                locator = prefix + line_or_row
                if problem is not None:
                    batch.append(unusable(str(file), locator, problem, index))
                else:
                    batch.append(self.builder.build(row, index, str(file), locator))
                index += 1
                if len(batch) >= self._batch_rows:
                    yield batch
                    batch = []
            if batch:
                yield batch

    def _scan_ids(self) -> IdScan:
        # Ids are hashed as they are read (`IdHashes`, 8 bytes a row), so a million-row input is checked
        # without a million strings in memory; the input is read a second time only if some id repeats.
        rows = 0
        hashes = IdHashes()
        unreadable = _Unreadable()
        for ids in self._id_chunks(unreadable):
            rows += len(ids)
            hashes.add(value for value in ids if value is not None)
        scan = IdScan(rows=rows, duplicates={}, unreadable=unreadable.count, first_unreadable=unreadable.first)
        repeated = hashes.repeated()
        if not repeated:
            return scan
        counts: dict[str, int] = {}
        for ids in self._id_chunks(_Unreadable()):
            for value in ids:
                if value is not None and hash(value) in repeated:
                    counts[value] = counts.get(value, 0) + 1
        return replace(scan, duplicates={value: count for value, count in counts.items() if count > 1})

    def _id_chunks(self, unreadable: _Unreadable) -> Iterator[list[str | None]]:
        """Every row's id as text (None when unreadable or not configured), in bounded chunks; lines that are
        no row at all are counted in `unreadable`."""
        for file in self.files:
            if self.kind == "jsonl":
                yield from _jsonl_id_chunks(file, self.builder.id_field, unreadable)
            else:
                yield from _parquet_id_chunks(file, self.builder.id_field)

    def _columns(self) -> Columns:
        first = self.files[0]
        if self.kind == "parquet":
            try:
                return Columns(first, tuple(pq.read_schema(first).names))
            except (OSError, pa.ArrowException) as exc:
                raise InputError(
                    f"not a readable Parquet file (truncated or corrupt?): {exc}", file=str(first)
                ) from exc
        names: dict[str, None] = {}
        sampled = 0
        for _, row, _ in _jsonl_rows(first):
            if sampled >= TYPE_SAMPLE_ROWS:
                break
            sampled += 1
            if isinstance(row, dict):
                names.update(dict.fromkeys(row))
        return Columns(first, tuple(names), sampled)

    def _keep_schema(self) -> pa.Schema:
        names = list(self.builder.keep_columns)
        if self.kind == "parquet":
            schema = pq.read_schema(self.files[0])
            missing = [n for n in names if n not in schema.names]
            if missing:
                raise ConfigError(f"keep column(s) {missing} not in {self.files[0]}", key="output.keep_columns")
            return pa.schema([schema.field(n) for n in names])
        sample: dict[str, list[Any]] = {n: [] for n in names}
        for count, (_, row, _) in enumerate(_jsonl_rows(self.files[0])):
            if count >= TYPE_SAMPLE_ROWS:
                break
            if isinstance(row, dict):
                for name in names:
                    sample[name].append(row.get(name))
        return pa.schema([pa.field(n, _infer_type(values)) for n, values in sample.items()])


def _input_files(path: Path) -> list[Path]:
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix in (".jsonl", ".parquet") and p.name[0] not in "._"
        )
    else:
        raise InputError("input path does not exist", file=str(path))
    kinds = {f.suffix for f in files}
    if not files:
        raise InputError("no .jsonl or .parquet files in the input folder", file=str(path))
    if len(kinds) > 1 or kinds - {".jsonl", ".parquet"}:
        raise InputError("input must be .jsonl or .parquet files, of one kind", file=str(path))
    return files


_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def file_rows(file: Path, kind: str, batch_rows: int = BATCH_ROWS) -> Iterator[tuple[str, Any, str | None]]:
    """(locator, row, problem) of each row of one input file (`kind` "jsonl" or "parquet"), as `prompts` reads
    them (a reader of the same input elsewhere, such as a Ray worker, reads it through this too)."""
    return _jsonl_rows(file) if kind == "jsonl" else _parquet_rows(file, batch_rows)


def _jsonl_rows(file: Path) -> Iterator[tuple[str, Any, str | None]]:
    """(locator, row, problem) per non-blank line; a line that is not JSON comes with its problem.

    A UTF-8 byte-order mark (Excel's "CSV UTF-8", Notepad) is skipped; a UTF-16 file is refused whole.
    """
    try:
        handle = file.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", file=str(file)) from exc
    with handle:
        offset = 0
        for number, line in enumerate(handle, start=1):
            start, offset = offset, offset + len(line)
            if number == 1:
                line = _first_line(line, file)
            if not line.strip():
                continue
            try:
                yield f"line:{number}", orjson.loads(line), None
            except orjson.JSONDecodeError as exc:
                yield f"line:{number}", None, _not_json(line, start, exc)


def _first_line(line: bytes, file: Path) -> bytes:
    if line.startswith(_UTF16_BOMS):
        raise InputError('the file is UTF-16 (Excel\'s "Unicode Text"?): save it as UTF-8', file=str(file))
    return line.removeprefix(_UTF8_BOM)


def _not_json(line: bytes, start: int, error: orjson.JSONDecodeError) -> str:
    """Why a line is not a row: its bytes are not UTF-8 (where, and how to fix the file), or not JSON."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = line[exc.start]
        return (
            f"not valid UTF-8: byte 0x{byte:02x} at column {exc.start + 1} (byte offset {start + exc.start} of the "
            'file); save the input as UTF-8 (from Excel: "CSV UTF-8"; or iconv -f latin1 -t utf-8)'
        )
    return f"malformed JSON line: {error}"


def _parquet_rows(file: Path, batch_rows: int) -> Iterator[tuple[str, Any, str | None]]:
    number = 0
    for batch in _parquet_batches(file, batch_rows, columns=None):
        for row in batch.to_pylist():
            yield f"row:{number}", row, None
            number += 1


def _parquet_batches(file: Path, batch_rows: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    try:
        # One row group decoded at a time, in this (worker) thread: pre-buffering and Arrow's thread pool
        # hold several row groups at once (about twice the peak memory on large files, docs/performance.md),
        # and decoding is not what bounds a run.
        parquet = pq.ParquetFile(file, pre_buffer=False)
        yield from parquet.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False)
    except OSError as exc:
        raise InputError(f"cannot read Parquet: {exc}", file=str(file)) from exc
    except (pa.ArrowInvalid, pa.ArrowException) as exc:
        raise InputError(f"not a readable Parquet file (truncated or corrupt?): {exc}", file=str(file)) from exc


@dataclass(slots=True)
class _Unreadable:
    """Lines that are no row at all: how many, and the first one's place and problem."""

    count: int = 0
    first: str | None = None

    def add(self, file: Path, locator: str, problem: str) -> None:
        self.count += 1
        if self.first is None:
            self.first = f"{file} {locator.replace(':', ' ')}: {problem}"


def _jsonl_id_chunks(file: Path, id_field: str | None, unreadable: _Unreadable) -> Iterator[list[str | None]]:
    chunk: list[str | None] = []
    for locator, row, problem in _jsonl_rows(file):
        if problem is not None:
            unreadable.add(file, locator, problem)
        chunk.append(_id_text(row.get(id_field)) if id_field and isinstance(row, dict) else None)
        # Short chunks: each id outlives the parsed row around it, and many of them at once pin the freed
        # rows' memory pools, so long chunks raise the scan's peak well above the hashes it keeps.
        if len(chunk) >= BATCH_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _parquet_id_chunks(file: Path, id_field: str | None) -> Iterator[list[str | None]]:
    try:
        schema = pq.read_schema(file)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"not a readable Parquet file (truncated or corrupt?): {exc}", file=str(file)) from exc
    if id_field is None or id_field not in schema.names:
        rows = _parquet_row_count(file)
        for start in range(0, rows, SCAN_ROWS):
            yield [None] * min(SCAN_ROWS, rows - start)
        return
    for batch in _parquet_batches(file, SCAN_ROWS, columns=[id_field]):
        yield batch.column(0).cast(pa.string()).to_pylist()


def _parquet_row_count(file: Path) -> int:
    try:
        return int(pq.ParquetFile(file).metadata.num_rows)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"not a readable Parquet file (truncated or corrupt?): {exc}", file=str(file)) from exc


def _id_text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)


def _infer_type(values: list[Any]) -> pa.DataType:
    try:
        inferred = pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.string()
    return pa.string() if pa.types.is_null(inferred) else inferred
