"""Grounding, function calls, tool parts, citations, safety ratings and usage details become typed, queryable
columns."""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import pyarrow as pa
import pytest

from batchgen.records import FunctionCall, Result, Status, Usage
from batchgen.results import metadata
from batchgen.results.columns import METADATA, METADATA_GROUPS, REPLY_DETAILS
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
CALLS = (FunctionCall("get_weather", {"city": "Paris"}, "c1"),)


def table(*rows: Result) -> pa.Table:
    return pa.Table.from_arrays(metadata_columns(rows), schema=METADATA)


def row(metadata: Mapping[str, object], calls: tuple[FunctionCall, ...] = ()) -> Result:
    return Result("r", Status.OK, metadata=metadata, function_calls=calls)


def test_columns_hold_the_structured_fields_and_nulls_for_plain_rows() -> None:
    first, plain = table(row(GROUNDED, CALLS), row({})).to_pylist()
    assert first["grounding_queries"] == ["who won euro 2024"]
    assert [(c["kind"], c["uri"], c["title"]) for c in first["grounding_chunks"]] == [
        ("web", "https://example.org/a", "example.org")
    ]
    assert first["grounding_supports"][0]["chunk_indices"] == [0]
    assert first["citations"][0]["license"] == "mit"
    assert first["function_calls"] == [{"name": "get_weather", "args_json": '{"city":"Paris"}', "id": "c1"}]
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


# A retrievedContext chunk as file search sends it (tests/recorded/gemini-3/stream-file-search-tool-call.json).
FILE_SEARCH = {
    "groundingMetadata": {
        "groundingChunks": [
            {
                "retrievedContext": {
                    "text": "Paris is the capital of France.",
                    "fileSearchStore": "fileSearchStores/capitals-1",
                    "customMetadata": [
                        {"key": "source_url", "stringValue": "https://example.com/paris"},
                        {"key": "tags", "stringListValue": {"values": ["geo", "fr"]}},
                        {"key": "year", "numericValue": 2024},
                    ],
                }
            }
        ],
        "searchEntryPoint": {"renderedContent": "<div>chips</div>", "sdkBlob": "b64"},
        "retrievalMetadata": {"googleSearchDynamicRetrievalScore": 0.75},
    }
}


def test_a_retrieved_context_chunk_keeps_its_text_store_and_custom_metadata() -> None:
    """File-search chunks have no uri or title: their text, store and custom metadata are what they hold."""
    (values,) = table(row(FILE_SEARCH)).to_pylist()
    (chunk,) = values["grounding_chunks"]
    assert chunk["kind"] == "retrievedContext" and chunk["uri"] is None
    assert chunk["text"] == "Paris is the capital of France."
    assert chunk["file_search_store"] == "fileSearchStores/capitals-1"
    assert chunk["custom_metadata"] == [
        {
            "key": "source_url",
            "string_value": "https://example.com/paris",
            "string_list_value": None,
            "numeric_value": None,
        },
        {"key": "tags", "string_value": None, "string_list_value": ["geo", "fr"], "numeric_value": None},
        {"key": "year", "string_value": None, "string_list_value": None, "numeric_value": 2024.0},
    ]
    assert values["grounding_entry_point"] == "<div>chips</div>"
    assert values["grounding_retrieval_score"] == 0.75


def test_tool_parts_keep_their_order_kind_and_fields() -> None:
    """Code execution's code and results, and Gemini 3's built-in tool calls, in the order they came."""
    parts = (
        {"executableCode": {"language": "PYTHON", "code": "print(1/0)"}, "thought": True},
        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "ok\n"}},
        {"codeExecutionResult": {"outcome": "OUTCOME_FAILED", "output": "ZeroDivisionError"}},
        {"toolCall": {"toolType": "FILE_SEARCH", "id": "std8lcuv", "args": {"q": "capital"}}},
        {"toolResponse": {"toolType": "FILE_SEARCH", "id": "std8lcuv"}},
    )
    (values,) = table(Result("r", Status.OK, tool_parts=parts)).to_pylist()
    got = [(p["kind"], p["thought"], p["code"] or p["outcome"] or p["id"]) for p in values["tool_parts"]]
    assert got == [
        ("executableCode", True, "print(1/0)"),
        ("codeExecutionResult", False, "OUTCOME_OK"),
        ("codeExecutionResult", False, "OUTCOME_FAILED"),
        ("toolCall", False, "std8lcuv"),
        ("toolResponse", False, "std8lcuv"),
    ]
    assert values["tool_parts"][3]["args_json"] == '{"q":"capital"}'
    assert values["tool_parts"][3]["tool_type"] == "FILE_SEARCH"


def test_usage_details_are_summed_per_modality_over_the_responses_of_a_row() -> None:
    """Like the counts, a row's per-modality breakdowns add up every response it was billed for."""
    first = Usage(prompt=20, prompt_details=(("TEXT", 8), ("IMAGE", 12)), candidates_details=(("TEXT", 5),))
    second = Usage(prompt=9, prompt_details=(("TEXT", 9),), tool_use_details=(("TEXT", 40),))
    (values,) = table(Result("r", Status.OK, usage=first + second)).to_pylist()
    assert values["prompt_tokens_details"] == [
        {"modality": "TEXT", "token_count": 17},
        {"modality": "IMAGE", "token_count": 12},
    ]
    assert values["candidates_tokens_details"] == [{"modality": "TEXT", "token_count": 5}]
    assert values["tool_use_prompt_tokens_details"] == [{"modality": "TEXT", "token_count": 40}]
    assert values["cache_tokens_details"] is None  # never reported, not an empty breakdown


def test_reply_details_are_per_row_strings() -> None:
    result = Result(
        "r",
        Status.FAILED,
        finish_message="Model generated function call(s).",
        service_tier="standard",
        traffic_type="ON_DEMAND",
        error_details='[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]',
    )
    (values,) = table(result).to_pylist()
    assert {name: values[name] for name in REPLY_DETAILS.names} == {
        "finish_message": "Model generated function call(s).",
        "block_reason_message": None,
        "service_tier": "standard",
        "traffic_type": "ON_DEMAND",
        "error_details": '[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]',
    }


def test_every_metadata_group_has_a_builder_and_groups_partition_the_metadata_columns() -> None:
    assert set(metadata._BUILDERS) == set(METADATA_GROUPS)
    names = [name for group in METADATA_GROUPS.values() for name in group.names]
    assert names == METADATA.names and len(set(names)) == len(names)


@pytest.mark.parametrize("group", list(METADATA_GROUPS))
def test_one_group_alone_converts_to_the_same_values(group: str) -> None:
    """A layout that leaves groups out asks for the columns it keeps; they hold what the full set holds."""
    rows = (row({**GROUNDED, **FILE_SEARCH}, CALLS), row({}))
    schema = METADATA_GROUPS[group]
    alone = pa.Table.from_arrays(metadata_columns(rows, schema), schema=schema)
    assert alone.to_pylist() == table(*rows).select(schema.names).to_pylist()
