"""The results contract: every column a results part may hold, with its Arrow type. Defined here only.

A part holds the fixed columns, the reply-metadata columns its job can produce (`FEATURES`: a job without
tools has no grounding columns), the job's kept input columns and its typed `out_*` columns; `table.Layout`
decides which and in what order. Writers build parts against `CONTRACT`; readers (the report, resume, the
Python API) select and cast with it, so a column's name or type is never restated elsewhere. A reader must
expect `OPTIONAL` columns to be missing: feature columns of jobs without the feature, and `row_index` or
`traffic` in folders written before they existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
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
        ("traffic", pa.string()),
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

_MODALITY = pa.struct([("modality", pa.string()), ("token_count", _TOKENS)])

# Each per-modality breakdown's column and the `Usage` field it holds: summed per modality, like the counts.
USAGE_DETAIL_COLUMNS: Final = (
    ("prompt_tokens_details", "prompt_details"),
    ("candidates_tokens_details", "candidates_details"),
    ("cache_tokens_details", "cache_details"),
    ("tool_use_prompt_tokens_details", "tool_use_details"),
)

_CALL = pa.struct([("name", pa.string()), ("args_json", pa.string()), ("id", pa.string())])
_TOOL_PART = pa.struct(
    [
        ("kind", pa.string()),
        ("thought", pa.bool_()),
        ("id", pa.string()),
        ("tool_type", pa.string()),
        ("language", pa.string()),
        ("code", pa.string()),
        ("outcome", pa.string()),
        ("output", pa.string()),
        ("args_json", pa.string()),
        ("response_json", pa.string()),
    ]
)
_CUSTOM_METADATA = pa.struct(
    [
        ("key", pa.string()),
        ("string_value", pa.string()),
        ("string_list_value", pa.list_(pa.string())),
        ("numeric_value", pa.float64()),
    ]
)
_CHUNK = pa.struct(
    [
        ("uri", pa.string()),
        ("title", pa.string()),
        ("kind", pa.string()),
        ("domain", pa.string()),
        ("text", pa.string()),
        ("document_name", pa.string()),
        ("file_search_store", pa.string()),
        ("page_number", pa.int64()),
        ("place_id", pa.string()),
        ("custom_metadata", pa.list_(_CUSTOM_METADATA)),
    ]
)
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
# arguments can be queried directly in duckdb or polars; grouped by the feature that produces them, so that a
# layout leaves out the groups of features a job does not use (`FEATURES`).
REPLY_DETAILS: Final = pa.schema(
    [
        ("finish_message", pa.string()),
        ("block_reason_message", pa.string()),
        ("service_tier", pa.string()),
        ("traffic_type", pa.string()),
        ("error_details", pa.string()),
    ]
)
USAGE_DETAILS: Final = pa.schema([(column, pa.list_(_MODALITY)) for column, _ in USAGE_DETAIL_COLUMNS])
FUNCTION_CALLS: Final = pa.schema([("function_calls", pa.list_(_CALL))])
TOOL_PARTS: Final = pa.schema([("tool_parts", pa.list_(_TOOL_PART))])
GROUNDING: Final = pa.schema(
    [
        ("grounding_queries", pa.list_(pa.string())),
        ("grounding_chunks", pa.list_(_CHUNK)),
        ("grounding_supports", pa.list_(_SUPPORT)),
        ("grounding_entry_point", pa.string()),
        ("grounding_retrieval_score", pa.float64()),
    ]
)
URL_CONTEXT: Final = pa.schema([("url_context", pa.list_(_URL))])
CITATIONS: Final = pa.schema([("citations", pa.list_(_CITATION))])
SAFETY: Final = pa.schema([("safety_ratings", pa.list_(_RATING)), ("avg_logprobs", pa.float64())])

METADATA_GROUPS: Final[Mapping[str, pa.Schema]] = MappingProxyType(
    {
        "reply_details": REPLY_DETAILS,  # any reply, and any failed call
        "usage_details": USAGE_DETAILS,  # any reply
        "function_calls": FUNCTION_CALLS,  # tools: functionDeclarations
        "tool_parts": TOOL_PARTS,  # tools: codeExecution; Gemini 3 built-in tools (fileSearch, googleSearch...)
        "grounding": GROUNDING,  # tools: googleSearch, fileSearch, urlContext, googleMaps, retrieval
        "url_context": URL_CONTEXT,  # tools: urlContext
        "citations": CITATIONS,  # any reply that recites a source
        "safety": SAFETY,  # any reply (avgLogprobs: some models only)
    }
)
"""The reply-metadata columns by feature group, in contract order."""

METADATA: Final = pa.schema([field for group in METADATA_GROUPS.values() for field in group])

# The groups a part holds only when its job's request can produce them (see `table.features_of`), by name;
# the others (reply and usage details, safety ratings and log-probabilities) any reply or failed call may carry.
FEATURES: Final = {
    name: tuple(METADATA_GROUPS[name].names)
    for name in ("function_calls", "tool_parts", "grounding", "url_context", "citations")
}

CONTRACT: Final = pa.schema([*FIXED, *METADATA])
"""Every column a batchgen results part may hold; a kept input column may not reuse a name."""

OPTIONAL: Final = frozenset({"row_index", "traffic", *METADATA.names})
"""Contract columns a part may lack, which a reader gets as nulls: feature columns of jobs without the
feature, and columns newer than the folder (`row_index`, `traffic`, the reply and usage details...)."""


def select(names: list[str] | tuple[str, ...]) -> pa.Schema:
    """The contract's fields of the given names, in that order (what a reader asks a part for)."""
    return pa.schema([CONTRACT.field(name) for name in names])


def usage_of(row: dict[str, int | None]) -> Usage:
    """The `Usage` a row's token columns hold (a dict of column name to value, as Arrow's `to_pylist` gives)."""
    return Usage.of_counts({field: row.get(column) for column, field in USAGE_COLUMNS})
