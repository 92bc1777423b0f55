"""`groundingMetadata` as the values of the `columns.GROUNDING` columns: queries, sources, supported segments,
the search entry point and the dynamic-retrieval score.

Read leniently, like every reply-metadata converter: a missing or malformed entry becomes null, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchgen.results.convert import each, number

# A grounding chunk holds one source, under a key naming its kind; the first present is the chunk's kind.
_CHUNK_KINDS = ("web", "retrievedContext", "maps", "image")


def grounding_values(grounding: Mapping[str, Any]) -> dict[str, Any]:
    """The GROUNDING columns' values for one reply's groundingMetadata (possibly accumulated over a stream)."""
    entry_point = grounding.get("searchEntryPoint")
    retrieval = grounding.get("retrievalMetadata")
    return {
        "grounding_queries": grounding.get("webSearchQueries"),
        "grounding_chunks": each(grounding.get("groundingChunks"), _chunk),
        "grounding_supports": each(grounding.get("groundingSupports"), _support),
        # renderedContent is the HTML of the Google Search suggestions, which the Search grounding terms ask an
        # application to show with the answer; sdkBlob (an opaque base64 blob for SDK renderers) is dropped.
        "grounding_entry_point": entry_point.get("renderedContent") if isinstance(entry_point, Mapping) else None,
        "grounding_retrieval_score": number(
            retrieval.get("googleSearchDynamicRetrievalScore") if isinstance(retrieval, Mapping) else None
        ),
    }


def _chunk(chunk: Mapping[str, Any]) -> dict[str, Any]:
    kind = next((k for k in _CHUNK_KINDS if isinstance(chunk.get(k), Mapping)), None)
    source: Mapping[str, Any] = chunk[kind] if kind else {}
    page = source.get("pageNumber")
    return {
        "uri": source.get("uri") or source.get("sourceUri"),  # an image chunk has sourceUri (and imageUri)
        "title": source.get("title"),
        "kind": kind,
        "domain": source.get("domain"),
        "text": source.get("text"),
        "document_name": source.get("documentName"),
        "file_search_store": source.get("fileSearchStore"),
        "page_number": page if isinstance(page, int) else None,
        "place_id": source.get("placeId"),
        "custom_metadata": each(source.get("customMetadata"), _custom),
    }


def _custom(entry: Mapping[str, Any]) -> dict[str, Any]:
    values = entry.get("stringListValue")
    return {
        "key": entry.get("key"),
        "string_value": entry.get("stringValue"),
        "string_list_value": values.get("values") if isinstance(values, Mapping) else None,
        "numeric_value": number(entry.get("numericValue")),
    }


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
