"""The Gemini `generateContent` wire format: request bodies out, responses, SSE events and errors in.

Pure functions over bytes and decoded JSON; no I/O. Field names and shapes follow the v1beta REST API
(see shared/reference/gemini-api.md); the local server implements the same format independently.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchgen.errors import (
    ApiError,
    AuthError,
    MalformedResponse,
    QuotaExhausted,
    RateLimited,
    RequestRejected,
    ServerError,
    TransportError,
)
from batchgen.records import Usage

# Gemini's tokenizer averages about four characters per token on English text; the limiter corrects its
# estimate with the real promptTokenCount, so this only has to be close, not exact.
CHARS_PER_TOKEN = 4

_PROMPTED_FIELDS = ("systemInstruction", "tools", "toolConfig")
_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def user_contents(text: str, media: Sequence[Mapping[str, Any]] = ()) -> bytes:
    """The `contents` array for a single-turn prompt: media parts (inlineData / fileData) first, then the text."""
    return orjson.dumps([{"role": "user", "parts": [*media, {"text": text}]}])


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    """A job's request body serialised once; each row only splices in its `contents`.

    `request` holds every top-level field but `contents` (systemInstruction, generationConfig, tools, ...).
    """

    request: Mapping[str, Any]
    _tail: bytes = field(init=False, repr=False)
    _overhead_tokens: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rest = orjson.dumps(dict(self.request))
        # b'{...}' -> b',...}' so that render() is two concatenations, not a JSON encode per row.
        object.__setattr__(self, "_tail", b"}" if rest == b"{}" else b"," + rest[1:])
        # Only text the model reads counts as prompt: the system instruction and tool declarations. The
        # generationConfig (a response schema can be kilobytes of JSON) is not counted, as far as observed;
        # either way the limiter corrects each estimate with the real promptTokenCount.
        prompted = orjson.dumps({k: v for k, v in self.request.items() if k in _PROMPTED_FIELDS})
        object.__setattr__(self, "_overhead_tokens", len(prompted) // CHARS_PER_TOKEN)

    def render(self, contents: bytes) -> bytes:
        """The full request body for one row."""
        return b'{"contents":' + contents + self._tail

    def estimate_tokens(self, contents: bytes) -> int:
        """Input tokens this row's request is expected to cost (schema and system prompt included)."""
        return max(1, len(contents) // CHARS_PER_TOKEN + self._overhead_tokens)

    def with_generation_config(self, **fields: Any) -> RequestTemplate:
        """A copy whose generationConfig has `fields` set (used to raise maxOutputTokens on a re-ask)."""
        config = {**self.request.get("generationConfig", {}), **fields}
        return RequestTemplate({**self.request, "generationConfig": config})


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
    function_calls: tuple[Mapping[str, Any], ...] = ()
    extras: Mapping[str, Any] = field(default_factory=dict)


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


# Candidate fields kept for the results beyond text and finish reason.
_CANDIDATE_EXTRAS = (
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
    extras = {key: candidate[key] for key in _CANDIDATE_EXTRAS if key in candidate}
    return Reply(
        text=text,
        thoughts=thoughts,
        finish_reason=candidate.get("finishReason"),
        function_calls=calls,
        extras=extras,
        **common,
    )


def _split_parts(parts: Sequence[Any]) -> tuple[str | None, str | None, tuple[Mapping[str, Any], ...]]:
    # Thought summaries come as parts with thought=true; like the SDK's `.text`, they never enter the answer.
    # Gemini 3 may send parts holding only a thoughtSignature, hence the "text" membership test.
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Mapping[str, Any]] = []
    for part in parts:
        if not isinstance(part, Mapping):
            raise MalformedResponse("a content part is not an object")
        if "text" in part:
            (thoughts if part.get("thought") else texts).append(part["text"])
        elif "functionCall" in part:
            calls.append(part["functionCall"])
    return ("".join(texts) if texts else None, "".join(thoughts) if thoughts else None, tuple(calls))


def decode_json(body: bytes) -> Any:
    """Decode a 200 response body; a body that is not JSON is a MalformedResponse (retryable)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse(f"response body is not JSON ({len(body)} bytes)") from exc


def error_from_response(http_status: int, body: bytes, retry_after_header: str | None = None) -> ApiError:
    """Map an HTTP error answer (google.rpc `{"error": ...}` body) to the error the caller must act on."""
    error = _error_object(body)
    message = str(error.get("message") or f"HTTP {http_status}")
    status = error.get("status")
    raw_details = error.get("details")
    details: list[Any] = raw_details if isinstance(raw_details, list) else []
    reason = _detail(details, "ErrorInfo").get("reason")
    context: dict[str, Any] = {"http_status": http_status, "status": status, "reason": reason}
    if http_status in (401, 403) or reason == "API_KEY_INVALID":
        return AuthError(message, **context)
    if http_status == 429:
        quota_id = _quota_id(details)
        if quota_id and "PerDay" in quota_id:
            return QuotaExhausted(message, quota_id=quota_id, **context)
        delay = _retry_delay(details)
        if delay is None:
            delay = parse_retry_after(retry_after_header)
        return RateLimited(message, quota_id=quota_id, retry_after=delay, **context)
    if http_status in _RETRYABLE_STATUSES:
        return ServerError(message, retry_after=parse_retry_after(retry_after_header), **context)
    return RequestRejected(message, **context)


def _error_object(body: bytes) -> Mapping[str, Any]:
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"message": body[:200].decode("utf-8", "replace").strip() or None}
    if isinstance(decoded, list) and decoded:  # some proxies wrap the error in a one-element array
        decoded = decoded[0]
    error = decoded.get("error") if isinstance(decoded, Mapping) else None
    return error if isinstance(error, Mapping) else {}


def _detail(details: Sequence[Any], kind: str) -> Mapping[str, Any]:
    for detail in details:
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith(f"google.rpc.{kind}"):
            return detail
    return {}


def _quota_id(details: Sequence[Any]) -> str | None:
    violations = _detail(details, "QuotaFailure").get("violations") or []
    for violation in violations:
        if isinstance(violation, Mapping) and violation.get("quotaId"):
            return str(violation["quotaId"])
    return None


def _retry_delay(details: Sequence[Any]) -> float | None:
    delay = _detail(details, "RetryInfo").get("retryDelay")
    match = _DURATION.match(delay) if isinstance(delay, str) else None
    return float(match.group(1)) if match else None


def parse_retry_after(value: str | None) -> float | None:
    """A `Retry-After` header (delta seconds or HTTP date) in seconds; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class SseDecoder:
    """Incremental decoder for `streamGenerateContent?alt=sse` bodies.

    Feed it raw chunks as they arrive; it yields each event's decoded JSON. Handles CRLF, multi-line `data:`
    fields (joined by newlines, per the SSE spec), comments, and the google.rpc error object the API writes
    mid-stream without a `data:` prefix (possibly over several lines).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._bare: list[bytes] = []

    def feed(self, chunk: bytes) -> Iterator[Any]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            yield from self._line(raw.rstrip(b"\r"))

    def close(self) -> Iterator[Any]:
        """Flush at end of body; an event without its terminating blank line still counts if complete."""
        if self._buffer:
            yield from self._line(self._buffer.rstrip(b"\r"))
            self._buffer = b""
        yield from self._line(b"")

    def _line(self, line: bytes) -> Iterator[Any]:
        if not line:
            if self._data:
                payload, self._data = b"\n".join(self._data), []
                yield _decode_event(payload)
            return
        if self._bare or line.startswith(b"{"):
            self._bare.append(line)
            joined = b"\n".join(self._bare)
            try:
                error = orjson.loads(joined)
            except orjson.JSONDecodeError:
                return  # the object continues on the next line
            self._bare = []
            raise _stream_error(error)
        if line.startswith(b":"):
            return
        name, _, value = line.partition(b":")
        if name == b"data":
            self._data.append(value[1:] if value.startswith(b" ") else value)


def _decode_event(payload: bytes) -> Any:
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise TransportError("stream event is not JSON (cut mid-event?)") from exc
    if isinstance(event, Mapping) and "error" in event:
        raise _stream_error(event)
    return event


def _stream_error(error: Any) -> ApiError:
    code = error.get("error", {}).get("code") if isinstance(error, Mapping) else None
    return error_from_response(code if isinstance(code, int) else 500, orjson.dumps(error))


def merge_stream(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fold SSE events into one response equal to what the unary call would have returned.

    Text parts are concatenated (thought and answer parts separately); usageMetadata is taken from the last
    event that has one, never summed, because 2.5 models report cumulative counts on every chunk.
    """
    if not events:
        raise TransportError("stream ended before any event")
    last = events[-1]
    candidate_events = [e["candidates"][0] for e in events if e.get("candidates")]
    if not candidate_events:
        return dict(last, promptFeedback=events[0].get("promptFeedback") or last.get("promptFeedback"))
    final = candidate_events[-1]
    if not final.get("finishReason"):
        raise TransportError("stream ended before its final event")
    candidate: dict[str, Any] = {}
    for event in candidate_events:
        candidate.update({k: v for k, v in event.items() if k != "content"})
    candidate["content"] = {"role": "model", "parts": _merge_parts(candidate_events)}
    merged: dict[str, Any] = {"candidates": [candidate]}
    for event in events:
        merged.update({k: v for k, v in event.items() if k != "candidates" and v is not None})
    return merged


def _merge_parts(candidate_events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    thoughts: list[str] = []
    texts: list[str] = []
    others: list[dict[str, Any]] = []
    for event in candidate_events:
        for part in (event.get("content") or {}).get("parts") or ():
            if "text" in part:
                (thoughts if part.get("thought") else texts).append(part["text"])
            else:
                others.append(part)
    parts: list[dict[str, Any]] = []
    if thoughts:
        parts.append({"text": "".join(thoughts), "thought": True})
    if texts:
        parts.append({"text": "".join(texts)})
    return parts + others
