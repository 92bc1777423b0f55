"""Injected faults of the fake server over real HTTP: every prompt directive, the `*K` attempt counting, the
seeded random faults, and how the ledger counts and bills them."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest

from batchgen.fakeserver import FakeServer, ServerConfig

KEY = "fault-key"
SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "mood": {"enum": ["calm", "wild"]},
    },
    "required": ["title", "rating", "mood"],
}
JSON_CONFIG = {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA}
_DURATION = re.compile(r"^(\d+(\.\d+)?)s$")


@pytest.fixture
def server_config() -> ServerConfig:
    return ServerConfig(api_key=KEY, retry_delay_s=1.5, slow_s=0.2)


def payload(text: str, config: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if config:
        body["generationConfig"] = config
    return orjson.dumps(body)


def url(server: FakeServer, method: str = "generateContent", query: str = "") -> str:
    return f"{server.url}/v1beta/models/gemini-2.5-flash:{method}{query}"


async def call(
    session: aiohttp.ClientSession, server: FakeServer, text: str, config: dict[str, Any] | None = None
) -> tuple[int, str, bytes]:
    """(status, content type, raw body) of one generateContent call."""
    async with session.post(url(server), data=payload(text, config), headers={"x-goog-api-key": KEY}) as response:
        return response.status, response.content_type, await response.read()


def details_by_type(body: bytes) -> dict[str, dict[str, Any]]:
    error = orjson.loads(body)["error"]
    return {d["@type"].rsplit(".", 1)[1]: d for d in error.get("details", [])}


# --- error directives -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_429_directive_is_transient_with_retry_info(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """[[fake:429]]: RESOURCE_EXHAUSTED with Help and RetryInfo (the configured delay), no QuotaFailure."""
    status, _, body = await call(session, server, "hello [[fake:429]]")
    assert status == 429
    assert orjson.loads(body)["error"]["status"] == "RESOURCE_EXHAUSTED"
    details = details_by_type(body)
    assert set(details) == {"Help", "RetryInfo"}
    assert details["RetryInfo"]["retryDelay"] == "1.5s"


@pytest.mark.anyio
async def test_429help_directive_has_only_help(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """[[fake:429help]]: a 429 whose only detail is a Help link."""
    status, _, body = await call(session, server, "hello [[fake:429help]]")
    assert status == 429
    assert set(details_by_type(body)) == {"Help"}


@pytest.mark.anyio
async def test_429day_directive_names_the_daily_quota(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """[[fake:429day]]: QuotaFailure GenerateRequestsPerDayPerProjectPerModel and a RetryInfo up to a day."""
    status, _, body = await call(session, server, "hello [[fake:429day]]")
    assert status == 429
    details = details_by_type(body)
    violation = details["QuotaFailure"]["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel"
    assert violation["quotaDimensions"] == {"location": "global", "model": "gemini-2.5-flash"}
    delay = _DURATION.match(details["RetryInfo"]["retryDelay"])
    assert delay and 0 < float(delay.group(1)) <= 25 * 3600
    assert server.stats.quota_rejections == {}
    assert server.stats.faults == {"429day": 1}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "code", "status"),
    [pytest.param("500", 500, "INTERNAL", id="500"), pytest.param("503", 503, "UNAVAILABLE", id="503")],
)
async def test_server_error_directives(
    server: FakeServer, session: aiohttp.ClientSession, name: str, code: int, status: str
) -> None:
    """[[fake:500]] and [[fake:503]] answer with those google.rpc errors."""
    got, _, body = await call(session, server, f"hello [[fake:{name}]]")
    assert got == code
    assert orjson.loads(body)["error"] == {
        "code": code,
        "message": orjson.loads(body)["error"]["message"],
        "status": status,
    }


@pytest.mark.anyio
async def test_drop_directive_closes_without_answer(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """[[fake:drop]]: the connection closes with no response at all."""
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(session, server, "hello [[fake:drop]]")
    assert server.stats.responses_by_status == {}
    assert server.stats.faults == {"drop": 1}


@pytest.mark.anyio
async def test_slow_directive_outlasts_a_short_timeout_and_bills_nothing(
    session: aiohttp.ClientSession,
) -> None:
    """[[fake:slow]]: a client with a shorter timeout gives up; the server then sends and bills nothing
    (its stall is cut short by the hang-up, so this test does not wait for it)."""
    async with FakeServer(ServerConfig(api_key=KEY, slow_s=30.0)) as server:
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(
                url(server),
                data=payload("hi [[fake:slow]]"),
                headers={"x-goog-api-key": KEY},
                timeout=aiohttp.ClientTimeout(total=0.5),
            ) as response:
                await response.read()
        for _ in range(100):  # the server learns of the hang-up when the socket closes
            if server.stats.disconnects:
                break
            await asyncio.sleep(0.01)
        stats = server.stats
    assert (stats.requests, stats.faults, stats.disconnects) == (1, {"slow": 1}, 1)
    assert stats.responses_by_status == {}
    assert stats.billed_responses == 0


@pytest.mark.anyio
async def test_slow_directive_answers_a_patient_client(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """A client that waits past the stall gets a normal, billed answer."""
    status, _, body = await call(session, server, "hi [[fake:slow]]")
    assert status == 200
    assert orjson.loads(body)["candidates"]
    assert server.stats.billed_responses == 1


@pytest.mark.anyio
async def test_nonjson_directive_is_200_html(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """[[fake:nonjson]]: HTTP 200 whose body is HTML, not JSON."""
    status, content_type, body = await call(session, server, "hi [[fake:nonjson]]")
    assert (status, content_type) == (200, "text/html")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)


@pytest.mark.anyio
async def test_nocandidates_directive_is_200_without_candidates(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    """[[fake:nocandidates]]: HTTP 200 JSON with neither candidates nor usage (so nothing is billed)."""
    status, _, body = await call(session, server, "hi [[fake:nocandidates]]")
    answer = orjson.loads(body)
    assert status == 200
    assert "candidates" not in answer and "usageMetadata" not in answer and "promptFeedback" not in answer
    assert server.stats.billed_responses == 0


@pytest.mark.anyio
async def test_nocandidates_directive_on_a_stream_is_one_empty_event(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    """On a stream, [[fake:nocandidates]] is a well-framed SSE event without candidates or usage."""
    async with session.post(
        url(server, "streamGenerateContent", "?alt=sse"),
        data=payload("hi [[fake:nocandidates]]"),
        headers={"x-goog-api-key": KEY},
    ) as response:
        assert response.status == 200
        raw = await response.read()
    assert raw.startswith(b"data: ") and raw.endswith(b"\r\n\r\n")
    event = orjson.loads(raw[len(b"data: ") :])
    assert "candidates" not in event and "usageMetadata" not in event
    assert server.stats.billed_responses == 0


@pytest.mark.anyio
async def test_sse_cut_directive_stops_mid_event(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """[[fake:sse_cut]]: complete events, then half an event, then the connection closes."""
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.post(
            url(server, "streamGenerateContent", "?alt=sse"),
            data=payload("A long answer please about rivers [[fake:sse_cut]]"),
            headers={"x-goog-api-key": KEY},
        ) as response:
            assert response.status == 200
            async for chunk in response.content.iter_any():
                received += chunk
    *complete, tail = received.split(b"\r\n\r\n")
    assert complete and all(orjson.loads(event[len(b"data: ") :]) for event in complete)
    assert tail.startswith(b"data: ")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(tail[len(b"data: ") :])
    assert server.stats.billed_responses == 0


@pytest.mark.anyio
async def test_sse_cut_directive_on_unary_cuts_the_body(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """On a unary call, [[fake:sse_cut]] sends half of the promised body and closes."""
    with pytest.raises(aiohttp.ClientPayloadError):
        await call(session, server, "hi [[fake:sse_cut]]")


@pytest.mark.anyio
async def test_sse_error_directive_sends_an_unprefixed_error(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    """[[fake:sse_error]]: data events, then a multi-line {"error": ...} object without `data:`, then the end
    of the stream."""
    async with session.post(
        url(server, "streamGenerateContent", "?alt=sse"),
        data=payload("A long answer please about rivers [[fake:sse_error]]"),
        headers={"x-goog-api-key": KEY},
    ) as response:
        assert response.status == 200
        raw = await response.read()
    head, _, error_text = raw.partition(b'{\n  "error"')
    assert head.startswith(b"data: ") and head.endswith(b"\r\n\r\n")
    error = orjson.loads(b'{\n  "error"' + error_text)["error"]
    assert (error["code"], error["status"]) == (503, "UNAVAILABLE")
    assert server.stats.billed_responses == 0


@pytest.mark.anyio
async def test_sse_error_directive_on_unary_is_500(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """A unary call has no stream to break: [[fake:sse_error]] answers 500."""
    assert (await call(session, server, "hi [[fake:sse_error]]"))[0] == 500


# --- output directives ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_blocked_directive_has_block_reason_and_no_candidates(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    """[[fake:blocked]]: HTTP 200, promptFeedback.blockReason SAFETY, no candidates, prompt-only usage."""
    status, _, body = await call(session, server, "hi [[fake:blocked]]")
    answer = orjson.loads(body)
    assert status == 200
    assert answer["promptFeedback"]["blockReason"] == "SAFETY"
    assert "candidates" not in answer
    usage = answer["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"]
    assert server.stats.billed_responses == 1


@pytest.mark.anyio
async def test_safety_directive_finishes_with_safety_and_no_content(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    """[[fake:safety]]: finishReason SAFETY, a blocked safety rating, and no content."""
    answer = orjson.loads((await call(session, server, "hi [[fake:safety]]"))[2])
    candidate = answer["candidates"][0]
    assert candidate["finishReason"] == "SAFETY"
    assert "content" not in candidate
    assert any(r.get("blocked") for r in candidate["safetyRatings"])


@pytest.mark.anyio
async def test_max_tokens_directive_cuts_json(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """[[fake:max_tokens]]: finishReason MAX_TOKENS and a JSON document cut off mid-way."""
    answer = orjson.loads((await call(session, server, "hi [[fake:max_tokens]]", JSON_CONFIG))[2])
    candidate = answer["candidates"][0]
    assert candidate["finishReason"] == "MAX_TOKENS"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(candidate["content"]["parts"][0]["text"])


@pytest.mark.anyio
async def test_invalid_json_directive(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """[[fake:invalid_json]]: finishReason STOP but text that does not parse."""
    answer = orjson.loads((await call(session, server, "hi [[fake:invalid_json]]", JSON_CONFIG))[2])
    assert answer["candidates"][0]["finishReason"] == "STOP"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(answer["candidates"][0]["content"]["parts"][0]["text"])


@pytest.mark.anyio
async def test_schema_violation_directive_breaks_the_schema(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """[[fake:schema_violation]]: valid JSON that fails validation, in more than one way across prompts."""
    problems: set[str] = set()
    for number in range(12):
        answer = orjson.loads((await call(session, server, f"take {number} [[fake:schema_violation]]", JSON_CONFIG))[2])
        document = orjson.loads(answer["candidates"][0]["content"]["parts"][0]["text"])
        errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(document))
        assert errors, document
        problems.update(error.validator for error in errors)
    assert len(problems) >= 2


# --- attempts ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_directive_with_count_applies_to_first_attempts_only(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    """[[fake:500*2]]: the same request fails twice, then succeeds; another request has its own count."""
    statuses = [(await call(session, server, "retry me [[fake:500*2]]"))[0] for _ in range(4)]
    assert statuses == [500, 500, 200, 200]
    assert (await call(session, server, "another [[fake:500*2]]"))[0] == 500


@pytest.mark.anyio
async def test_directives_apply_in_sequence(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """[[fake:429*1]][[fake:503*2]]: a 429, two 503s, then answers."""
    text = "sequence [[fake:429*1]][[fake:503*2]]"
    assert [(await call(session, server, text))[0] for _ in range(5)] == [429, 503, 503, 200, 200]


@pytest.mark.anyio
async def test_directive_without_count_applies_every_time(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """[[fake:503]] fails every attempt."""
    assert {(await call(session, server, "always [[fake:503]]"))[0] for _ in range(3)} == {503}


# --- random faults ----------------------------------------------------------------------------------------


async def failing_prompts(session: aiohttp.ClientSession, config: ServerConfig, count: int = 60) -> list[int]:
    async with FakeServer(config) as running:
        return [n for n in range(count) if (await call(session, running, f"prompt {n}"))[0] != 200]


@pytest.mark.anyio
async def test_fail_rate_is_seeded_and_roughly_proportional(session: aiohttp.ClientSession) -> None:
    """fail_rate picks about that fraction of requests: the same ones for one seed, others for another."""
    base = ServerConfig(api_key=KEY, fail_rate=0.5, fault_weights={"500": 1.0}, seed=11)
    first = await failing_prompts(session, base)
    again = await failing_prompts(session, base)
    other = await failing_prompts(session, ServerConfig(api_key=KEY, fail_rate=0.5, fault_weights={"500": 1}, seed=12))
    assert 15 <= len(first) <= 45
    assert first == again
    assert first != other


@pytest.mark.anyio
async def test_fail_rate_never_gives_unary_calls_stream_faults(session: aiohttp.ClientSession) -> None:
    """Stream-only faults are left out of the draw for unary calls."""
    config = ServerConfig(api_key=KEY, fail_rate=1.0, fault_weights={"sse_cut": 1.0, "sse_error": 1.0})
    assert await failing_prompts(session, config, 10) == []


@pytest.mark.anyio
async def test_violate_rate_breaks_json_answers_only(session: aiohttp.ClientSession) -> None:
    """violate_rate 1 with only schema_violation: every JSON answer violates, text answers are untouched."""
    config = ServerConfig(api_key=KEY, violate_rate=1.0, violation_weights={"schema_violation": 1.0})
    async with FakeServer(config) as running:
        for number in range(5):
            answer = orjson.loads((await call(session, running, f"json {number}", JSON_CONFIG))[2])
            document = orjson.loads(answer["candidates"][0]["content"]["parts"][0]["text"])
            assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(document)
            text_answer = orjson.loads((await call(session, running, f"text {number}"))[2])
            assert text_answer["candidates"][0]["finishReason"] == "STOP"
        assert running.stats.faults == {"schema_violation": 5}


@pytest.mark.anyio
async def test_ledger_counts_faults_and_bills_only_usable_answers(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    """Faults are counted by name; bodies with usage are billed, errors and broken bodies are not."""
    for text in ("a [[fake:500]]", "b [[fake:nonjson]]", "c [[fake:blocked]]", "d [[fake:safety]]", "e"):
        await call(session, server, text)
    stats = server.stats
    assert stats.faults == {"500": 1, "nonjson": 1, "blocked": 1, "safety": 1}
    assert stats.responses_by_status == {500: 1, 200: 4}
    assert stats.billed_responses == 3
