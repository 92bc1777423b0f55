"""Response features beyond the text, as typed result columns: function calls, grounding, citations, safety.

Kept as structured Arrow columns (not JSON strings) so grounding sources or function arguments can be queried
directly in duckdb or polars. The raw candidate fields are converted in batches when a part is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pyarrow as pa

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
_CALL = pa.struct([("name", pa.string()), ("args_json", pa.string())])

EXTRA_FIELDS = pa.schema(
    [
        ("function_calls", pa.list_(_CALL)),
        ("grounding_queries", pa.list_(pa.string())),
        ("grounding_chunks", pa.list_(_CHUNK)),
        ("grounding_supports", pa.list_(_SUPPORT)),
        ("citations", pa.list_(_CITATION)),
        ("safety_ratings", pa.list_(_RATING)),
        ("avg_logprobs", pa.float64()),
    ]
)


def extra_columns(extras: Sequence[Mapping[str, Any]]) -> list[pa.Array]:
    """One array per EXTRA_FIELDS column from each result's raw candidate extras ({} for none)."""
    if not any(extras):
        # The usual part: no grounding, calls, citations or ratings anywhere, so no row needs converting.
        return [pa.nulls(len(extras), f.type) for f in EXTRA_FIELDS]
    rows = [_row(e) for e in extras]
    return [pa.array([row[f.name] for row in rows], type=f.type) for f in EXTRA_FIELDS]


def _row(extras: Mapping[str, Any]) -> dict[str, Any]:
    grounding = extras.get("groundingMetadata") or {}
    citations = (extras.get("citationMetadata") or {}).get("citationSources")
    return {
        "function_calls": _calls(extras.get("functionCalls")),
        "grounding_queries": grounding.get("webSearchQueries"),
        "grounding_chunks": _each(grounding.get("groundingChunks"), _chunk),
        "grounding_supports": _each(grounding.get("groundingSupports"), _support),
        "citations": _each(citations, _citation),
        "safety_ratings": _each(extras.get("safetyRatings"), _rating),
        "avg_logprobs": extras.get("avgLogprobs"),
    }


def _each(items: Any, convert: Any) -> list[Any] | None:
    if not isinstance(items, list):
        return None
    return [convert(item) for item in items if isinstance(item, Mapping)]


def _calls(calls: Any) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    return [{"name": c.get("name"), "args_json": orjson.dumps(c.get("args") or {}).decode()} for c in calls]


def _chunk(chunk: Mapping[str, Any]) -> dict[str, Any]:
    source = chunk.get("web") or chunk.get("retrievedContext") or {}
    return {"uri": source.get("uri"), "title": source.get("title")}


def _support(support: Mapping[str, Any]) -> dict[str, Any]:
    segment = support.get("segment") or {}
    return {
        # Proto3 JSON leaves out a field at its default, so a segment that starts the text has no startIndex.
        "start_index": segment.get("startIndex", 0) if segment else None,
        "end_index": segment.get("endIndex"),
        "text": segment.get("text"),
        "chunk_indices": support.get("groundingChunkIndices"),
        "confidence": support.get("confidenceScores"),
    }


def _citation(source: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "start_index": source.get("startIndex", 0),  # left out at 0, as in a grounding segment
        "end_index": source.get("endIndex"),
        "uri": source.get("uri"),
        "title": source.get("title"),
        "license": source.get("license"),
    }


def _rating(rating: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "category": rating.get("category"),
        "probability": rating.get("probability"),
        "blocked": rating.get("blocked"),
    }
