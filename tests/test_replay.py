"""batchgen against real recorded Gemini traffic: every recording in tests/recorded (68 real responses from public
projects, see SOURCES.md) is replayed over loopback HTTP (`replay.ReplayServer`) through batchgen's real client,
runner and pipeline into a results folder, and every column of its row is checked against what the recorded body
says.

The expected values are this module's own reading of the recorded JSON (`Expected.of`), written from the API
reference and the recorded facts, not batchgen's parser: a misreading must show up as a disagreement. Answered
recordings run as two jobs (all unary ones, all streams); each error recording runs as a one-row job of its own,
since a fatal answer stops its run. The batch-object recording is not a generateContent answer and is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from recorded_fixtures import RECORDED, Recording, Source, load_all
from replay import ReplayServer

from batchgen.errors import ApiError, ExitCode, JobRejected
from batchgen.job import job_from_dict
from batchgen.pipeline import RunOptions, RunSummary, execute
from batchgen.results.columns import CONTRACT
from batchgen.results.read import read_results
from batchgen.secret import ApiKey

RECORDINGS = {rec.name: rec for rec in load_all() if rec.kind != "batch"}
UNARY = sorted(name for name, rec in RECORDINGS.items() if rec.kind == "unary")
STREAMS = sorted(name for name, rec in RECORDINGS.items() if rec.kind == "stream")
ERRORS = sorted(name for name, rec in RECORDINGS.items() if rec.kind == "error")
TOOLS = [
    {"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {}}}]},
    {"googleSearch": {}},
    {"urlContext": {}},
    {"codeExecution": {}},
]
# The key every replayed run sends: the one the recorded DebugInfo detail echoes ("Invalid API key: <key>"), so
# that a run which let the echo through would write it.
KEY = "INVALID_KEY_BLAH"


# --- running every recording ---------------------------------------------------------------------------------


@dataclass
class Replayed:
    """What the replay runs produced: each recording's results row (if written), the summary of the run it was
    in, the requests the server saw for it, and the folders written."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    summaries: dict[str, RunSummary] = field(default_factory=dict)
    runs: list[tuple[RunSummary, list[str]]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    folders: list[Path] = field(default_factory=list)


async def _run(server: ReplayServer, folder: Path, names: list[str], *, stream: bool) -> RunSummary:
    folder.mkdir()
    rows = folder / "in.jsonl"
    rows.write_bytes(b"".join(orjson.dumps({"id": name, "prompt": name}) + b"\n" for name in names))
    job = job_from_dict(
        {
            "model": "gemini-2.5-flash",
            "base_url": server.url,
            # Every tool, so that the job has every feature column (the replay server ignores the request).
            "request": {"stream": stream, "tools": TOOLS},
            "input": {"path": str(rows), "id_field": "id", "prompt_field": "prompt"},
            "output": {"path": str(folder / "out")},
            # One attempt: a recorded 429 or 503 would be answered the same way again, after a backoff.
            "limits": {"max_attempts": 1, "concurrency": 8},
        }
    )
    return await execute(job, ApiKey(KEY), RunOptions())


async def _replay_all(tmp: Path) -> Replayed:
    replayed = Replayed()
    runs = [("unary", UNARY, False), ("stream", STREAMS, True)]
    runs += [(f"error-{number}", [name], False) for number, name in enumerate(ERRORS)]
    async with ReplayServer(RECORDINGS) as server:

        async def run(label: str, names: list[str], stream: bool) -> None:
            summary = await _run(server, tmp / label, names, stream=stream)
            replayed.summaries.update(dict.fromkeys(names, summary))
            replayed.runs.append((summary, names))

        async with anyio.create_task_group() as group:
            for label, names, stream in runs:
                group.start_soon(run, label, names, stream)
    replayed.seen = dict(server.seen)
    for label, _, _ in runs:
        out = tmp / label / "out"
        replayed.folders.append(out)
        if any(out.glob("part-*.parquet")):
            replayed.rows.update((row["id"], row) for row in read_results([out]).to_pylist())
    return replayed


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    """Every recording replayed once, for all the tests of this module."""
    return anyio.run(_replay_all, tmp_path_factory.mktemp("replay"))


# --- what a recorded body says ----------------------------------------------------------------------------------

# finishReasons that mean a filter withheld the output (docs/results.md: `blocked`).
_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
_FILTERED |= {"IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"}
_COUNTS = {
    "prompt_token_count": "promptTokenCount",
    "candidates_token_count": "candidatesTokenCount",
    "thoughts_token_count": "thoughtsTokenCount",
    "cached_content_token_count": "cachedContentTokenCount",
    "tool_use_prompt_token_count": "toolUsePromptTokenCount",
    "total_token_count": "totalTokenCount",
}
_DETAILS = {
    "prompt_tokens_details": "promptTokensDetails",
    "candidates_tokens_details": "candidatesTokensDetails",
    "cache_tokens_details": "cacheTokensDetails",
    "tool_use_prompt_tokens_details": "toolUsePromptTokensDetails",
}
_TOOL_KINDS = ("executableCode", "codeExecutionResult", "toolCall", "toolResponse")


def _first_candidate(payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    candidates = payload.get("candidates") or []
    return candidates[0] if candidates else None


def _path(json_path: str) -> list[str | int]:
    """`$.operations[1].price` -> ["operations", 1, "price"]."""
    return [int(token[1:-1]) if token.startswith("[") else token for token in re.findall(r"\[\d+\]|\w+", json_path)]


def _put(node: Any, steps: list[str | int], value: Any) -> None:
    """Set `value` at `steps` in nested dicts and lists, making the containers on the way (lists grow)."""
    for number, step in enumerate(steps):
        if isinstance(step, int):
            node.extend([None] * (step + 1 - len(node)))
        if number == len(steps) - 1:
            node[step] = value
        else:
            if (node[step] if isinstance(step, int) else node.get(step)) is None:
                node[step] = [] if isinstance(steps[number + 1], int) else {}
            node = node[step]


def _arguments(call: Mapping[str, Any], pieces: list[Mapping[str, Any]]) -> dict[str, Any]:
    """A call's arguments: `args` as sent, or the `partialArgs` pieces streamed after it (strings in parts)."""
    args: dict[str, Any] = dict(call.get("args") or {})
    values: dict[str, Any] = {}
    for piece in pieces:
        path = piece["jsonPath"]
        if "stringValue" in piece:
            values[path] = values.get(path, "") + piece["stringValue"]
        else:
            values[path] = piece.get("numberValue", piece.get("boolValue"))
    for path, value in values.items():
        _put(args, _path(path), value)
    return args


@dataclass
class Expected:
    """The columns one recorded answer should give, read from its body (or its events, in order)."""

    row: dict[str, Any]
    chunks: list[Mapping[str, Any]]
    supports: list[Mapping[str, Any]]
    calls: list[tuple[str | None, dict[str, Any], str | None]]
    tool_parts: list[Mapping[str, Any]]

    @classmethod
    def of(cls, rec: Recording) -> Expected:
        payloads = rec.payloads()
        usage: dict[str, Any] = {}
        top: dict[str, Any] = {}
        candidate: dict[str, Any] = {}
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[tuple[Mapping[str, Any], list[Mapping[str, Any]]]] = []
        tools: list[Mapping[str, Any]] = []
        chunks: list[Mapping[str, Any]] = []
        supports: list[Mapping[str, Any]] = []
        queries: list[str] = []
        urls: list[Mapping[str, Any]] | None = None
        for payload in payloads:
            usage.update(payload.get("usageMetadata") or {})  # cumulative: the latest value of each field
            top.update({k: v for k, v in payload.items() if k in ("modelVersion", "responseId", "promptFeedback")})
            first = _first_candidate(payload)
            if first is None:
                continue
            candidate.update({k: v for k, v in first.items() if k not in ("content", "groundingMetadata")})
            grounding = first.get("groundingMetadata") or {}
            chunks += grounding.get("groundingChunks", [])  # numbered over the whole stream
            supports += grounding.get("groundingSupports", [])
            queries += [q for q in grounding.get("webSearchQueries", []) if q not in queries]
            if "searchEntryPoint" in grounding:
                candidate["entry_point"] = grounding["searchEntryPoint"].get("renderedContent")
            if "retrievalMetadata" in grounding:
                candidate["score"] = grounding["retrievalMetadata"].get("googleSearchDynamicRetrievalScore")
            if "urlContextMetadata" in first:
                urls = (urls or []) + first["urlContextMetadata"].get("urlMetadata", [])
            for part in (first.get("content") or {}).get("parts") or []:
                if "text" in part:
                    (thoughts if part.get("thought") else texts).append(part["text"])
                elif "functionCall" in part:
                    call = part["functionCall"]
                    if "name" in call:  # a call; `partialArgs` pieces belong to the last one named
                        calls.append((call, []))
                    calls[-1][1].extend(call.get("partialArgs", []))
                elif any(kind in part for kind in _TOOL_KINDS):
                    tools.append(part)
        feedback = top.get("promptFeedback") or {}
        text = "".join(texts) if texts else None
        finish = candidate.get("finishReason")
        if feedback.get("blockReason") or finish in _FILTERED:
            status = "blocked"
        elif finish == "MAX_TOKENS":
            status = "truncated"  # text mode: a cut answer is never ok
        elif not text and not calls:
            status = "failed"
        else:
            status = "ok"
        ratings = candidate.get("safetyRatings") if candidate else feedback.get("safetyRatings")
        row: dict[str, Any] = {
            "id": rec.name,
            "status": status,
            "text": text,
            "thoughts": "".join(thoughts) if thoughts else None,
            "output_json": None,
            "finish_reason": finish,
            "finish_message": candidate.get("finishMessage"),
            "block_reason": feedback.get("blockReason"),
            "block_reason_message": feedback.get("blockReasonMessage"),
            "model": "gemini-2.5-flash",
            "model_version": top.get("modelVersion"),
            "response_id": top.get("responseId"),
            "service_tier": usage.get("serviceTier"),
            "traffic_type": usage.get("trafficType"),
            "traffic": "standard",  # an online call at the default tier
            "attempts": 1,
            "responses": 1,
            "reasks": 0,
            "http_status": None,
            "error_details": None,
            "avg_logprobs": candidate.get("avgLogprobs"),
            "grounding_queries": queries or None,
            "grounding_entry_point": candidate.get("entry_point"),
            "grounding_retrieval_score": candidate.get("score"),
            "url_context": None
            if urls is None
            else [{"url": u.get("retrievedUrl"), "status": u.get("urlRetrievalStatus")} for u in urls],
            "safety_ratings": None
            if ratings is None
            else [
                {"category": r["category"], "probability": r["probability"], "blocked": r.get("blocked")}
                for r in ratings
            ],
            "citations": None,  # no recorded response carries citationMetadata (recorded-facts: "Not found")
        }
        for column, name in _COUNTS.items():
            row[column] = usage.get(name, 0) if usage else None  # absent from usageMetadata: 0 (proto3)
        for column, name in _DETAILS.items():
            details = usage.get(name)
            row[column] = (
                None
                if details is None
                else [{"modality": d["modality"], "token_count": d["tokenCount"]} for d in details]
            )
        expected_calls = [(call.get("name"), _arguments(call, pieces), call.get("id")) for call, pieces in calls]
        return cls(row, chunks, supports, expected_calls, tools)


# --- the checks ---------------------------------------------------------------------------------------------------


def test_the_replay_covers_four_model_families_unary_streamed_and_failed(replayed: Replayed) -> None:
    """The issue's bar: unary and streamed recordings from at least four model families, and errors."""
    families: dict[str, set[str]] = {}
    for rec in RECORDINGS.values():
        families.setdefault(rec.family, set()).add(rec.kind)
    both = {family for family, kinds in families.items() if {"unary", "stream"} <= kinds}
    answered = {family for family, kinds in families.items() if kinds & {"unary", "stream"}} - {"unknown"}
    assert len(answered) >= 4 and len(both) >= 2, families
    assert {RECORDINGS[name].http_status for name in ERRORS} >= {400, 403, 404, 429, 500, 503}
    assert set(replayed.seen) == set(RECORDINGS), "every recording was asked for"
    assert set(CONTRACT.names) <= set(replayed.rows[UNARY[0]]), "the jobs have every column of the contract"


@pytest.mark.parametrize("name", UNARY + STREAMS)
def test_every_column_of_a_replayed_answer_is_what_the_recorded_body_says(replayed: Replayed, name: str) -> None:
    expected = Expected.of(RECORDINGS[name])
    row = replayed.rows[name]
    assert {column: row[column] for column in expected.row} == expected.row
    assert row["error"] is None if expected.row["status"] == "ok" else row["error"]
    assert row["row_index"] == (UNARY if name in UNARY else STREAMS).index(name)
    assert row["latency_ms"] is not None and row["finished_at"] is not None
    assert row["run_id"] == replayed.summaries[name].run_id
    _check_calls(row, expected)
    _check_tool_parts(row, expected)
    _check_grounding(row, expected)
    checked = {*expected.row, *_SEPARATELY}
    assert set(row) <= checked, "every results column is checked"


# Columns the test above checks on their own rather than through `Expected.row`.
_SEPARATELY = {"error", "row_index", "latency_ms", "finished_at", "run_id", "function_calls", "tool_parts"}
_SEPARATELY |= {"grounding_chunks", "grounding_supports"}


def _check_calls(row: Mapping[str, Any], expected: Expected) -> None:
    calls = row["function_calls"] or []
    got = [(call["name"], orjson.loads(call["args_json"]), call["id"]) for call in calls]
    assert got == expected.calls


def _check_tool_parts(row: Mapping[str, Any], expected: Expected) -> None:
    wanted = []
    for part in expected.tool_parts:
        kind = next(k for k in _TOOL_KINDS if k in part)
        body = part[kind]
        wanted.append(
            {
                "kind": kind,
                "thought": bool(part.get("thought")),
                "id": body.get("id"),
                "tool_type": body.get("toolType"),
                "language": body.get("language"),
                "code": body.get("code"),
                "outcome": body.get("outcome"),
                "output": body.get("output"),
                "args_json": None if "args" not in body else orjson.dumps(body["args"]).decode(),
                "response_json": None if "response" not in body else orjson.dumps(body["response"]).decode(),
            }
        )
    assert (row["tool_parts"] or []) == wanted


def _check_grounding(row: Mapping[str, Any], expected: Expected) -> None:
    chunks = row["grounding_chunks"] or []
    wanted = []
    for chunk in expected.chunks:
        kind, source = next(iter(chunk.items()))
        custom = source.get("customMetadata")
        wanted.append(
            {
                "kind": kind,
                "uri": source.get("uri"),
                "title": source.get("title"),
                "text": source.get("text"),
                "file_search_store": source.get("fileSearchStore"),
                "custom_metadata": None if custom is None else [(m["key"], m.get("stringValue")) for m in custom],
            }
        )
    got = [
        {
            **{key: chunk[key] for key in ("kind", "uri", "title", "text", "file_search_store")},
            "custom_metadata": None
            if chunk["custom_metadata"] is None
            else [(m["key"], m["string_value"]) for m in chunk["custom_metadata"]],
        }
        for chunk in chunks
    ]
    assert got == wanted
    supports = [
        (s["start_index"], s["end_index"], s["text"], s["chunk_indices"]) for s in row["grounding_supports"] or []
    ]
    assert supports == [
        (s["segment"].get("startIndex", 0), s["segment"]["endIndex"], s["segment"]["text"], s["groundingChunkIndices"])
        for s in expected.supports
    ]
    # Every source a support points at is in the row (what the stream merge used to lose).
    assert all(0 <= index < len(chunks) for _, _, _, indices in supports for index in indices)


def _error_of(rec: Recording) -> Mapping[str, Any]:
    body = rec.body[0] if isinstance(rec.body, list) else rec.body
    error: Mapping[str, Any] = body["error"]
    return error


def _stops_the_run(rec: Recording) -> bool:
    """What the results contract says ends a job rather than a row: a refused key (401, 403, 400 with reason
    API_KEY_INVALID) or a spent daily quota; the row that met it is not written (the next run sends it)."""
    error = _error_of(rec)
    details = error.get("details") or []
    reasons = {d.get("reason") for d in details}
    quotas = {v.get("quotaId", "") for d in details for v in d.get("violations", [])}
    return rec.http_status in (401, 403) or "API_KEY_INVALID" in reasons or any("PerDay" in q for q in quotas)


@pytest.mark.parametrize("name", ERRORS)
def test_a_replayed_error_fails_its_row_or_stops_its_run_as_the_recorded_body_says(
    replayed: Replayed, name: str
) -> None:
    rec = RECORDINGS[name]
    error = _error_of(rec)
    summary = replayed.summaries[name]
    assert summary.stats.attempts == replayed.seen[name] == 1
    if _stops_the_run(rec):
        assert name not in replayed.rows
        assert summary.exit_code is ExitCode.FATAL and summary.stopped_by is not None
        assert isinstance(summary.stopped_by, ApiError) and summary.stopped_by.http_status == rec.http_status
        return
    row = replayed.rows[name]
    assert (row["status"], row["http_status"], row["attempts"], row["responses"]) == ("failed", rec.http_status, 1, 0)
    assert error["message"].strip() in row["error"]
    details = error.get("details")
    assert (None if row["error_details"] is None else orjson.loads(row["error_details"])) == (details or None)
    assert row["text"] is None and row["prompt_token_count"] is None and row["service_tier"] is None
    if rec.http_status == 404:  # an unknown model: no other row would fare better
        assert isinstance(summary.stopped_by, JobRejected)


def test_the_run_summaries_count_the_requests_the_server_saw(replayed: Replayed) -> None:
    """On every path a run ended by (finished, a fatal answer, a rejected job), its attempts are the requests
    the server saw for it."""
    assert len(replayed.runs) == 2 + len(ERRORS)
    for summary, names in replayed.runs:
        assert summary.stats.attempts == sum(replayed.seen[name] for name in names), names


def _files(folders: list[Path]) -> Iterator[Path]:
    for folder in folders:
        yield from (path for path in folder.rglob("*") if path.is_file())


def test_a_key_echoed_by_an_error_body_is_written_nowhere(replayed: Replayed) -> None:
    """The recorded DebugInfo detail says "Invalid API key: <the key sent>": the error the run stopped on
    keeps the detail with the key redacted, and no results part or manifest holds the key."""
    stopped = replayed.summaries["unknown/error-400-api-key-invalid-debug-info.json"].stopped_by
    assert isinstance(stopped, ApiError) and stopped.details is not None
    assert KEY not in str(stopped) and KEY not in stopped.details
    assert "Invalid API key: ***" in stopped.details
    assert not [path for path in _files(replayed.folders) if KEY.encode() in path.read_bytes()]


# Not a recording: no recorded 401 from the Gemini API was found (it answers a bad key with 400
# API_KEY_INVALID); this is the google.rpc body Google APIs send for a missing or expired OAuth token.
UNAUTHENTICATED = Recording(
    file=RECORDED / "synthetic" / "error-401-unauthenticated.json",
    source=Source(repo="synthetic/none", path="-", commit=None, note="written for this test, not recorded"),
    model="gemini-2.5-flash",
    kind="error",
    http_status=401,
    body={
        "error": {
            "code": 401,
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
            "cookie or other valid authentication credential.",
            "status": "UNAUTHENTICATED",
        }
    },
)


@pytest.mark.anyio
async def test_a_401_stops_the_run_and_counts_its_one_request(tmp_path: Path) -> None:
    """A refused token (as with `auth = "bearer"`) stops the run at the first answer, which is counted."""
    name = UNAUTHENTICATED.name
    async with ReplayServer({name: UNAUTHENTICATED}) as server:
        summary = await _run(server, tmp_path / "run", [name, "another row"], stream=False)
    assert summary.exit_code is ExitCode.FATAL
    assert isinstance(summary.stopped_by, ApiError) and summary.stopped_by.http_status == 401
    assert summary.stats.attempts == sum(server.seen.values()) == 1
