"""`streamGenerateContent?alt=sse`: an incremental SSE decoder, and the events folded into one response."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from batchgen.errors import (
    ApiError,
    TransportError,
)
from batchgen.gemini.errors import error_from_response
from batchgen.gemini.partial_args import StreamedCalls


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

    Text parts are concatenated (thought and answer parts separately) and function calls streamed in pieces
    (`partialArgs`) are put together; grounding, URL-context and citation metadata accumulate over the events
    (see `_accumulate`); usageMetadata is merged field by field, the latest value winning, never summed,
    because the counts are cumulative on every event.
    """
    if not events:
        raise TransportError("stream ended before any event")
    usage = _merge_usage(events)
    candidate_events = [e["candidates"][0] for e in events if e.get("candidates")]
    if not candidate_events:
        last = events[-1]
        blocked = dict(last, promptFeedback=events[0].get("promptFeedback") or last.get("promptFeedback"))
        return dict(blocked, usageMetadata=usage) if usage else blocked
    # A finishReason may come mid-stream (file search, code execution) with more parts after it: only the last
    # candidate event decides whether the stream was complete.
    if not candidate_events[-1].get("finishReason"):
        raise TransportError("stream ended before its final event")
    merged: dict[str, Any] = {"candidates": [_merge_candidate(candidate_events)]}
    for event in events:
        merged.update({k: v for k, v in event.items() if k not in ("candidates", "usageMetadata") and v is not None})
    if usage:
        merged["usageMetadata"] = usage
    return merged


def _merge_usage(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    # Field by field: Vertex sends `{"trafficType"}` alone on every event but the last, and a thought-only event
    # may leave out candidatesTokenCount.
    usage: dict[str, Any] = {}
    for event in events:
        meta = event.get("usageMetadata")
        if isinstance(meta, Mapping):
            usage.update(meta)
    return usage


# Candidate fields a stream builds up over its events rather than repeats: see `_accumulate`.
_ACCUMULATED = frozenset({"groundingMetadata", "urlContextMetadata", "citationMetadata"})


def _merge_candidate(candidate_events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    candidate: dict[str, Any] = {}
    for event in candidate_events:
        for key, value in event.items():
            if key == "content":
                continue
            if key in _ACCUMULATED and isinstance(value, Mapping):
                candidate[key] = _accumulate(candidate.get(key), value)
            else:
                candidate[key] = value
    candidate["content"] = {"role": "model", "parts": _merge_parts(candidate_events)}
    return candidate


def _accumulate(earlier: Mapping[str, Any] | None, later: Mapping[str, Any]) -> dict[str, Any]:
    """Two events' metadata objects as one: lists concatenate in arrival order, anything else the latest wins.

    Chunks must never be replaced: a 2.5-pro file-search stream sends one groundingChunk on event 2 and one on
    event 5, whose groundingSupports say chunk index 1 (tests/recorded/gemini-2.5/stream-file-search.json);
    Google numbers chunks over the whole stream. Lists of strings (search queries) skip repeats.
    """
    merged = dict(earlier or {})
    for key, value in later.items():
        before = merged.get(key)
        if isinstance(value, list) and isinstance(before, list):
            merged[key] = [*before, *(v for v in value if not (isinstance(v, str) and v in before))]
        else:
            merged[key] = value
    return merged


def _merge_parts(candidate_events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    thoughts: list[str] = []
    texts: list[str] = []
    others: list[dict[str, Any]] = []
    calls = StreamedCalls(others)
    for event in candidate_events:
        for part in (event.get("content") or {}).get("parts") or ():
            if "text" in part:
                (thoughts if part.get("thought") else texts).append(part["text"])
            elif not (isinstance(call := part.get("functionCall"), Mapping) and calls.take(call)):
                others.append(part)
    parts: list[dict[str, Any]] = []
    if thoughts:
        parts.append({"text": "".join(thoughts), "thought": True})
    if texts:
        parts.append({"text": "".join(texts)})
    return parts + others
