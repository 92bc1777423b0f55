"""The fake Gemini server over real HTTP: auth, routing, request checks, answers, usage, streams, countTokens.

Every test starts a FakeServer on 127.0.0.1 with a free port and talks to it with a plain aiohttp session,
reading the wire format as documented in the project's reference note (not with batchgen's client).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import aiohttp
import orjson
import pytest

from batchgen.fakeserver import FakeServer, ServerConfig

KEY = "test-key"
PROMPT = "Explain how tidal forces shape planetary orbits around distant stars"


@pytest.fixture
def server_config() -> ServerConfig:
    return ServerConfig(api_key=KEY, seed=7)


def body(text: str = PROMPT, **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


async def post(
    session: aiohttp.ClientSession,
    server: FakeServer,
    payload: Any,
    *,
    model: str = "gemini-2.5-flash",
    method: str = "generateContent",
    headers: dict[str, str] | None = None,
    query: str = "",
) -> tuple[int, Any]:
    """POST and return (status, parsed JSON body)."""
    url = f"{server.url}/v1beta/models/{model}:{method}{query}"
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    sent_headers = {"x-goog-api-key": KEY, "Content-Type": "application/json"} if headers is None else headers
    async with session.post(url, data=data, headers=sent_headers) as response:
        return response.status, orjson.loads(await response.read())


def answer_text(response: dict[str, Any]) -> str:
    parts = response["candidates"][0]["content"]["parts"]
    return "".join(p["text"] for p in parts if "text" in p and not p.get("thought"))


# --- auth and routing -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_missing_key_is_403_permission_denied(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """No key anywhere: 403 with a google.rpc PERMISSION_DENIED body."""
    status, answer = await post(session, server, body(), headers={"Content-Type": "application/json"})
    assert status == 403
    assert answer["error"]["code"] == 403
    assert answer["error"]["status"] == "PERMISSION_DENIED"


@pytest.mark.anyio
async def test_wrong_key_is_400_api_key_invalid(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """A wrong key: 400 INVALID_ARGUMENT whose ErrorInfo says API_KEY_INVALID, plus a LocalizedMessage."""
    status, answer = await post(session, server, body(), headers={"x-goog-api-key": "nope"})
    assert status == 400
    error = answer["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    info, localized = error["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == "API_KEY_INVALID"
    assert info["domain"] == "googleapis.com"
    assert info["metadata"]["service"] == "generativelanguage.googleapis.com"
    assert localized["@type"] == "type.googleapis.com/google.rpc.LocalizedMessage"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "query"),
    [
        pytest.param({"x-goog-api-key": KEY}, "", id="header"),
        pytest.param({"Authorization": f"Bearer {KEY}"}, "", id="bearer"),
        pytest.param({}, f"?key={KEY}", id="query"),
    ],
)
async def test_key_is_accepted_in_header_bearer_or_query(
    server: FakeServer, session: aiohttp.ClientSession, headers: dict[str, str], query: str
) -> None:
    """The key may come as x-goog-api-key, as a Bearer token, or as ?key=."""
    status, answer = await post(session, server, body(), headers=headers, query=query)
    assert status == 200, answer
    assert answer_text(answer)


@pytest.mark.anyio
async def test_unknown_model_is_404(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """A model name the server does not serve is 404 NOT_FOUND."""
    status, answer = await post(session, server, body(), model="gpt-4o")
    assert status == 404
    assert answer["error"]["status"] == "NOT_FOUND"
    assert "models/gpt-4o" in answer["error"]["message"]


@pytest.mark.anyio
async def test_configured_models_restrict_what_is_served(session: aiohttp.ClientSession) -> None:
    """With `models` set, only those names are served."""
    async with FakeServer(ServerConfig(api_key=KEY, models=("gemini-2.5-flash",))) as restricted:
        assert (await post(session, restricted, body()))[0] == 200
        assert (await post(session, restricted, body(), model="gemini-2.5-pro"))[0] == 404


@pytest.mark.anyio
async def test_unknown_method_is_404(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """Only generateContent, streamGenerateContent and countTokens exist."""
    status, answer = await post(session, server, body(), method="embedContent")
    assert status == 404
    assert answer["error"]["status"] == "NOT_FOUND"


# --- request checks ---------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("payload", "model", "message"),
    [
        pytest.param(b"{not json", "gemini-2.5-flash", "Invalid JSON payload received", id="malformed-json"),
        pytest.param(b"[1]", "gemini-2.5-flash", "Root element must be a message", id="not-an-object"),
        pytest.param({}, "gemini-2.5-flash", "contents is not specified", id="no-contents"),
        pytest.param({"contents": []}, "gemini-2.5-flash", "contents is not specified", id="empty-contents"),
        pytest.param({"contents": [{"parts": []}]}, "gemini-2.5-flash", "must not be empty", id="empty-parts"),
        pytest.param(body(bogus=1), "gemini-2.5-flash", 'Unknown name "bogus"', id="unknown-field"),
        pytest.param(
            body(
                generationConfig={
                    "responseMimeType": "application/json",
                    "responseSchema": {"type": "STRING"},
                    "responseJsonSchema": {"type": "string"},
                }
            ),
            "gemini-2.5-flash",
            "cannot both be set",
            id="both-schemas",
        ),
        pytest.param(
            body(generationConfig={"thinkingConfig": {"thinkingLevel": "LOW"}}),
            "gemini-2.5-flash",
            "Thinking level is not supported for this model.",
            id="level-on-2.5",
        ),
        pytest.param(
            body(generationConfig={"thinkingConfig": {"thinkingBudget": 52428}}),
            "gemini-2.5-flash",
            "The thinking budget (52428) is invalid.",
            id="budget-too-big",
        ),
        pytest.param(
            body(generationConfig={"thinkingConfig": {"thinkingBudget": 100}}),
            "gemini-2.5-pro",
            "The thinking budget (100) is invalid.",
            id="budget-below-pro-minimum",
        ),
        pytest.param(
            body(generationConfig={"thinkingConfig": {"thinkingBudget": 0}}),
            "gemini-2.5-pro",
            "only works in thinking mode",
            id="pro-cannot-disable",
        ),
        pytest.param(
            body(generationConfig={"thinkingConfig": {"thinkingBudget": 1024, "thinkingLevel": "HIGH"}}),
            "gemini-3-flash-preview",
            "only set one of thinking budget and thinking level",
            id="budget-and-level",
        ),
        pytest.param(
            body(generationConfig={"thinkingConfig": {"thinkingBudget": 1024}}),
            "gemini-2.0-flash",
            "thinking is not supported by this model",
            id="non-thinking-model",
        ),
        pytest.param(
            body(generationConfig={"thinkingConfig": {"thinkingLevel": "MEDIUM"}}),
            "gemini-3-pro-preview",
            "Thinking level MEDIUM is not supported",
            id="3-pro-medium",
        ),
        pytest.param(
            body(
                generationConfig={
                    "responseMimeType": "application/json",
                    "responseSchema": {
                        "type": "OBJECT",
                        "properties": {"a": {"type": "STRING"}},
                        "additionalProperties": False,
                    },
                }
            ),
            "gemini-2.5-flash",
            'Unknown name "additionalProperties"',
            id="openapi-unknown-keyword",
        ),
        pytest.param(
            body(
                generationConfig={
                    "responseMimeType": "application/json",
                    "responseSchema": {"type": ["STRING", "NULL"]},
                }
            ),
            "gemini-2.5-flash",
            "Proto field is not repeating",
            id="openapi-type-list",
        ),
        pytest.param(
            body(
                generationConfig={
                    "responseMimeType": "application/json",
                    "responseSchema": {"type": "OBJECT"},
                }
            ),
            "gemini-2.5-flash",
            "should be non-empty for OBJECT type",
            id="object-without-properties",
        ),
        pytest.param(
            body(generationConfig={"responseSchema": {"type": "STRING"}}),
            "gemini-2.5-flash",
            "response_mime_type",
            id="schema-without-json-mime",
        ),
        pytest.param(
            body(cachedContent="cachedContents/abc", systemInstruction={"parts": [{"text": "be brief"}]}),
            "gemini-2.5-flash",
            "CachedContent can not be used",
            id="cache-with-system-instruction",
        ),
        pytest.param(body("hi [[fake:nonsense]]"), "gemini-2.5-flash", "unknown directive", id="bad-directive"),
    ],
)
async def test_invalid_requests_are_400_invalid_argument(
    server: FakeServer, session: aiohttp.ClientSession, payload: Any, model: str, message: str
) -> None:
    """Requests the API refuses get a 400 INVALID_ARGUMENT with a message in the API's words."""
    status, answer = await post(session, server, payload, model=model)
    assert status == 400, answer
    assert answer["error"]["status"] == "INVALID_ARGUMENT"
    assert message in answer["error"]["message"]


@pytest.mark.anyio
async def test_snake_case_field_names_are_accepted(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """Proto JSON accepts original field names: generation_config / max_output_tokens work like camelCase."""
    status, answer = await post(session, server, body(generation_config={"max_output_tokens": 3}))
    assert status == 200, answer
    assert answer["candidates"][0]["finishReason"] == "MAX_TOKENS"


# --- answers and usage ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_text_answer_shape_and_usage_arithmetic(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """A unary answer has one candidate with text, STOP, index, safetyRatings, avgLogprobs; usage adds up:
    prompt tokens from text length, candidates from the answer, thoughts for a thinking 2.5 model, and
    total = prompt + candidates + thoughts."""
    status, answer = await post(session, server, body())
    assert status == 200
    candidate = answer["candidates"][0]
    assert candidate["index"] == 0
    assert candidate["finishReason"] == "STOP"
    assert candidate["content"]["role"] == "model"
    assert {r["category"] for r in candidate["safetyRatings"]} >= {"HARM_CATEGORY_HARASSMENT"}
    assert candidate["avgLogprobs"] < 0
    text = answer_text(answer)
    assert "tidal" in text or "orbits" in text or "planetary" in text
    usage = answer["usageMetadata"]
    assert usage["promptTokenCount"] == -(-len(PROMPT) // 4)
    assert usage["candidatesTokenCount"] == -(-len(text) // 4)
    assert usage["thoughtsTokenCount"] > 0
    assert (
        usage["totalTokenCount"]
        == usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )
    assert "cachedContentTokenCount" not in usage and "toolUsePromptTokenCount" not in usage
    assert answer["modelVersion"] == "gemini-2.5-flash"
    assert answer["responseId"]


@pytest.mark.anyio
async def test_answers_are_deterministic_per_request_and_seed(session: aiohttp.ClientSession) -> None:
    """The same request gets the same text from a server with the same seed, and other text with another."""
    texts = []
    for seed in (1, 1, 2):
        async with FakeServer(ServerConfig(api_key=KEY, seed=seed)) as running:
            texts.append(answer_text((await post(session, running, body()))[1]))
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("model", "config", "thinks"),
    [
        pytest.param("gemini-2.5-flash", {}, True, id="2.5-flash-default"),
        pytest.param("gemini-2.5-flash", {"thinkingBudget": 0}, False, id="2.5-flash-budget-0"),
        pytest.param("gemini-2.5-flash-lite", {}, False, id="flash-lite-default"),
        pytest.param("gemini-2.5-flash-lite", {"thinkingBudget": 1024}, True, id="flash-lite-budget"),
        pytest.param("gemini-2.5-pro", {}, True, id="2.5-pro-default"),
        pytest.param("gemini-3-flash-preview", {}, True, id="3-default-high"),
        pytest.param("gemini-3-flash-preview", {"thinkingLevel": "minimal"}, False, id="3-minimal"),
        pytest.param("gemini-2.0-flash", {}, False, id="2.0-never"),
    ],
)
async def test_thoughts_token_count_follows_model_family(
    server: FakeServer, session: aiohttp.ClientSession, model: str, config: dict[str, Any], thinks: bool
) -> None:
    """thoughtsTokenCount is present exactly when the model thinks; a budget caps it."""
    payload = body(generationConfig={"thinkingConfig": config}) if config else body()
    status, answer = await post(session, server, payload, model=model)
    assert status == 200, answer
    thoughts = answer["usageMetadata"].get("thoughtsTokenCount", 0)
    assert (thoughts > 0) is thinks
    if "thinkingBudget" in config:
        assert thoughts <= config["thinkingBudget"]


@pytest.mark.anyio
async def test_include_thoughts_puts_summary_parts_first(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """includeThoughts adds thought:true parts before the answer, never mixed into the answer text."""
    payload = body(generationConfig={"thinkingConfig": {"includeThoughts": True}})
    _, answer = await post(session, server, payload)
    parts = answer["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True
    assert all(not p.get("thought") for p in parts[1:])
    assert parts[0]["text"] not in answer_text(answer)


@pytest.mark.anyio
async def test_gemini_3_parts_carry_a_thought_signature(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """Gemini 3 answers carry a base64 thoughtSignature on an answer part; 2.5 answers do not."""
    _, three = await post(session, server, body(), model="gemini-3-flash-preview")
    signatures = [p["thoughtSignature"] for p in three["candidates"][0]["content"]["parts"] if "thoughtSignature" in p]
    assert len(signatures) == 1
    assert base64.b64decode(signatures[0])
    _, two = await post(session, server, body())
    assert not any("thoughtSignature" in p for p in two["candidates"][0]["content"]["parts"])


@pytest.mark.anyio
async def test_max_output_tokens_truncates_with_thinking_counted(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    """Thinking uses maxOutputTokens first; the answer gets the rest and stops with MAX_TOKENS."""
    payload = body(generationConfig={"maxOutputTokens": 40, "thinkingConfig": {"thinkingBudget": 30}})
    _, answer = await post(session, server, payload)
    usage = answer["usageMetadata"]
    assert answer["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert usage["thoughtsTokenCount"] + usage.get("candidatesTokenCount", 0) <= 40


@pytest.mark.anyio
async def test_thought_summary_never_exceeds_the_output_budget(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    """A budget smaller than a summary gets no summary; output stays within maxOutputTokens."""
    config = {"maxOutputTokens": 12, "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 8}}
    _, answer = await post(session, server, body(generationConfig=config))
    usage = answer["usageMetadata"]
    assert usage["thoughtsTokenCount"] + usage.get("candidatesTokenCount", 0) <= 12
    assert not any(p.get("thought") for p in answer["candidates"][0].get("content", {}).get("parts", []))


@pytest.mark.anyio
async def test_stop_sequence_ends_the_text_before_it(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """Output stops at the first stop sequence, which is not included; the finish reason stays STOP."""
    _, free = await post(session, server, body())
    assert answer_text(free).count(".") > 1
    _, stopped = await post(session, server, body(generationConfig={"stopSequences": ["."]}))
    text = answer_text(stopped)
    assert text and "." not in text
    assert stopped["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.anyio
async def test_candidate_count_gives_indexed_candidates(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """candidateCount N returns N candidates indexed 0..N-1, and candidatesTokenCount covers them all."""
    _, answer = await post(session, server, body(generationConfig={"candidateCount": 3}))
    candidates = answer["candidates"]
    assert [c["index"] for c in candidates] == [0, 1, 2]
    texts = ["".join(p["text"] for p in c["content"]["parts"]) for c in candidates]
    assert answer["usageMetadata"]["candidatesTokenCount"] == sum(-(-len(t) // 4) for t in texts)


@pytest.mark.anyio
async def test_system_instruction_and_tools_count_as_prompt(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """promptTokenCount covers contents, systemInstruction and function declarations."""
    _, plain = await post(session, server, body())
    instructed = body(systemInstruction={"parts": [{"text": "x" * 400}]})
    _, with_system = await post(session, server, instructed)
    assert with_system["usageMetadata"]["promptTokenCount"] >= plain["usageMetadata"]["promptTokenCount"] + 100


@pytest.mark.anyio
async def test_cached_content_is_part_of_prompt_tokens(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """cachedContentTokenCount is a fixed size per cache name and is included in promptTokenCount,
    not added to the total a second time."""
    _, plain = await post(session, server, body())
    _, first = await post(session, server, body(cachedContent="cachedContents/abc123"))
    _, again = await post(session, server, body("Something else entirely", cachedContent="cachedContents/abc123"))
    usage = first["usageMetadata"]
    cached = usage["cachedContentTokenCount"]
    assert cached >= 1024
    assert again["usageMetadata"]["cachedContentTokenCount"] == cached
    assert usage["promptTokenCount"] == plain["usageMetadata"]["promptTokenCount"] + cached
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage.get("thoughtsTokenCount", 0)
    )


@pytest.mark.anyio
async def test_google_search_adds_grounding_and_tool_use_tokens(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    """The googleSearch tool adds groundingMetadata whose segments index the answer text (UTF-8 bytes),
    and toolUsePromptTokenCount, which totalTokenCount includes."""
    _, answer = await post(session, server, body(tools=[{"googleSearch": {}}]))
    grounding = answer["candidates"][0]["groundingMetadata"]
    assert grounding["webSearchQueries"]
    assert all(c["web"]["uri"].startswith("https://") and c["web"]["title"] for c in grounding["groundingChunks"])
    assert "renderedContent" in grounding["searchEntryPoint"]
    encoded = answer_text(answer).encode()
    for support in grounding["groundingSupports"]:
        segment = support["segment"]
        assert encoded[segment.get("startIndex", 0) : segment["endIndex"]].decode() == segment["text"]
        assert all(0 <= i < len(grounding["groundingChunks"]) for i in support["groundingChunkIndices"])
    usage = answer["usageMetadata"]
    assert usage["toolUsePromptTokenCount"] > 0
    assert usage["totalTokenCount"] == sum(
        usage.get(k, 0)
        for k in ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "toolUsePromptTokenCount")
    )


WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING"},
            "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "INTEGER", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "unit"],
    },
}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("prompt", "mode", "calls"),
    [
        pytest.param("What does get_weather say for Paris?", None, True, id="named-in-prompt"),
        pytest.param(PROMPT, "ANY", True, id="mode-any"),
        pytest.param(PROMPT, None, False, id="auto-not-named"),
        pytest.param("Call get_weather for Paris", "NONE", False, id="mode-none"),
    ],
)
async def test_function_calls_follow_mode_and_prompt(
    server: FakeServer, session: aiohttp.ClientSession, prompt: str, mode: str | None, calls: bool
) -> None:
    """A functionCall part (args fitting the declared parameters) comes with mode ANY or when the prompt
    names the function, never with mode NONE."""
    payload = body(prompt, tools=[{"functionDeclarations": [WEATHER]}])
    if mode:
        payload["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
    status, answer = await post(session, server, payload)
    assert status == 200, answer
    parts = answer["candidates"][0]["content"]["parts"]
    call_parts = [p["functionCall"] for p in parts if "functionCall" in p]
    assert bool(call_parts) is calls
    if calls:
        call = call_parts[0]
        assert call["name"] == "get_weather"
        assert isinstance(call["args"]["city"], str)
        assert call["args"]["unit"] in ("celsius", "fahrenheit")
        assert 1 <= call["args"].get("days", 1) <= 7
        assert answer["candidates"][0]["finishMessage"] == "Model generated function call(s)."
    else:
        assert "finishMessage" not in answer["candidates"][0]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("asked", "served"),
    [
        pytest.param(None, "standard", id="default"),
        pytest.param("flex", "flex", id="flex"),
        pytest.param("PRIORITY", "priority", id="upper-case"),
    ],
)
async def test_usage_names_the_service_tier_that_served_the_call(
    server: FakeServer, session: aiohttp.ClientSession, asked: str | None, served: str
) -> None:
    """usageMetadata.serviceTier is the tier asked for, lower case as the API writes "standard"."""
    payload = body() if asked is None else body(serviceTier=asked)
    status, answer = await post(session, server, payload)
    assert status == 200, answer
    assert answer["usageMetadata"]["serviceTier"] == served
    status, refused = await post(session, server, body(serviceTier="cheapest"))
    assert status == 400 and "ServiceTier" in refused["error"]["message"]


@pytest.mark.anyio
async def test_citations_appear_for_some_requests(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """citationMetadata shows up occasionally (deterministically), with byte offsets inside the text."""
    cited = []
    for number in range(40):
        _, answer = await post(session, server, body(f"{PROMPT} variant {number}"))
        if "citationMetadata" in answer["candidates"][0]:
            cited.append(answer)
    assert cited
    for answer in cited:
        source = answer["candidates"][0]["citationMetadata"]["citationSources"][0]
        assert source.get("startIndex", 0) < source["endIndex"] <= len(answer_text(answer).encode())
        assert source["uri"].startswith("https://")


@pytest.mark.anyio
async def test_enum_mime_type_returns_one_value(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """text/x.enum answers with exactly one of the enum values, as plain text."""
    values = ["positive", "negative", "neutral"]
    config = {"responseMimeType": "text/x.enum", "responseSchema": {"type": "STRING", "enum": values}}
    _, answer = await post(session, server, body(generationConfig=config))
    assert answer_text(answer) in values


# --- streams ----------------------------------------------------------------------------------------------


async def stream_raw(session: aiohttp.ClientSession, server: FakeServer, payload: Any, query: str) -> bytes:
    url = f"{server.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent{query}"
    async with session.post(url, data=orjson.dumps(payload), headers={"x-goog-api-key": KEY}) as response:
        assert response.status == 200
        return await response.read()


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    assert raw.endswith(b"\r\n\r\n")
    chunks = raw.split(b"\r\n\r\n")[:-1]
    assert all(chunk.startswith(b"data: ") for chunk in chunks)
    return [orjson.loads(chunk[len(b"data: ") :]) for chunk in chunks]


@pytest.mark.anyio
async def test_sse_stream_framing_and_usage(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """alt=sse: `data: <json>` events separated by CRLF blank lines; text over several events;
    promptFeedback only first; early usage has prompt and total only (and the service tier, on every event);
    later candidatesTokenCount is cumulative; the last event has finishReason and the full usage, equal to the
    unary answer's."""
    raw = await stream_raw(session, server, body(), "?alt=sse")
    events = sse_events(raw)
    assert len(events) >= 3
    assert "promptFeedback" in events[0]
    assert all("promptFeedback" not in e for e in events[1:])
    assert set(events[0]["usageMetadata"]) == {"promptTokenCount", "totalTokenCount", "serviceTier"}
    assert {e["usageMetadata"]["serviceTier"] for e in events} == {"standard"}
    counts = [e["usageMetadata"].get("candidatesTokenCount", 0) for e in events[1:]]
    assert counts == sorted(counts)
    assert all("finishReason" not in e["candidates"][0] for e in events[:-1])
    final = events[-1]
    assert final["candidates"][0]["finishReason"] == "STOP"
    text = "".join(p["text"] for e in events for p in e["candidates"][0].get("content", {}).get("parts", []))
    _, unary = await post(session, server, body())
    assert text == answer_text(unary)
    assert final["usageMetadata"] == unary["usageMetadata"]
    assert len({e["responseId"] for e in events}) == 1


@pytest.mark.anyio
async def test_stream_without_alt_sse_is_a_json_array(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """Without alt=sse the stream is one JSON array of responses."""
    events = orjson.loads(await stream_raw(session, server, body(), ""))
    assert isinstance(events, list) and len(events) >= 2
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.anyio
async def test_stream_of_json_concatenates_to_the_document(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """A JSON-mode stream splits the document across events; joined, it parses."""
    config = {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {"summary": {"type": "STRING"}},
            "required": ["summary"],
        },
    }
    events = sse_events(await stream_raw(session, server, body(generationConfig=config), "?alt=sse"))
    text = "".join(p["text"] for e in events for p in e["candidates"][0].get("content", {}).get("parts", []))
    assert isinstance(orjson.loads(text)["summary"], str)


# --- countTokens ------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_count_tokens_contents_shape(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """countTokens with `contents` answers totalTokens equal to generateContent's promptTokenCount."""
    status, counted = await post(session, server, body(), method="countTokens")
    assert status == 200
    _, generated = await post(session, server, body())
    assert counted["totalTokens"] == generated["usageMetadata"]["promptTokenCount"]
    assert counted["promptTokensDetails"] == [{"modality": "TEXT", "tokenCount": counted["totalTokens"]}]
    assert "cachedContentTokenCount" not in counted


@pytest.mark.anyio
async def test_count_tokens_generate_content_request_shape(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """countTokens with `generateContentRequest` counts system instruction and cache too."""
    request = body(cachedContent="cachedContents/xyz")
    status, counted = await post(
        session,
        server,
        {"generateContentRequest": {"model": "models/gemini-2.5-flash", **request}},
        method="countTokens",
    )
    assert status == 200, counted
    _, generated = await post(session, server, request)
    assert counted["totalTokens"] == generated["usageMetadata"]["promptTokenCount"]
    assert counted["cachedContentTokenCount"] == generated["usageMetadata"]["cachedContentTokenCount"]


@pytest.mark.anyio
async def test_count_tokens_is_not_billed(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """countTokens answers are counted as responses but bill nothing."""
    await post(session, server, body(), method="countTokens")
    stats = server.stats
    assert stats.requests_by_method == {"countTokens": 1}
    assert stats.responses_by_status == {200: 1}
    assert stats.billed_responses == 0


# --- ledger -----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_ledger_sums_usage_of_every_sent_answer(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """The ledger counts requests, statuses and the usage of each 200 answer (a stream's final usage once),
    and GET /_fake/stats serves the same numbers."""
    usages = []
    for number in range(3):
        usages.append((await post(session, server, body(f"{PROMPT} {number}")))[1]["usageMetadata"])
    usages.append(sse_events(await stream_raw(session, server, body(), "?alt=sse"))[-1]["usageMetadata"])
    await post(session, server, body(), model="unknown-model")
    stats = server.stats
    assert stats.requests == 5
    assert stats.responses_by_status == {200: 4, 404: 1}
    assert stats.billed_responses == 4
    for field in ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "totalTokenCount"):
        assert stats.billed[field] == sum(u.get(field, 0) for u in usages)
    async with session.get(f"{server.url}/_fake/stats") as response:
        served = orjson.loads(await response.read())
    assert served == stats.to_json()
    assert served["responses_by_status"] == {"200": 4, "404": 1}


def test_repr_shows_state_not_key() -> None:
    """The server's repr shows its state and never the API key."""
    server = FakeServer(ServerConfig(api_key="secret-value-123"))
    assert "secret-value-123" not in repr(server)
    assert "secret-value-123" not in repr(server.config)
    assert re.search(r"not started", repr(server))


@pytest.mark.anyio
async def test_server_cannot_be_entered_twice_and_url_needs_it_running() -> None:
    """A FakeServer runs once at a time; its URL exists only while it runs."""
    server = FakeServer(ServerConfig())
    with pytest.raises(RuntimeError):
        _ = server.url
    async with server:
        assert server.url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError):
            await server.__aenter__()
    with pytest.raises(RuntimeError):
        _ = server.url
