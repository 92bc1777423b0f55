"""The job's input as Ray Data reads it, and each block of it back into the same `Prompt`s a local run builds.

Ray's own JSON reader parses a file whole with Arrow: one malformed line fails the whole job, and no line is
numbered. `InputRows` reads each file with batchgen's own reader (`input.reader.file_rows`: the same
byte-order-mark, UTF-8 and JSON checks, the same `line:N` / `row:N` locators) in Ray's read tasks, and
`Prompts` builds each row's `Prompt` in the worker with the job's own `PromptBuilder`: the same ids, the file
name in front of a folder's locators, and the same index (the row's place in the whole input, from the
per-file row counts the driver took), so a row's id, `row_index` and problem are those of a local run.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

from batchgen.input.prompts import PromptBuilder, unusable
from batchgen.input.reader import file_rows
from batchgen.records import Prompt

FILE: Final = "file"
ROW: Final = "row"
LOCATOR: Final = "locator"
VALUES: Final = "values"
PROBLEM: Final = "problem"


class InputRows(FileBasedDatasource):
    """A Ray Data datasource over the job's input files: one row per input row, with its place in its file.

    A row's values travel pickled (a JSON object, or a Parquet row with its exact types) to the worker that
    builds its prompt; a row that cannot be read travels as its problem.
    """

    def __init__(self, files: Sequence[Path], kind: str, *, block_rows: int) -> None:
        super().__init__([str(f) for f in files], file_extensions=[kind])
        self._kind = kind
        self._block_rows = block_rows

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        # Read by path with batchgen's reader, which needs a local file: the driver checked the same files.
        block: list[tuple[int, str, bytes | None, str | None]] = []
        for number, (locator, values, problem) in enumerate(file_rows(Path(path), self._kind, self._block_rows)):
            block.append((number, locator, None if problem is not None else pickle.dumps(values), problem))
            if len(block) >= self._block_rows:
                yield _table(path, block)
                block = []
        if block:
            yield _table(path, block)


def _table(path: str, block: list[tuple[int, str, bytes | None, str | None]]) -> pa.Table:
    rows, locators, values, problems = zip(*block, strict=True)
    return pa.table(
        {
            FILE: pa.array([path] * len(block), pa.string()),
            ROW: pa.array(rows, pa.int64()),
            LOCATOR: pa.array(locators, pa.string()),
            VALUES: pa.array(values, pa.binary()),
            PROBLEM: pa.array(problems, pa.string()),
        }
    )


@dataclass(frozen=True, slots=True)
class Prompts:
    """Builds the prompts of a block as `InputSource.prompts` would.

    `offsets` is each file's first row number in the whole input; `prefixed`: the input is a folder, so
    locators carry the file's name.
    """

    builder: PromptBuilder
    offsets: Mapping[str, int]
    prefixed: bool

    def of(self, block: pa.Table) -> Iterator[Prompt]:
        columns = [block.column(name).to_pylist() for name in (FILE, ROW, LOCATOR, VALUES, PROBLEM)]
        for file, row, locator, values, problem in zip(*columns, strict=True):
            yield self._prompt(file, row, locator, values, problem)

    def _prompt(self, file: str, row: int, locator: str, values: bytes | None, problem: str | None) -> Prompt:
        index = self.offsets[file] + row
        if self.prefixed:
            locator = f"{Path(file).name}:{locator}"
        if problem is not None or values is None:
            return unusable(file, locator, problem or "unreadable row", index)
        row_values: Any = pickle.loads(values)
        return self.builder.build(row_values, index, file, locator)
