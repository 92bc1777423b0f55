"""Finished rows as one Arrow table: the results contract's columns a job has, its kept input columns and its
typed output columns, in the order a reader of the results wants them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from batchgen.records import Result, Status
from batchgen.results.columns import FEATURES, FIXED, METADATA, USAGE_COLUMNS
from batchgen.results.metadata import metadata_columns
from batchgen.schema.response import ResponseSchema

_USAGE = dict(USAGE_COLUMNS)

# Tools whose answers carry groundingMetadata (search results, retrieved pages, files, places).
_GROUNDING_TOOLS = frozenset({"googleSearch", "googleSearchRetrieval", "urlContext", "fileSearch", "googleMaps"})
# The fixed columns that lead a row (which row it is), and those that follow the answer first (is it usable).
_LEAD = ("id", "row_index")
_VERDICT = ("status", "error")


def features_of(request: Mapping[str, Any]) -> frozenset[str]:
    """The `FEATURES` a job's request can produce: function calls with `functionDeclarations`, grounding with
    a search or retrieval tool, tool parts with `codeExecution` or a built-in tool, URL-context metadata with
    `urlContext`, citations in text output (the model recites sources) or with grounding. Only those get
    columns, so a plain job has no empty ones."""
    tools = {kind for tool in request.get("tools") or () if isinstance(tool, Mapping) for kind in tool}
    config = request.get("generationConfig") or {}
    text_mode = not isinstance(config, Mapping) or config.get("responseMimeType") != "application/json"
    features = set()
    if "functionDeclarations" in tools:
        features.add("function_calls")
    if tools & _GROUNDING_TOOLS:
        features.update(("grounding", "citations"))
    if "codeExecution" in tools or tools & _GROUNDING_TOOLS:
        # Built-in tools answer with parts of their own: file search runs code on 2.5 (executableCode) and
        # shows toolCall / toolResponse on Gemini 3 (tests/recorded/*/stream-file-search*.json).
        features.add("tool_parts")
    if "urlContext" in tools:
        features.add("url_context")
    if text_mode:
        features.add("citations")
    return frozenset(features)


@dataclass(frozen=True, slots=True)
class Layout:
    """The columns of a job's results parts, and their order.

    `keep` are the kept input columns (their Arrow types); `typed` is the job's response schema when its
    top-level properties become `prefix`-named columns; `features` the optional metadata groups the job has
    (`features_of`). `folder` is the schema of the parts a results folder already holds: a run writes its
    parts in that shape, so that a folder keeps one schema (columns the folder lacks are left out, columns
    it has that this job does not fill are null).

    The order is the one a data person reads a row in: which row (`id`, `row_index`), what went in (kept
    columns), what came out (typed columns), whether it is usable (`status`, `error`), then the raw answer,
    tokens and bookkeeping, and last the reply's metadata.
    """

    keep: pa.Schema
    typed: ResponseSchema | None = None
    prefix: str = "out_"
    features: frozenset[str] = frozenset(FEATURES)
    folder: pa.Schema | None = None
    _metadata: pa.Schema = field(init=False, repr=False)

    def __post_init__(self) -> None:
        left_out = {name for feature, names in FEATURES.items() if feature not in self.features for name in names}
        object.__setattr__(self, "_metadata", pa.schema([f for f in METADATA if f.name not in left_out]))

    @property
    def natural(self) -> pa.Schema:
        """This job's columns, in reading order."""
        typed = [] if self.typed is None else list(self.typed.arrow_schema(self.prefix))
        lead = [FIXED.field(name) for name in _LEAD]
        verdict = [FIXED.field(name) for name in _VERDICT]
        rest = [f for f in FIXED if f.name not in (*_LEAD, *_VERDICT)]
        return pa.schema([*lead, *self.keep, *typed, *verdict, *rest, *self._metadata])

    @property
    def schema(self) -> pa.Schema:
        """The schema parts are written in: the folder's when it has one, else this job's."""
        return self.natural if self.folder is None else self.folder

    def within(self, folder: pa.Schema | None) -> Layout:
        """This layout writing into a folder whose parts have schema `folder` (None: no parts yet)."""
        return Layout(self.keep, self.typed, self.prefix, self.features, folder)

    def left_out(self) -> list[str]:
        """Columns of this job that the folder's schema has no place for."""
        return [] if self.folder is None else [n for n in self.natural.names if n not in self.folder.names]


def results_table(rows: Sequence[tuple[Result, float]], layout: Layout, *, run_id: str, model: str) -> pa.Table:
    """The table of `rows` (each result with the time it finished, in seconds since the epoch)."""
    results = [r for r, _ in rows]
    natural = layout.natural
    arrays: dict[str, pa.Array] = {}
    for column in FIXED:
        arrays[column.name] = pa.array(_fixed(column.name, rows, run_id, model), type=column.type)
    metadata = [f for f in natural if f.name in METADATA.names]
    arrays.update(zip((f.name for f in metadata), metadata_columns(results, pa.schema(metadata)), strict=True))
    for column in layout.keep:
        arrays[column.name] = _keep_array([r.keep.get(column.name) for r in results], column.type)
    if layout.typed is not None:
        outputs = [r.output if r.status is Status.OK else None for r in results]
        typed = layout.typed.arrow_columns(outputs)
        arrays.update(zip(layout.typed.arrow_schema(layout.prefix).names, typed, strict=True))
    schema = layout.schema
    return pa.Table.from_arrays([_fitted(arrays.get(f.name), f, len(rows)) for f in schema], schema=schema)


def conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` in `schema`: its columns in that order and of those types; one it lacks (or cannot be cast) is
    null, one `schema` lacks is dropped."""
    rows = table.num_rows
    present = set(table.column_names)
    arrays = [_fitted(table[f.name].combine_chunks() if f.name in present else None, f, rows) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _fitted(array: pa.Array | None, column: pa.Field, rows: int) -> pa.Array:
    """`array` as the type of `column` (a folder's schema may differ from this job's), or nulls."""
    if array is None:
        return pa.nulls(rows, column.type)
    if array.type == column.type:
        return array
    try:
        return array.cast(column.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pa.nulls(rows, column.type)


def _fixed(name: str, rows: Sequence[tuple[Result, float]], run_id: str, model: str) -> list[Any]:
    if name in _USAGE:
        usage_field = _USAGE[name]
        return [getattr(r.usage, usage_field) for r, _ in rows]
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
