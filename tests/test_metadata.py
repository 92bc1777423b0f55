"""Grounding, function calls, citations and safety ratings become typed, queryable columns."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from batchgen.records import FunctionCall, Result, Status
from batchgen.results.columns import METADATA
from batchgen.results.metadata import metadata_columns

GROUNDED = {
    "groundingMetadata": {
        "webSearchQueries": ["who won euro 2024"],
        "groundingChunks": [{"web": {"uri": "https://example.org/a", "title": "example.org"}}],
        "groundingSupports": [
            {
                "segment": {"startIndex": 0, "endIndex": 20, "text": "Spain won Euro 2024"},
                "groundingChunkIndices": [0],
                "confidenceScores": [0.97],
            }
        ],
    },
    "citationMetadata": {
        "citationSources": [{"startIndex": 1, "endIndex": 9, "uri": "https://x.org", "license": "mit"}]
    },
    "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}],
    "avgLogprobs": -0.25,
    "urlContextMetadata": {
        "urlMetadata": [{"retrievedUrl": "https://x.org/a", "urlRetrievalStatus": "URL_RETRIEVAL_STATUS_SUCCESS"}]
    },
}
CALLS = (FunctionCall("get_weather", {"city": "Paris"}),)


def table(*rows: Result) -> pa.Table:
    return pa.Table.from_arrays(metadata_columns(rows), schema=METADATA)


def row(metadata: dict[str, object], calls: tuple[FunctionCall, ...] = ()) -> Result:
    return Result("r", Status.OK, metadata=metadata, function_calls=calls)


def test_columns_hold_the_structured_fields_and_nulls_for_plain_rows() -> None:
    first, plain = table(row(GROUNDED, CALLS), row({})).to_pylist()
    assert first["grounding_queries"] == ["who won euro 2024"]
    assert first["grounding_chunks"] == [{"uri": "https://example.org/a", "title": "example.org"}]
    assert first["grounding_supports"][0]["chunk_indices"] == [0]
    assert first["citations"][0]["license"] == "mit"
    assert first["function_calls"] == [{"name": "get_weather", "args_json": '{"city":"Paris"}'}]
    assert first["safety_ratings"][0]["blocked"] is None
    assert first["avg_logprobs"] == -0.25
    assert first["url_context"] == [{"url": "https://x.org/a", "status": "URL_RETRIEVAL_STATUS_SUCCESS"}]
    assert all(value is None for value in plain.values())


def test_grounding_sources_are_queryable_in_duckdb() -> None:
    results = table(row(GROUNDED), row({}))
    connection = duckdb.connect()
    connection.register("results", results)
    uris = connection.sql("select unnest(grounding_chunks).uri as uri from results").fetchall()
    assert uris == [("https://example.org/a",)]


def test_a_start_index_left_out_on_the_wire_is_zero() -> None:
    """Proto3 JSON omits fields at their default: a segment or citation that starts the text has no
    startIndex, and its column holds 0, not null (the google-genai SDK reads it as unset; both mean 0)."""
    from_start = {
        "groundingMetadata": {"groundingSupports": [{"segment": {"endIndex": 12, "text": "Spain won it"}}]},
        "citationMetadata": {"citationSources": [{"endIndex": 40, "uri": "https://x.org"}]},
    }
    first = table(row(from_start)).to_pylist()[0]
    assert first["grounding_supports"][0]["start_index"] == 0
    assert first["citations"][0]["start_index"] == 0
    assert first["grounding_supports"][0]["end_index"] == 12
