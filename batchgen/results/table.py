"""Finished rows as one Arrow table of the results contract, plus the job's kept input and typed output columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from batchgen.records import Result, Status
from batchgen.results.columns import CONTRACT, FIXED, USAGE_COLUMNS
from batchgen.results.metadata import metadata_columns
from batchgen.schema.response import ResponseSchema

_USAGE = dict(USAGE_COLUMNS)


@dataclass(frozen=True, slots=True)
class Layout:
    """What a job adds to the contract: kept input columns (their Arrow types) and the schema's typed columns.

    `typed` is the job's response schema when its top-level properties become `prefix`-named columns.
    """

    keep: pa.Schema
    typed: ResponseSchema | None = None
    prefix: str = "out_"

    @property
    def schema(self) -> pa.Schema:
        typed = [] if self.typed is None else list(self.typed.arrow_schema(self.prefix))
        return pa.schema([*CONTRACT, *self.keep, *typed])


def results_table(rows: Sequence[tuple[Result, float]], layout: Layout, *, run_id: str, model: str) -> pa.Table:
    """The table of `rows` (each result with the time it finished, in seconds since the epoch)."""
    results = [r for r, _ in rows]
    columns = [pa.array(_fixed(field.name, rows, run_id, model), type=field.type) for field in FIXED]
    columns.extend(metadata_columns(results))
    for field in layout.keep:
        columns.append(_keep_array([r.keep.get(field.name) for r in results], field.type))
    if layout.typed is not None:
        columns.extend(layout.typed.arrow_columns([r.output if r.status is Status.OK else None for r in results]))
    return pa.Table.from_arrays(columns, schema=layout.schema)


def _fixed(name: str, rows: Sequence[tuple[Result, float]], run_id: str, model: str) -> list[Any]:
    if name in _USAGE:
        field = _USAGE[name]
        return [getattr(r.usage, field) for r, _ in rows]
    if name == "model":
        return [model] * len(rows)
    if name == "run_id":
        return [run_id] * len(rows)
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
