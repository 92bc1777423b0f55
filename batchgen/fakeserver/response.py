"""GenerateContentResponse bodies: one object for a unary call, a list of events for a stream.

Streams follow what the API is seen to send (reference note, section 6): the answer text is split over
several events, the first event carries promptFeedback and a usage of prompt tokens only, middle events carry
the cumulative candidatesTokenCount as 2.5 models do, and the last event carries finishReason, the candidate
metadata and the full final usage.
"""

from __future__ import annotations

from typing import Any

from batchgen.fakeserver.content import Answer, Outcome
from batchgen.fakeserver.tokens import count_text

_CATEGORIES = (
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
)
_SAFE = [{"category": c, "probability": "NEGLIGIBLE"} for c in _CATEGORIES]
_UNSAFE = [
    {"category": c, "probability": "HIGH", "blocked": True}
    if c == "HARM_CATEGORY_DANGEROUS_CONTENT"
    else {"category": c, "probability": "NEGLIGIBLE"}
    for c in _CATEGORIES
]
# Streams split an answer into about this many text events.
_STREAM_PIECES = 4
_MIN_PIECE = 16


def unary_body(outcome: Outcome, model: str, response_id: str) -> dict[str, Any]:
    """The generateContent answer."""
    body: dict[str, Any] = {}
    if outcome.blocked:
        body["promptFeedback"] = {"blockReason": "SAFETY", "safetyRatings": _UNSAFE}
    else:
        body["candidates"] = [
            _candidate(answer, index, _parts(answer, outcome.signature), final=True, unary=True)
            for index, answer in enumerate(outcome.answers)
        ]
    body["usageMetadata"] = outcome.usage.to_json()
    body["modelVersion"] = model
    body["responseId"] = response_id
    return body


def no_candidates_body(model: str, response_id: str) -> dict[str, Any]:
    """A 200 body that is JSON but not a usable response: no candidates, no usage."""
    return {"modelVersion": model, "responseId": response_id}


def _parts(answer: Answer, signature: str | None) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": answer.thought, "thought": True}] if answer.thought else []
    if answer.function_call is not None:
        parts.append({"functionCall": answer.function_call})
    elif answer.text:
        parts.append({"text": answer.text})
    if signature is not None and len(parts) > bool(answer.thought):
        parts[-1]["thoughtSignature"] = signature
    return parts


def _candidate(
    answer: Answer, index: int, parts: list[dict[str, Any]], *, final: bool, unary: bool = False
) -> dict[str, Any]:
    candidate: dict[str, Any] = {}
    if parts:
        candidate["content"] = {"parts": parts, "role": "model"}
    elif final and answer.finish_reason != "SAFETY":
        # An empty answer (e.g. all tokens spent thinking) still has a content with a role and no parts.
        candidate["content"] = {"role": "model"}
    if final:
        candidate["finishReason"] = answer.finish_reason
        if answer.function_call is not None:
            candidate["finishMessage"] = "Model generated function call(s)."  # as 2.5-flash-lite and 3-pro say
        candidate["safetyRatings"] = _UNSAFE if answer.finish_reason == "SAFETY" else _SAFE
        if answer.citations is not None:
            candidate["citationMetadata"] = answer.citations
        if answer.grounding is not None:
            candidate["groundingMetadata"] = answer.grounding
        if unary:
            candidate["avgLogprobs"] = answer.avg_logprobs
    candidate["index"] = index
    return candidate


def _pieces(text: str) -> list[str]:
    """The text in about four pieces, cut after a space where there is one."""
    size = max(_MIN_PIECE, len(text) // _STREAM_PIECES)
    pieces = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            space = text.rfind(" ", start + 1, end)
            end = space + 1 if space > start else end
        pieces.append(text[start:end])
        start = end
    return pieces


def _chunks(answer: Answer, signature: str | None) -> list[list[dict[str, Any]]]:
    """The parts each event carries for one candidate: thoughts first, then the answer in pieces."""
    chunks: list[list[dict[str, Any]]] = [[{"text": answer.thought, "thought": True}]] if answer.thought else []
    if answer.function_call is not None:
        chunks.append([{"functionCall": answer.function_call}])
    else:
        chunks += [[{"text": piece}] for piece in _pieces(answer.text)]
    if signature is not None and chunks and "thought" not in chunks[-1][-1]:
        chunks[-1][-1]["thoughtSignature"] = signature
    return chunks


def stream_events(outcome: Outcome, model: str, response_id: str) -> list[dict[str, Any]]:
    """The streamGenerateContent events, in order."""
    if outcome.blocked:
        return [unary_body(outcome, model, response_id)]
    per_answer = [_chunks(answer, outcome.signature) for answer in outcome.answers]
    count = max(1, *(len(chunks) for chunks in per_answer))
    # What each candidate has sent so far, to report a cumulative (never overshooting) candidatesTokenCount.
    sent = [""] * len(per_answer)
    calls = 0
    events = []
    for number in range(count):
        final = number == count - 1
        candidates = []
        for index, (answer, chunks) in enumerate(zip(outcome.answers, per_answer, strict=True)):
            parts = chunks[number] if number < len(chunks) else []
            for part in parts:
                if "functionCall" in part:
                    calls += answer.tokens
                elif not part.get("thought"):
                    sent[index] += part["text"]
            if parts or final:
                candidates.append(_candidate(answer, index, parts, final=final))
        event: dict[str, Any] = {"candidates": candidates}
        if number == 0:
            event["promptFeedback"] = {"safetyRatings": _SAFE}
        usage = outcome.usage
        event["usageMetadata"] = (
            usage.to_json()
            if final
            else usage.partial_json(None if number == 0 else calls + sum(map(count_text, sent)))
        )
        event["modelVersion"] = model
        event["responseId"] = response_id
        events.append(event)
    return events
