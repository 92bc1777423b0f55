"""A reply's metadata as the values of the `columns.METADATA` columns: function calls, grounding, citations,
safety ratings, log-probability and URL-context retrieval.

Each converter reads the wire field leniently (a missing or malformed entry becomes null, never an error): the
row's answer is already judged by then, and metadata must not fail a paid-for row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import pyarrow as pa

from batchgen.records import FunctionCall, Result
from batchgen.results.columns import METADATA


def metadata_columns(results: Sequence[Result], columns: pa.Schema = METADATA) -> list[pa.Array]:
    """One array per column of `columns` (`METADATA`, or the part of it a job's layout has), one value per
    result."""
    if not any(r.metadata or r.function_calls for r in results):
        # The usual part: no grounding, calls, citations or ratings anywhere, so no row needs converting.
        return [pa.nulls(len(results), f.type) for f in columns]
    rows = [_row(r.metadata, r.function_calls) for r in results]
    return [pa.array([row[f.name] for row in rows], type=f.type) for f in columns]


def _row(metadata: Mapping[str, Any], calls: Sequence[FunctionCall]) -> dict[str, Any]:
    grounding = metadata.get("groundingMetadata") or {}
    citations = (metadata.get("citationMetadata") or {}).get("citationSources")
    urls = (metadata.get("urlContextMetadata") or {}).get("urlMetadata")
    return {
        "function_calls": [_call(call) for call in calls] or None,
        "grounding_queries": grounding.get("webSearchQueries"),
        "grounding_chunks": _each(grounding.get("groundingChunks"), _chunk),
        "grounding_supports": _each(grounding.get("groundingSupports"), _support),
        "citations": _each(citations, _citation),
        "safety_ratings": _each(metadata.get("safetyRatings"), _rating),
        "avg_logprobs": metadata.get("avgLogprobs"),
        "url_context": _each(urls, _url),
    }


def _each(items: Any, convert: Callable[[Mapping[str, Any]], dict[str, Any]]) -> list[dict[str, Any]] | None:
    if not isinstance(items, list):
        return None
    return [convert(item) for item in items if isinstance(item, Mapping)]


def _call(call: FunctionCall) -> dict[str, Any]:
    return {"name": call.name, "args_json": orjson.dumps(dict(call.args)).decode()}


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


def _url(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"url": entry.get("retrievedUrl"), "status": entry.get("urlRetrievalStatus")}
