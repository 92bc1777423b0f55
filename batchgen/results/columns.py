"""The results contract: every column a results part may hold, with its Arrow type. Defined here only.

A part holds the fixed columns, the reply-metadata columns its job can produce (`FEATURES`: a job without
tools has no grounding columns), the job's kept input columns and its typed `out_*` columns; `table.Layout`
decides which and in what order. Writers build parts against `CONTRACT`; readers (the report, resume, the
Python API) select and cast with it, so a column's name or type is never restated elsewhere. A reader must
expect `OPTIONAL` columns to be missing: feature columns of jobs without the feature, and `row_index` in
folders written before it existed.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

from batchgen.records import Usage

_TOKENS = pa.int64()

# Each usage count's column and the `Usage` field it holds: sums over every response the row was billed for.
USAGE_COLUMNS: Final = (
    ("prompt_token_count", "prompt"),
    ("candidates_token_count", "candidates"),
    ("thoughts_token_count", "thoughts"),
    ("cached_content_token_count", "cached"),
    ("tool_use_prompt_token_count", "tool_use"),
    ("total_token_count", "total"),
)

FIXED: Final = pa.schema(
    [
        ("id", pa.string()),
        # The row's 0-based position in the input (in a folder, across its files in name order).
        ("row_index", pa.int64()),
        ("status", pa.string()),
        ("text", pa.string()),
        ("output_json", pa.string()),
        ("thoughts", pa.string()),
        ("finish_reason", pa.string()),
        ("block_reason", pa.string()),
        *((column, _TOKENS) for column, _ in USAGE_COLUMNS),
        ("model", pa.string()),
        ("model_version", pa.string()),
        ("response_id", pa.string()),
        ("attempts", pa.int32()),
        ("responses", pa.int32()),
        ("reasks", pa.int32()),
        ("latency_ms", pa.float64()),
        ("error", pa.string()),
        ("http_status", pa.int32()),
        ("run_id", pa.string()),
        ("finished_at", pa.timestamp("ms", tz="UTC")),
    ]
)

_CALL = pa.struct([("name", pa.string()), ("args_json", pa.string())])
_CHUNK = pa.struct([("uri", pa.string()), ("title", pa.string())])
_SUPPORT = pa.struct(
    [
        ("start_index", pa.int64()),
        ("end_index", pa.int64()),
        ("text", pa.string()),
        ("chunk_indices", pa.list_(pa.int64())),
        ("confidence", pa.list_(pa.float64())),
    ]
)
_CITATION = pa.struct(
    [
        ("start_index", pa.int64()),
        ("end_index", pa.int64()),
        ("uri", pa.string()),
        ("title", pa.string()),
        ("license", pa.string()),
    ]
)
_RATING = pa.struct([("category", pa.string()), ("probability", pa.string()), ("blocked", pa.bool_())])
_URL = pa.struct([("url", pa.string()), ("status", pa.string())])

# What the reply carried beyond its text, as structured columns (not JSON text) so that sources or call
# arguments can be queried directly in duckdb or polars.
METADATA: Final = pa.schema(
    [
        ("function_calls", pa.list_(_CALL)),
        ("grounding_queries", pa.list_(pa.string())),
        ("grounding_chunks", pa.list_(_CHUNK)),
        ("grounding_supports", pa.list_(_SUPPORT)),
        ("citations", pa.list_(_CITATION)),
        ("safety_ratings", pa.list_(_RATING)),
        ("avg_logprobs", pa.float64()),
        ("url_context", pa.list_(_URL)),
    ]
)

# Metadata columns a part holds only when its job's request can produce them (see `table.features_of`); the
# others (safety ratings, log-probabilities) any reply may carry.
FEATURES: Final = {
    "function_calls": ("function_calls",),
    "grounding": ("grounding_queries", "grounding_chunks", "grounding_supports"),
    "citations": ("citations",),
    "url_context": ("url_context",),
}

CONTRACT: Final = pa.schema([*FIXED, *METADATA])
"""Every column a batchgen results part may hold; a kept input column may not reuse a name."""

OPTIONAL: Final = frozenset({"row_index", *(name for names in FEATURES.values() for name in names)})
"""Contract columns a part may lack: a reader gets them as nulls."""


def select(names: list[str] | tuple[str, ...]) -> pa.Schema:
    """The contract's fields of the given names, in that order (what a reader asks a part for)."""
    return pa.schema([CONTRACT.field(name) for name in names])


def usage_of(row: dict[str, int | None]) -> Usage:
    """The `Usage` a row's token columns hold (a dict of column name to value, as Arrow's `to_pylist` gives)."""
    return Usage(**{field: row.get(column) for column, field in USAGE_COLUMNS})
