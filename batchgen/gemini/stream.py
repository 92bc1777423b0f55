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
