"""The job's input as Ray Data reads it, and each block of it back into the same `Prompt`s a local run builds.

Ray's own JSON reader parses a file whole with Arrow, so one malformed line fails the whole job, and it
numbers no lines. `InputRows` reads JSONL line by line instead, each non-blank line with its file, line number
and row number, raw (a bad line becomes a `failed` row, as in a local run); Parquet row by row with its file
and row number. `Prompts` then builds each row's `Prompt` with the job's own `PromptBuilder`, with the same
locators (`line:N`, `row:N`, the file name in front in a folder) and, when the job has no id field, the same
index as id: the row's position in the whole input, from the per-file row counts the driver took.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.datasource import FileBasedDatasource

from batchgen.input.prompts import PromptBuilder, unusable
from batchgen.records import Prompt

FILE: Final = "__batchgen_file"
ROW: Final = "__batchgen_row"
LINE: Final = "__batchgen_line"
RAW: Final = "__batchgen_raw"
_CHUNK = 1 << 20


class InputRows(FileBasedDatasource):
    """A Ray Data datasource over the job's input files: one row per input row, with its place in its file."""

    def __init__(self, files: Sequence[Path], kind: str, *, block_rows: int) -> None:
        super().__init__([str(f) for f in files], file_extensions=[kind])
        self._kind = kind
        self._block_rows = block_rows

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        if self._kind == "jsonl":
            yield from _jsonl_blocks(f, path, self._block_rows)
        else:
            yield from _parquet_blocks(f, path, self._block_rows)


def _jsonl_blocks(f: pa.NativeFile, path: str, block_rows: int) -> Iterator[pa.Table]:
    row = 0
    lines: list[int] = []
    raws: list[bytes] = []
    for number, line in enumerate(_lines(f), start=1):
        if not line.strip():
            continue  # as a local run reads it: blank lines are not rows
        lines.append(number)
        raws.append(line)
        if len(raws) >= block_rows:
            yield _jsonl_table(path, row, lines, raws)
            row += len(raws)
            lines, raws = [], []
    if raws:
        yield _jsonl_table(path, row, lines, raws)


def _jsonl_table(path: str, first: int, lines: list[int], raws: list[bytes]) -> pa.Table:
    return pa.table(
        {
            FILE: pa.array([path] * len(raws), pa.string()),
            ROW: pa.array(range(first, first + len(raws)), pa.int64()),
            LINE: pa.array(lines, pa.int64()),
            RAW: pa.array(raws, pa.binary()),
        }
    )


def _lines(f: pa.NativeFile) -> Iterator[bytes]:
    """The file's lines, each with its newline as a local run reads them (a JSON error's column counts it),
    read a chunk at a time."""
    rest = b""
    while chunk := f.read(_CHUNK):
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for part in parts:
            yield part + b"\n"
    if rest:
        yield rest


def _parquet_blocks(f: pa.NativeFile, path: str, block_rows: int) -> Iterator[pa.Table]:
    first = 0
    for batch in pq.ParquetFile(f).iter_batches(batch_size=block_rows, use_threads=False):
        count = batch.num_rows
        table = pa.Table.from_batches([batch])
        table = table.append_column(FILE, pa.array([path] * count, pa.string()))
        yield table.append_column(ROW, pa.array(range(first, first + count), pa.int64()))
        first += count


@dataclass(frozen=True, slots=True)
class Prompts:
    """Builds the prompts of a block as `InputSource` would: same ids, locators, problems and kept values.

    `offsets` is each file's first row number in the whole input (only needed when the job has no id field,
    whose ids are those numbers); `prefixed`: the input is a folder, so locators carry the file's name.
    """

    builder: PromptBuilder
    offsets: Mapping[str, int]
    prefixed: bool

    def of(self, block: pa.Table) -> Iterator[Prompt]:
        files = block.column(FILE).to_pylist()
        rows = block.column(ROW).to_pylist()
        if LINE in block.column_names:
            lines = block.column(LINE).to_pylist()
            for file, row, line, raw in zip(files, rows, lines, block.column(RAW).to_pylist(), strict=True):
                yield self._jsonl(file, row, line, raw)
        else:
            data = block.drop_columns([FILE, ROW]).to_pylist()
            for file, row, values in zip(files, rows, data, strict=True):
                yield self._built(values, file, row, f"row:{row}")

    def _jsonl(self, file: str, row: int, line: int, raw: bytes) -> Prompt:
        locator = f"line:{line}"
        try:
            values = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return unusable(file, self._prefix(file) + locator, f"malformed JSON line: {exc}")
        return self._built(values, file, row, locator)

    def _built(self, values: Any, file: str, row: int, locator: str) -> Prompt:
        index = self.offsets.get(file, 0) + row
        return self.builder.build(values, index, file, self._prefix(file) + locator)

    def _prefix(self, file: str) -> str:
        return f"{Path(file).name}:" if self.prefixed else ""
