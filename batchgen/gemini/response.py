"""A `GenerateContentResponse` read into a `Reply`: text, thoughts, finish and block reasons, usage, metadata."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchgen.errors import (
    MalformedResponse,
)
from batchgen.records import FunctionCall, Modalities, Usage


@dataclass(frozen=True, slots=True)
class Reply:
    """The parts of a `GenerateContentResponse` that decide a row's result."""

    text: str | None
    thoughts: str | None
    finish_reason: str | None
    block_reason: str | None
    usage: Usage
    model_version: str | None
    response_id: str | None
    function_calls: tuple[FunctionCall, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """The candidate's fields beyond its content (`CANDIDATE_METADATA`), as the API sent them; for a blocked
    prompt (no candidate), the `safetyRatings` of its promptFeedback."""
    finish_message: str | None = None
    block_reason_message: str | None = None
    service_tier: str | None = None
    """`usageMetadata.serviceTier` as sent ("standard" is the only value seen); None when absent, which older
    responses are, so absence never means "standard"."""
    traffic_type: str | None = None
    """`usageMetadata.trafficType` (Vertex AI only: ON_DEMAND, PROVISIONED_THROUGHPUT, ...)."""
    tool_parts: tuple[Mapping[str, Any], ...] = ()
    """Parts of server-side tools (`TOOL_PARTS`), in order, as sent but without their thoughtSignature."""


def parse_usage(meta: Mapping[str, Any] | None) -> Usage:
    """`usageMetadata` -> Usage; a missing block is all None, a missing count inside it is 0 (API convention),
    a missing per-modality breakdown None."""
    if not meta:
        return Usage()
    get = meta.get
    if _DETAILS.isdisjoint(meta):  # no breakdown (older responses, the local server's early stream events)
        details: tuple[Modalities | None, ...] = (None, None, None, None)
    else:
        details = tuple(_modalities(get(key)) for key in _DETAIL_ORDER)
    return Usage(
        get("promptTokenCount", 0),
        get("candidatesTokenCount", 0),
        get("thoughtsTokenCount", 0),
        get("cachedContentTokenCount", 0),
        get("toolUsePromptTokenCount", 0),
        get("totalTokenCount", 0),
        *details,
    )


# The per-modality breakdowns, in the order of `Usage`'s *_details fields.
_DETAIL_ORDER = ("promptTokensDetails", "candidatesTokensDetails", "cacheTokensDetails", "toolUsePromptTokensDetails")
_DETAILS = frozenset(_DETAIL_ORDER)


def _modalities(details: Any) -> Modalities | None:
    # [{"modality": "TEXT", "tokenCount": 8}]; a count at 0 is left out by proto3 JSON, as elsewhere.
    if not isinstance(details, list):
        return None
    if len(details) == 1 and isinstance(only := details[0], dict):  # the usual case: TEXT alone
        modality, count = only.get("modality", "MODALITY_UNSPECIFIED"), only.get("tokenCount", 0)
        if type(modality) is str and type(count) is int:
            return ((modality, count),)
    return tuple(
        (str(d.get("modality", "MODALITY_UNSPECIFIED")), int(d.get("tokenCount", 0)))
        for d in details
        if isinstance(d, Mapping)
    )


# Candidate fields kept for the results beyond content and finish reason; `results.metadata` turns each into
# columns. The rest of a candidate (index, tokenCount, logprobsResult) is dropped: nothing a row is judged or
# billed by, and logprobsResult is per-token detail far larger than the answer.
CANDIDATE_METADATA = (
    "groundingMetadata",
    "citationMetadata",
    "safetyRatings",
    "avgLogprobs",
    "urlContextMetadata",
)

# Parts that server-side tools add to an answer: code execution's code and its results, and the calls and
# responses of built-in tools (file search, Google Search...) on Gemini 3.
TOOL_PARTS = ("executableCode", "codeExecutionResult", "toolCall", "toolResponse")


def parse_response(data: Any) -> Reply:
    """Interpret a decoded `GenerateContentResponse`; raises MalformedResponse when it is not one."""
    if not isinstance(data, Mapping):
        raise MalformedResponse("response body is not a JSON object")
    feedback = data.get("promptFeedback") or {}
    block_reason = feedback.get("blockReason")
    candidates = data.get("candidates")
    usage_meta = data.get("usageMetadata") or {}
    if not candidates:
        if not block_reason:
            raise MalformedResponse("response has no candidates and no promptFeedback.blockReason")
        candidate: Mapping[str, Any] = {}
        parts: _Parts = (None, None, (), ())
        # No candidate: the safety ratings are the prompt's (the category that blocked it).
        metadata = {"safetyRatings": feedback["safetyRatings"]} if "safetyRatings" in feedback else {}
    elif not isinstance(candidates, Sequence) or not isinstance(candidates[0], Mapping):
        raise MalformedResponse("response candidates are not a list of objects")
    else:
        candidate = candidates[0]
        parts = _split_parts((candidate.get("content") or {}).get("parts") or ())
        metadata = {key: candidate[key] for key in CANDIDATE_METADATA if key in candidate}
    text, thoughts, calls, tools = parts
    return Reply(
        text=text,
        thoughts=thoughts,
        finish_reason=candidate.get("finishReason"),
        block_reason=block_reason,
        usage=parse_usage(usage_meta),
        model_version=data.get("modelVersion"),
        response_id=data.get("responseId"),
        function_calls=calls,
        metadata=metadata,
        finish_message=candidate.get("finishMessage"),
        block_reason_message=feedback.get("blockReasonMessage"),
        service_tier=usage_meta.get("serviceTier"),
        traffic_type=usage_meta.get("trafficType"),
        tool_parts=tools,
    )


# text, thoughts, function calls, tool parts
_Parts = tuple[str | None, str | None, tuple[FunctionCall, ...], tuple[Mapping[str, Any], ...]]


def _split_parts(parts: Sequence[Any]) -> _Parts:
    # Thought summaries come as parts with thought=true; like the SDK's `.text`, they never enter the answer.
    # Gemini 3 may send parts holding only a thoughtSignature, hence the "text" membership test. Signatures
    # are not kept (see docs/results.md): one on an image part was 597,616 characters.
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[FunctionCall] = []
    tools: list[Mapping[str, Any]] = []
    for part in parts:
        if not isinstance(part, Mapping):
            raise MalformedResponse("a content part is not an object")
        if "text" in part:
            (thoughts if part.get("thought") else texts).append(part["text"])
        elif isinstance(call := part.get("functionCall"), Mapping):
            args = call.get("args")
            calls.append(FunctionCall(call.get("name"), args if isinstance(args, Mapping) else {}, call.get("id")))
        elif any(kind in part for kind in TOOL_PARTS):
            tools.append({key: value for key, value in part.items() if key != "thoughtSignature"})
    return ("".join(texts) if texts else None, "".join(thoughts) if thoughts else None, tuple(calls), tuple(tools))


def decode_json(body: bytes) -> Any:
    """Decode a 200 response body; a body that is not JSON is a MalformedResponse (retryable)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse(f"response body is not JSON ({len(body)} bytes)") from exc
