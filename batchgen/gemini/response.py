"""A `GenerateContentResponse` read into a `Reply`: text, thoughts, finish and block reasons, usage, metadata."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchgen.errors import (
    MalformedResponse,
)
from batchgen.records import FunctionCall, Usage


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
    """The candidate's fields beyond its content (`CANDIDATE_METADATA`), as the API sent them."""


def parse_usage(meta: Mapping[str, Any] | None) -> Usage:
    """`usageMetadata` -> Usage; a missing block is all None, a missing field inside it is 0 (API convention)."""
    if not meta:
        return Usage()
    get = meta.get
    return Usage(
        prompt=get("promptTokenCount", 0),
        candidates=get("candidatesTokenCount", 0),
        thoughts=get("thoughtsTokenCount", 0),
        cached=get("cachedContentTokenCount", 0),
        tool_use=get("toolUsePromptTokenCount", 0),
        total=get("totalTokenCount", 0),
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


def parse_response(data: Any) -> Reply:
    """Interpret a decoded `GenerateContentResponse`; raises MalformedResponse when it is not one."""
    if not isinstance(data, Mapping):
        raise MalformedResponse("response body is not a JSON object")
    feedback = data.get("promptFeedback") or {}
    block_reason = feedback.get("blockReason")
    candidates = data.get("candidates")
    usage = parse_usage(data.get("usageMetadata"))
    common: dict[str, Any] = {
        "usage": usage,
        "model_version": data.get("modelVersion"),
        "response_id": data.get("responseId"),
        "block_reason": block_reason,
    }
    if not candidates:
        if block_reason:
            return Reply(text=None, thoughts=None, finish_reason=None, **common)
        raise MalformedResponse("response has no candidates and no promptFeedback.blockReason")
    if not isinstance(candidates, Sequence) or not isinstance(candidates[0], Mapping):
        raise MalformedResponse("response candidates are not a list of objects")
    candidate = candidates[0]
    text, thoughts, calls = _split_parts((candidate.get("content") or {}).get("parts") or ())
    metadata = {key: candidate[key] for key in CANDIDATE_METADATA if key in candidate}
    return Reply(
        text=text,
        thoughts=thoughts,
        finish_reason=candidate.get("finishReason"),
        function_calls=calls,
        metadata=metadata,
        **common,
    )


def _split_parts(parts: Sequence[Any]) -> tuple[str | None, str | None, tuple[FunctionCall, ...]]:
    # Thought summaries come as parts with thought=true; like the SDK's `.text`, they never enter the answer.
    # Gemini 3 may send parts holding only a thoughtSignature, hence the "text" membership test.
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[FunctionCall] = []
    for part in parts:
        if not isinstance(part, Mapping):
            raise MalformedResponse("a content part is not an object")
        if "text" in part:
            (thoughts if part.get("thought") else texts).append(part["text"])
        elif isinstance(call := part.get("functionCall"), Mapping):
            args = call.get("args")
            calls.append(FunctionCall(call.get("name"), args if isinstance(args, Mapping) else {}))
    return ("".join(texts) if texts else None, "".join(thoughts) if thoughts else None, tuple(calls))


def decode_json(body: bytes) -> Any:
    """Decode a 200 response body; a body that is not JSON is a MalformedResponse (retryable)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse(f"response body is not JSON ({len(body)} bytes)") from exc
