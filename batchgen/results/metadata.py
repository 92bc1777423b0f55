"""A reply's metadata as the values of the `columns.METADATA` columns, one feature group at a time: reply and
usage details, function calls, server-side tool parts, grounding (`results.grounding`), URL-context retrieval,
citations, safety ratings and log-probability.

Each converter reads the wire field leniently (a missing or malformed entry becomes null, never an error): the
row's answer is already judged by then, and metadata must not fail a paid-for row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batchgen.records import FunctionCall, Modalities, Result
from batchgen.results.columns import METADATA, METADATA_GROUPS, USAGE_DETAIL_COLUMNS
from batchgen.results.convert import each, json_text, number
from batchgen.results.grounding import grounding_values

Builder = Callable[[Sequence[Result], pa.Schema], list[pa.Array]]


def metadata_columns(results: Sequence[Result], schema: pa.Schema = METADATA) -> list[pa.Array]:
    """One array per column of `schema` (`METADATA`, or the part of it a job's layout has), one value per
    result."""
    wanted = set(schema.names)
    # The usual part: no row has candidate metadata, calls or tool parts, so those groups need no conversion.
    plain = not any(r.metadata or r.function_calls or r.tool_parts for r in results)
    arrays: dict[str, pa.Array] = {}
    for name, group in METADATA_GROUPS.items():
        if not wanted.intersection(group.names):
            continue
        if plain and name not in ("reply_details", "usage_details"):
            arrays.update((field.name, pa.nulls(len(results), field.type)) for field in group)
        else:
            arrays.update(zip(group.names, _BUILDERS[name](results, group), strict=True))
    return [arrays[name] for name in schema.names]


def _reply_details(results: Sequence[Result], group: pa.Schema) -> list[pa.Array]:
    return [_strings([getattr(r, name) for r in results]) for name in group.names]


def _strings(values: list[str | None]) -> pa.Array:
    # Most of these are null in most parts (finish and block messages, traffic type, error details).
    return pa.nulls(len(values), pa.string()) if values.count(None) == len(values) else pa.array(values, pa.string())


def _usage_details(results: Sequence[Result], group: pa.Schema) -> list[pa.Array]:
    usages = [r.usage for r in results]
    return [
        _modalities([getattr(u, attribute) for u in usages], group.field(column).type)
        for column, attribute in USAGE_DETAIL_COLUMNS
    ]


def _modalities(breakdowns: list[Modalities | None], kind: pa.DataType) -> pa.Array:
    """Breakdowns as list<struct<modality, token_count>>, built from flat arrays rather than row by row."""
    if all(breakdown is None for breakdown in breakdowns):
        return pa.nulls(len(breakdowns), kind)
    pairs = [pair for breakdown in breakdowns if breakdown for pair in breakdown]
    lengths = pa.array([len(b) if b else 0 for b in breakdowns], pa.int32())
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(lengths)])
    entries = pa.StructArray.from_arrays(
        [pa.array([m for m, _ in pairs], pa.string()), pa.array([c for _, c in pairs], pa.int64())],
        fields=list(kind.value_type),
    )
    mask = pa.array([b is None for b in breakdowns], pa.bool_())
    return pa.ListArray.from_arrays(offsets, entries, type=kind, mask=mask)


def _rows(convert: Callable[[Result], dict[str, Any] | None]) -> Builder:
    """A group built row by row: `convert` gives a row's values by column, or None for a row without any."""

    def build(results: Sequence[Result], group: pa.Schema) -> list[pa.Array]:
        rows = [convert(r) for r in results]
        if not any(rows):  # no row used the feature
            return [pa.nulls(len(results), field.type) for field in group]
        return [
            pa.array([None if row is None else row[field.name] for row in rows], type=field.type) for field in group
        ]

    return build


def _function_calls(result: Result) -> dict[str, Any] | None:
    return {"function_calls": [_call(call) for call in result.function_calls]} if result.function_calls else None


def _call(call: FunctionCall) -> dict[str, Any]:
    return {"name": call.name, "args_json": json_text(dict(call.args)), "id": call.id}


def _tool_parts(result: Result) -> dict[str, Any] | None:
    return {"tool_parts": [_tool_part(part) for part in result.tool_parts]} if result.tool_parts else None


def _tool_part(part: Mapping[str, Any]) -> dict[str, Any]:
    kind = next(key for key in ("executableCode", "codeExecutionResult", "toolCall", "toolResponse") if key in part)
    body = part[kind] if isinstance(part[kind], Mapping) else {}
    return {
        "kind": kind,
        "thought": bool(part.get("thought")),
        "id": body.get("id"),
        "tool_type": body.get("toolType"),
        "language": body.get("language"),
        "code": body.get("code"),
        "outcome": body.get("outcome"),
        "output": body.get("output"),
        "args_json": json_text(body.get("args")),
        "response_json": json_text(body.get("response")),
    }


def _grounding(result: Result) -> dict[str, Any] | None:
    grounding = result.metadata.get("groundingMetadata")
    return grounding_values(grounding) if isinstance(grounding, Mapping) else None


def _url_context(result: Result) -> dict[str, Any] | None:
    urls = (result.metadata.get("urlContextMetadata") or {}).get("urlMetadata")
    return None if urls is None else {"url_context": each(urls, _url)}


def _url(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"url": entry.get("retrievedUrl"), "status": entry.get("urlRetrievalStatus")}


def _citations(result: Result) -> dict[str, Any] | None:
    sources = (result.metadata.get("citationMetadata") or {}).get("citationSources")
    return None if sources is None else {"citations": each(sources, _citation)}


def _citation(source: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "start_index": source.get("startIndex", 0),  # left out at 0, as in a grounding segment
        "end_index": source.get("endIndex"),
        "uri": source.get("uri"),
        "title": source.get("title"),
        "license": source.get("license"),
    }


def _safety(result: Result) -> dict[str, Any] | None:
    metadata = result.metadata
    if "safetyRatings" not in metadata and "avgLogprobs" not in metadata:
        return None
    return {
        "safety_ratings": each(metadata.get("safetyRatings"), _rating),
        "avg_logprobs": number(metadata.get("avgLogprobs")),
    }


def _rating(rating: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "category": rating.get("category"),
        "probability": rating.get("probability"),
        "blocked": rating.get("blocked"),
    }


_BUILDERS: dict[str, Builder] = {
    "reply_details": _reply_details,
    "usage_details": _usage_details,
    "function_calls": _rows(_function_calls),
    "tool_parts": _rows(_tool_parts),
    "grounding": _rows(_grounding),
    "url_context": _rows(_url_context),
    "citations": _rows(_citations),
    "safety": _rows(_safety),
}
