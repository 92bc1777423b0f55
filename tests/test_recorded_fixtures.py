"""The recorded Gemini responses under tests/recorded load, say where they come from, and cover what they should."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from recorded_fixtures import KINDS, RECORDED, TRIMMED, Recording, family_of, features, load_all, sse_events

RECORDINGS = load_all()
IDS = [rec.name for rec in RECORDINGS]
KEY = re.compile(r"AIza[0-9A-Za-z_\-]{35}")


def test_there_are_recordings_and_no_stray_files() -> None:
    assert len(RECORDINGS) >= 50
    stray = [p for p in RECORDED.rglob("*") if p.is_file() and p.suffix != ".json" and p.name != "SOURCES.md"]
    assert stray == []


@pytest.mark.parametrize("rec", RECORDINGS, ids=IDS)
def test_recording_has_provenance_and_its_kind_of_payload(rec: Recording) -> None:
    src = rec.source
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", src.repo), src.repo
    assert src.path and src.note
    assert src.commit is None or re.fullmatch(r"[0-9a-f]{40}", src.commit)
    assert src.commit or src.url, "a file without a commit must point at its thread"
    assert rec.family == family_of(rec.model)
    assert rec.kind in KINDS
    if rec.kind == "stream":
        assert rec.http_status == 200 and rec.body is None
        assert rec.events and all(isinstance(event, dict) for event in rec.events)
        if rec.raw_sse is not None:
            assert sse_events(rec.raw_sse) == list(rec.events)
    elif rec.kind == "error":
        assert 400 <= rec.http_status < 600 and not rec.events
        errors = rec.body if isinstance(rec.body, list) else [rec.body]
        assert all(item["error"]["code"] == rec.http_status for item in errors)
    else:
        assert rec.http_status == 200 and isinstance(rec.body, dict) and not rec.events


@pytest.mark.parametrize("rec", RECORDINGS, ids=IDS)
def test_recording_holds_no_key_and_no_long_signature(rec: Recording) -> None:
    text = rec.file.read_text(encoding="utf-8")
    assert not KEY.search(text)
    for match in re.finditer(r'"(?:thoughtSignature|data)": "([^"]*)"', text):
        assert len(match.group(1)) <= 200, match.group(1)[:40]
    assert (TRIMMED in text) == ("trimmed" in rec.source.note)


def test_no_two_recordings_are_the_same() -> None:
    seen = Counter(json.dumps(rec.payloads(), sort_keys=True) for rec in RECORDINGS)
    assert [payload[:80] for payload, n in seen.items() if n > 1] == []


def test_the_set_covers_families_and_kinds() -> None:
    answered = {rec.family for rec in RECORDINGS if rec.kind in ("unary", "stream")}
    assert len(answered - {"unknown"}) >= 4, answered
    assert {rec.kind for rec in RECORDINGS} >= {"unary", "stream", "error"}
    assert {rec.http_status for rec in RECORDINGS if rec.kind == "error"} >= {400, 403, 404, 429, 500, 503}


def test_the_set_covers_the_response_features_a_parser_must_handle() -> None:
    seen: set[str] = set().union(*(features(rec) for rec in RECORDINGS))
    wanted = {
        "json-mode",
        "thoughtsTokenCount",
        "thought-parts",
        "thoughtSignature",
        "functionCall",
        "functionCall.id",
        "webSearchQueries",
        "groundingSupports",
        "searchEntryPoint",
        "urlContextMetadata",
        "executableCode",
        "codeExecutionResult",
        "retrievedContext",
        "groundingChunks-across-events",
        "finishReason-before-last-event",
        "safetyRatings",
        "finishReason:MAX_TOKENS",
        "finishReason:SAFETY",
        "finishMessage",
        "blockReason:PROHIBITED_CONTENT",
        "promptTokensDetails",
        "candidatesTokensDetails",
        "toolUsePromptTokensDetails",
        "serviceTier",
        "trafficType",
        "QuotaFailure",
        "quotaValue",
        "RetryInfo",
        "Help",
        "ErrorInfo",
        "reason:API_KEY_INVALID",
        "error-in-array",
    }
    assert wanted - seen == set()
