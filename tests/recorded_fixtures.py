"""Real Gemini API traffic recorded by other public projects, loaded for parser tests.

Each file under tests/recorded/<family>/ holds one recording: a unary GenerateContentResponse, the decoded
events of one SSE stream, a google.rpc error body, or a batch object, with where it was found (see SOURCES.md).
The bodies are kept as recorded; only API keys, project numbers and the like are replaced by REDACTED and long
thoughtSignature/base64 strings are cut to at most 200 characters (ending in TRIMMED).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

RECORDED = Path(__file__).resolve().parent / "recorded"
Kind = Literal["unary", "stream", "error", "batch"]
KINDS: tuple[Kind, ...] = ("unary", "stream", "error", "batch")
TRIMMED = "...[trimmed]"


@dataclass(frozen=True)
class Source:
    repo: str  # owner/name on GitHub
    path: str  # file in that repository, or issues/<n> / pull/<n> for a body pasted in a thread
    commit: str | None  # the stored version the body was read from, when known
    note: str
    url: str | None = None
    license: str | None = None


@dataclass(frozen=True)
class Recording:
    file: Path
    source: Source
    model: str
    kind: Kind
    http_status: int
    body: Any = None  # unary, error and batch: the decoded body (an error can be a JSON array)
    events: tuple[dict[str, Any], ...] = ()  # stream: each event's decoded JSON, in order
    raw_sse: str | None = None  # stream: the SSE text as recorded, when the recording kept it
    request: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.file.relative_to(RECORDED).as_posix()

    @property
    def family(self) -> str:
        return self.file.parent.name

    def payloads(self) -> list[Any]:
        """The body, or the stream's events."""
        return list(self.events) if self.kind == "stream" else [self.body]


def family_of(model: str) -> str:
    """gemini-2.5-flash-lite -> gemini-2.5, gemini-3.1-pro-preview -> gemini-3, gemma-4-26b-a4b-it -> gemma."""
    name = model.removeprefix("models/").removeprefix("google/")
    if name.startswith("gemma"):
        return "gemma"
    if name == "gemini-pro" or name.startswith("gemini-1.0"):
        return "gemini-1.0"
    for prefix in ("gemini-1.5", "gemini-2.0", "gemini-2.5"):
        if name.startswith(prefix):
            return prefix
    if name.startswith("gemini-3"):
        return "gemini-3"
    return "unknown"


def load(file: Path) -> Recording:
    data = json.loads(file.read_text(encoding="utf-8"))
    src = data["source"]
    return Recording(
        file=file,
        source=Source(
            repo=src["repo"],
            path=src["path"],
            commit=src.get("commit"),
            note=src["note"],
            url=src.get("url"),
            license=src.get("license"),
        ),
        model=data["model"],
        kind=data["kind"],
        http_status=data["http_status"],
        body=data.get("body"),
        events=tuple(data.get("events", ())),
        raw_sse=data.get("raw_sse"),
        request=data.get("request"),
    )


def load_all(root: Path = RECORDED) -> list[Recording]:
    return [load(file) for file in sorted(root.glob("*/*.json"))]


def sse_events(raw: str) -> list[dict[str, Any]]:
    """Decode the `data:` payload of each event in SSE text (events end at a blank line, CRLF or LF)."""
    events = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in nested dicts and lists."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield key, item
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def _candidates(payload: Any) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], payload.get("candidates") or []) if isinstance(payload, dict) else []


def features(rec: Recording) -> frozenset[str]:
    """What a recording shows, as short tags (used by SOURCES.md and the coverage test)."""
    tags: set[str] = {rec.kind}
    payloads = rec.payloads()
    keys: dict[str, list[Any]] = {}
    for payload in payloads:
        for key, value in _walk(payload):
            keys.setdefault(key, []).append(value)
    for key in (
        "thoughtSignature",
        "thoughtsTokenCount",
        "functionCall",
        "executableCode",
        "codeExecutionResult",
        "groundingMetadata",
        "webSearchQueries",
        "groundingChunks",
        "groundingSupports",
        "searchEntryPoint",
        "retrievedContext",
        "urlContextMetadata",
        "citationMetadata",
        "safetyRatings",
        "finishMessage",
        "cachedContentTokenCount",
        "cacheTokensDetails",
        "promptTokensDetails",
        "candidatesTokensDetails",
        "toolUsePromptTokensDetails",
        "serviceTier",
        "trafficType",
        "modelVersion",
        "responseId",
        "avgLogprobs",
        "partialArgs",
        "toolCall",
        "quotaValue",
    ):
        if key in keys:
            tags.add(key)
    if True in keys.get("thought", []):
        tags.add("thought-parts")
    if any(isinstance(call, dict) and "id" in call for call in keys.get("functionCall", [])):
        tags.add("functionCall.id")
    for feedback in keys.get("promptFeedback", []):
        if isinstance(feedback, dict) and "blockReason" in feedback:
            tags.add("blockReason:" + str(feedback["blockReason"]))
    for payload in payloads:
        for candidate in _candidates(payload):
            reason = candidate.get("finishReason")
            if reason and reason != "STOP":
                tags.add("finishReason:" + str(reason))
    if rec.kind == "stream":
        with_chunks = [
            i
            for i, event in enumerate(rec.events)
            for candidate in _candidates(event)
            if (candidate.get("groundingMetadata") or {}).get("groundingChunks")
        ]
        if len(set(with_chunks)) > 1:
            tags.add("groundingChunks-across-events")
        with_finish = [i for i, event in enumerate(rec.events) for c in _candidates(event) if c.get("finishReason")]
        if with_finish and with_finish[0] != len(rec.events) - 1:
            tags.add("finishReason-before-last-event")
    request = rec.request or {}
    config = request.get("generationConfig") or {}
    if config.get("responseMimeType") == "application/json":
        tags.add("json-mode")
    if rec.kind == "error":
        errors = rec.body if isinstance(rec.body, list) else [rec.body]
        for item in errors:
            error = item.get("error", {}) if isinstance(item, dict) else {}
            tags.add(f"http-{rec.http_status}:{error.get('status')}")
            for detail in error.get("details") or []:
                kind = str(detail.get("@type", "untyped")).rsplit(".", 1)[-1]
                tags.add(kind)
                if kind == "ErrorInfo":
                    tags.add("reason:" + str(detail.get("reason")))
                if len(detail.get("violations") or []) > 1:
                    tags.add("several-violations")
            if not error.get("details"):
                tags.add("no-details")
        if isinstance(rec.body, list):
            tags.add("error-in-array")
    return frozenset(tags)
