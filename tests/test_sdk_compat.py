"""batchgen's wire format checked against the official google-genai SDK, a client nobody here wrote.

Requests: the same request is built by the SDK (`client.aio.models.generate_content`) and by batchgen (a TOML
job -> `load_job` -> the job's prompt builder -> `RequestTemplate` -> `GeminiClient`), both are sent over
loopback HTTP to a capture server, and the decoded JSON bodies must be equal after these normalisations only
(everything else must match exactly):

  N1 field names   The SDK (3.x) sends some nested proto fields in snake_case: inlineData/fileData
                   `mime_type`, `file_uri`; thinkingConfig `include_thoughts`, `thinking_budget`,
                   `thinking_level`; responseSchema `property_ordering`, `any_of`; functionDeclarations
                   `parameters_json_schema`. Proto3 JSON accepts both spellings; batchgen sends lowerCamelCase.
                   Only proto field names are renamed, never property names, function args or the free JSON of
                   responseJsonSchema / parametersJsonSchema.
  N2 bytes         inlineData.data is compared as decoded bytes: the SDK writes URL-safe base64 (`-_`),
                   batchgen the standard alphabet (`+/`); proto3 JSON accepts both.
  N3 schema types  The SDK upper-cases `type` in responseSchema and function parameters (`string` ->
                   `STRING`); batchgen sends the job's spelling, which the API accepts in either case.
  N4 ordering      The SDK adds `propertyOrdering` (declaration order) to a responseSchema object with more than
                   one property when none is given; batchgen sends the schema as written. Dropped when it equals
                   the declaration order.
  N5 system role   The SDK adds `"role": "user"` to a systemInstruction given as a string.
  N6 empty config  The SDK always sends `"generationConfig": {}`; batchgen omits an empty one.
  N7 tool order    The SDK moves functionDeclarations tools after the other tools; tools are compared as a set.

Numbers compare by value: the SDK types topK as a float and sends `20.0` where the job says `20`.

Responses: the SDK is pointed at the local server through a recording proxy; every response kind the server
produces must parse with the SDK's own types, strictly (`extra="forbid"`, unknown enum values warn and warnings
are errors), and `gemini.parse_response` must read the same bytes the same way. Differences in reading:

  R1 usage         A count absent from usageMetadata (proto3 omits zeros) is None in the SDK, 0 in batchgen.
  R2 start index   A grounding segment or citation starting at 0 has no startIndex on the wire: None in the SDK,
                   0 in batchgen's columns.
  R3 citations     The wire's `citationMetadata.citationSources` is `.citation_metadata.citations` in the SDK.
  R4 streams       The SDK yields one response per SSE event (`.text` per chunk, usage on the last); batchgen
                   merges them into one reply, which equals the unary answer to the same request.
  R5 countTokens   The SDK sends `{contents}` (it refuses system instruction and tools on the Gemini API);
                   batchgen sends `{generateContentRequest}` so everything billed is counted. Same count.
  R6 SSE framing   The SDK reads only `data: ` lines (and raw error objects); an SSE comment, `data:` without the
                   space or an `event:`/`id:` field makes it fail, where batchgen follows the SSE specification.
  R7 service tier  The Gemini API writes `usageMetadata.serviceTier` (recorded responses say "standard"), which
                   the SDK's response usage type does not have (only its Live API's does): it is taken out before
                   the strict validation, and the `service_tier` column is checked against the JSON itself.
  R8 modalities    A per-modality count the wire leaves out (proto3 zero) is None in the SDK, 0 in batchgen.
  R9 finishMessage The SDK client's Gemini API converter does not copy a candidate's finishMessage (its types
                   have the field): the metadata columns are compared with the SDK types' strict reading of the
                   body, text, usage and calls with the client's.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from recorded_fixtures import Recording, load_all
from servers import Captured, CaptureServer

from batchgen.errors import ApiError, AuthError, QuotaExhausted, RateLimited, ServerError
from batchgen.fakeserver import FakeServer, ServerConfig
from batchgen.gemini.errors import error_from_response
from batchgen.gemini.request import RequestTemplate, user_contents
from batchgen.gemini.response import Reply, decode_json, parse_response
from batchgen.gemini.stream import SseDecoder, merge_stream
from batchgen.input.reader import InputSource
from batchgen.job import load_job
from batchgen.online.client import Endpoint, GeminiClient
from batchgen.pipeline import prompt_builder
from batchgen.records import Result, Status
from batchgen.results.columns import METADATA
from batchgen.results.metadata import metadata_columns
from batchgen.results.verdict import judge
from batchgen.secret import ApiKey

KEY = "sdk-compat-key-4b7e"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
)
# Quotes, braces, a newline and non-ASCII: JSON escaping and the prompt template must leave them intact.
QUESTION = 'Is this review positive? «Très bien» {5/5} ✓ "would buy again"\nSent from my phone'


# --- normalisation (N1-N7 above) ------------------------------------------------------------------------------

# Values that are free JSON (google.protobuf.Struct / Value): their keys are data, never renamed.
_FREE_JSON = frozenset({"responseJsonSchema", "parametersJsonSchema", "responseJsonSchemaOrdered", "args"})


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _canonical(node: Any, *, in_schema: bool = False) -> Any:
    """N1-N4 applied recursively; `in_schema` marks a proto `Schema` node (responseSchema, parameters)."""
    if isinstance(node, list):
        return [_canonical(item, in_schema=in_schema) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = _camel(key)
        if name in _FREE_JSON:
            out[name] = value
        elif name == "properties" and in_schema:
            out[name] = {prop: _canonical(sub, in_schema=True) for prop, sub in value.items()}
        elif name in ("responseSchema", "parameters", "items", "anyOf"):
            out[name] = _canonical(value, in_schema=True)
        elif name == "type" and in_schema and isinstance(value, str):
            out[name] = value.upper()
        elif name == "data" and isinstance(value, str):
            out[name] = base64.urlsafe_b64decode(value.replace("+", "-").replace("/", "_"))
        else:
            out[name] = _canonical(value, in_schema=in_schema)
    if in_schema and out.get("propertyOrdering") == list(out.get("properties") or {}):
        del out["propertyOrdering"]
    return out


def normalised(body: dict[str, Any]) -> dict[str, Any]:
    """A request body with only the documented SDK/batchgen differences (N1-N7) taken out."""
    out = _canonical(body)
    system = out.get("systemInstruction")
    if isinstance(system, dict) and system.get("role") == "user":
        del system["role"]
    if out.get("generationConfig") == {}:
        del out["generationConfig"]
    if "tools" in out:
        out["tools"] = sorted(out["tools"], key=lambda tool: json.dumps(tool, sort_keys=True, default=str))
    return dict(out)


# --- the two clients ---------------------------------------------------------------------------------------------


@asynccontextmanager
async def sdk_client(url: str, key: str = KEY) -> AsyncIterator[Any]:
    """google-genai's async client aimed at `url`, over an aiohttp session this test owns and closes."""
    async with aiohttp.ClientSession() as session:
        options = types.HttpOptions(base_url=url, api_version="v1beta", aiohttp_client=session)
        client = genai.Client(api_key=key, http_options=options)
        try:
            yield client.aio
        finally:
            await client.aio.aclose()
            client.close()


def toml(value: Any) -> str:
    """`value` as a TOML inline value (tables inline, keys quoted)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def write_job(folder: Path, model: str, request: str, row: dict[str, Any], input_keys: str = "") -> Path:
    """A job file over a one-row JSONL input; `request` is the TOML body of its [request] table."""
    (folder / "in.jsonl").write_bytes(orjson.dumps(row) + b"\n")
    job = folder / "job.toml"
    job.write_text(
        f'model = "{model}"\n'
        '[input]\npath = "in.jsonl"\nid_field = "id"\nprompt_template = "{q}"\n'
        f"{input_keys}\n"
        '[output]\npath = "out"\n'
        f"[request]\n{request}\n",
        encoding="utf-8",
    )
    return job


async def send_with_batchgen(url: str, job_file: Path) -> None:
    """What `batchgen run` would send for the job's first row, sent by batchgen's own client."""
    job = load_job(job_file)
    source = InputSource(job.input.path, prompt_builder(job))
    prompt = await anext(aiter(source.prompts()))
    assert prompt.problem is None, prompt.problem
    body = RequestTemplate(job.request).render(prompt.contents)
    async with GeminiClient(Endpoint(base_url=url, model=job.model), ApiKey(KEY)) as client:
        await client(body)


async def send_with_sdk(url: str, model: str, contents: Any, config: types.GenerateContentConfig) -> None:
    async with sdk_client(url) as client:
        await client.models.generate_content(model=model, contents=contents, config=config)


# --- request bodies ------------------------------------------------------------------------------------------

SENTIMENT = {
    "type": "OBJECT",
    "properties": {
        "label": {"type": "STRING", "enum": ["positive", "negative", "mixed"], "description": "overall tone"},
        "score": {"type": "NUMBER", "minimum": 0, "maximum": 1},
        "aspects": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 3},
        "note": {"type": "STRING", "nullable": True},
    },
    "required": ["label", "score"],
    "propertyOrdering": ["label", "score", "aspects", "note"],
}
# Lower-case types, no propertyOrdering, anyOf and a nested object: exercises N3 and N4.
LOOSE = {
    "type": "object",
    "properties": {
        "first_name": {"type": "string"},
        "age": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip_code": {"type": "string"}}},
    },
    "required": ["first_name"],
}
JSON_SCHEMA = {
    "$defs": {"city": {"type": "string", "minLength": 1}},
    "type": "object",
    "properties": {
        "home_city": {"$ref": "#/$defs/city"},
        "nick_name": {"type": ["string", "null"]},
        "visits": {"type": "array", "items": {"type": "integer"}, "maxItems": 5},
    },
    "required": ["home_city"],
    "additionalProperties": False,
}
WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city_name": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city_name"],
    },
}


@dataclass(frozen=True)
class Case:
    """One request feature, written once as a job's [request] table and once as SDK arguments."""

    request: str
    config: Callable[[], types.GenerateContentConfig]
    model: str = "gemini-2.5-flash"
    files: dict[str, Any] = field(default_factory=dict)


CASES = [
    pytest.param(
        Case(
            'systemInstruction = { parts = [{ text = "You are a careful annotator." }] }',
            lambda: types.GenerateContentConfig(system_instruction="You are a careful annotator."),
        ),
        id="system-instruction",
    ),
    pytest.param(
        Case(
            "[request.generationConfig]\n"
            "temperature = 0.2\nmaxOutputTokens = 256\ntopP = 0.9\ntopK = 20\nseed = 7\n"
            'stopSequences = ["END"]\ncandidateCount = 1\npresencePenalty = 0.5\n'
            'responseMimeType = "application/json"\nresponseSchema = "sentiment.json"\n',
            lambda: types.GenerateContentConfig(
                temperature=0.2,
                max_output_tokens=256,
                top_p=0.9,
                top_k=20,
                seed=7,
                stop_sequences=["END"],
                candidate_count=1,
                presence_penalty=0.5,
                response_mime_type="application/json",
                response_schema=copy.deepcopy(SENTIMENT),
            ),
            files={"sentiment.json": SENTIMENT},
        ),
        id="generation-config-response-schema",
    ),
    pytest.param(
        Case(
            'generationConfig = { responseMimeType = "application/json", responseSchema = "loose.json" }',
            lambda: types.GenerateContentConfig(
                response_mime_type="application/json", response_schema=copy.deepcopy(LOOSE)
            ),
            files={"loose.json": LOOSE},
        ),
        id="response-schema-lowercase-types",
    ),
    pytest.param(
        Case(
            'generationConfig = { responseMimeType = "application/json", responseJsonSchema = "schema.json" }',
            lambda: types.GenerateContentConfig(
                response_mime_type="application/json", response_json_schema=copy.deepcopy(JSON_SCHEMA)
            ),
            files={"schema.json": JSON_SCHEMA},
        ),
        id="response-json-schema",
    ),
    pytest.param(
        Case(
            "generationConfig = { thinkingConfig = { thinkingBudget = 1024, includeThoughts = true } }",
            lambda: types.GenerateContentConfig(
                thinking_config=types.ThinkingConfig(thinking_budget=1024, include_thoughts=True)
            ),
        ),
        id="thinking-budget",
    ),
    pytest.param(
        Case(
            'generationConfig = { thinkingConfig = { thinkingLevel = "LOW", includeThoughts = true } }',
            lambda: types.GenerateContentConfig(
                thinking_config=types.ThinkingConfig(thinking_level=types.ThinkingLevel.LOW, include_thoughts=True)
            ),
            model="gemini-3-flash-preview",
        ),
        id="thinking-level-gemini-3",
    ),
    pytest.param(
        Case(
            "tools = [{ googleSearch = {} }, { urlContext = {} }, { codeExecution = {} }]",
            lambda: types.GenerateContentConfig(
                tools=[
                    types.Tool(google_search=types.GoogleSearch()),
                    types.Tool(url_context=types.UrlContext()),
                    types.Tool(code_execution=types.ToolCodeExecution()),
                ]
            ),
        ),
        id="tools-google-search",
    ),
    pytest.param(
        Case(
            f"tools = [{{ functionDeclarations = [{toml(WEATHER_TOOL)}] }}]\n"
            'toolConfig = { functionCallingConfig = { mode = "ANY", allowedFunctionNames = ["get_weather"] } }',
            lambda: types.GenerateContentConfig(
                tools=[
                    types.Tool(
                        function_declarations=[types.FunctionDeclaration.model_validate(copy.deepcopy(WEATHER_TOOL))]
                    )
                ],
                tool_config=types.ToolConfig(
                    function_calling_config=types.FunctionCallingConfig(
                        mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["get_weather"]
                    )
                ),
                automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            ),
        ),
        id="function-declarations-tool-config",
    ),
    pytest.param(
        Case(
            'tools = [{ functionDeclarations = [{ name = "lookup", parametersJsonSchema = '
            '{ type = "object", properties = { user_id = { type = "string" } } } }] }]',
            lambda: types.GenerateContentConfig(
                tools=[
                    types.Tool(
                        function_declarations=[
                            types.FunctionDeclaration(
                                name="lookup",
                                parameters_json_schema={
                                    "type": "object",
                                    "properties": {"user_id": {"type": "string"}},
                                },
                            )
                        ]
                    )
                ],
                automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            ),
        ),
        id="function-parameters-json-schema",
    ),
    pytest.param(
        Case(
            "safetySettings = ["
            '{ category = "HARM_CATEGORY_HATE_SPEECH", threshold = "BLOCK_ONLY_HIGH" }, '
            '{ category = "HARM_CATEGORY_DANGEROUS_CONTENT", threshold = "BLOCK_NONE" }]',
            lambda: types.GenerateContentConfig(
                safety_settings=[
                    types.SafetySetting(
                        category=types.HarmCategory.HARM_CATEGORY_HATE_SPEECH,
                        threshold=types.HarmBlockThreshold.BLOCK_ONLY_HIGH,
                    ),
                    types.SafetySetting(
                        category=types.HarmCategory.HARM_CATEGORY_DANGEROUS_CONTENT,
                        threshold=types.HarmBlockThreshold.BLOCK_NONE,
                    ),
                ]
            ),
        ),
        id="safety-settings",
    ),
    pytest.param(
        Case(
            'cachedContent = "cachedContents/abc123"\nserviceTier = "flex"\nlabels = { team = "research" }',
            lambda: types.GenerateContentConfig(
                cached_content="cachedContents/abc123", service_tier=types.ServiceTier.FLEX, labels={"team": "research"}
            ),
        ),
        id="cached-content-service-tier-labels",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES)
async def test_request_body_matches_the_sdks(tmp_path: Path, case: Case) -> None:
    """The job's [request] table reaches the wire as the SDK would send the same settings."""
    for name, content in case.files.items():
        (tmp_path / name).write_bytes(orjson.dumps(content))
    job = write_job(tmp_path, case.model, case.request, {"id": "r1", "q": QUESTION})
    with CaptureServer() as server:
        await send_with_batchgen(server.url, job)
        await send_with_sdk(server.url, case.model, QUESTION, case.config())
        ours, sdks = server.bodies()
        assert [c.path for c in server.requests] == [f"v1beta/models/{case.model}:generateContent"] * 2
        for exchange in server.requests:  # the same auth header and content type, no key in the query
            assert exchange.headers["x-goog-api-key"] == KEY and exchange.query == {}
            assert exchange.headers["Content-Type"].startswith("application/json")
    assert normalised(ours) == normalised(sdks)


@pytest.mark.anyio
async def test_multimodal_parts_match_the_sdks(tmp_path: Path) -> None:
    """A path column becomes inlineData (base64 of the file) and a URI column fileData, as the SDK's
    `Part.from_bytes` / `Part.from_uri` send them: media first, then the prompt text."""
    (tmp_path / "pixel.png").write_bytes(PNG)
    row = {"id": "r1", "q": "Describe both.", "image": "pixel.png", "doc": "gs://bucket/report.pdf"}
    job = write_job(tmp_path, "gemini-2.5-flash", "", row, 'media_field = "image"\nmedia_uri_field = "doc"')
    contents = [
        types.Part.from_bytes(data=PNG, mime_type="image/png"),
        types.Part.from_uri(file_uri="gs://bucket/report.pdf", mime_type="application/pdf"),
        "Describe both.",
    ]
    with CaptureServer() as server:
        await send_with_batchgen(server.url, job)
        await send_with_sdk(server.url, "gemini-2.5-flash", contents, types.GenerateContentConfig())
        ours, sdks = server.bodies()
    assert normalised(ours) == normalised(sdks)
    inline = ours["contents"][0]["parts"][0]["inlineData"]
    assert base64.b64decode(inline["data"], validate=True) == PNG  # the standard alphabet, with padding
    assert inline["mimeType"] == "image/png"


@pytest.mark.anyio
async def test_a_mime_column_types_a_uri_without_extension(tmp_path: Path) -> None:
    """A Files API URI has no extension: its MIME type comes from the row, as the SDK is told explicitly."""
    uri = "https://generativelanguage.googleapis.com/v1beta/files/abc123"
    row = {"id": "r1", "q": "Summarise.", "doc": uri, "mime": "application/pdf"}
    job = write_job(tmp_path, "gemini-2.5-flash", "", row, 'media_uri_field = "doc"\nmime_field = "mime"')
    contents = [types.Part.from_uri(file_uri=uri, mime_type="application/pdf"), "Summarise."]
    with CaptureServer() as server:
        await send_with_batchgen(server.url, job)
        await send_with_sdk(server.url, "gemini-2.5-flash", contents, types.GenerateContentConfig())
        ours, sdks = server.bodies()
    assert normalised(ours) == normalised(sdks)


@pytest.mark.anyio
async def test_a_contents_row_is_sent_like_the_sdks_content_list(tmp_path: Path) -> None:
    """A row's own `contents` (a multi-turn conversation) goes out exactly as the SDK sends a Content list."""
    turns = [
        {"role": "user", "parts": [{"text": "Name a prime."}]},
        {"role": "model", "parts": [{"text": "7"}]},
        {"role": "user", "parts": [{"text": "Another, larger one?"}]},
    ]
    job = write_job(tmp_path, "gemini-2.5-flash", "", {"id": "r1", "contents": turns})
    contents = [types.Content.model_validate(turn) for turn in turns]
    with CaptureServer() as server:
        await send_with_batchgen(server.url, job)
        await send_with_sdk(server.url, "gemini-2.5-flash", contents, types.GenerateContentConfig())
        ours, sdks = server.bodies()
    assert ours["contents"] == turns
    assert normalised(ours) == normalised(sdks)


@pytest.mark.anyio
async def test_batchgen_sends_only_camel_case_field_names(tmp_path: Path) -> None:
    """N1 is the SDK's quirk, not ours: every proto field name batchgen writes is lowerCamelCase (the names
    the API documents), so a proxy that only knows those still understands it."""
    (tmp_path / "pixel.png").write_bytes(PNG)
    request = (
        "generationConfig = { thinkingConfig = { thinkingBudget = 512, includeThoughts = true } }\n"
        f"tools = [{{ functionDeclarations = [{toml(WEATHER_TOOL)}] }}]"
    )
    row = {"id": "r1", "q": "hi", "image": "pixel.png"}
    job = write_job(tmp_path, "gemini-2.5-flash", request, row, 'media_field = "image"')
    with CaptureServer() as server:
        await send_with_batchgen(server.url, job)
        (ours,) = server.bodies()
    assert {name for name in _field_names(ours) if "_" in name} == {"city_name"}  # a property name: data


def _field_names(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(_field_names(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    return set(node) | set().union(*(_field_names(value) for value in node.values()))


# --- responses: the SDK against the local server ----------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with FakeServer(ServerConfig(api_key=KEY)) as server:
        yield server


@dataclass(frozen=True)
class Kind:
    """A request that makes the local server produce one response feature, and a check that it did."""

    prompt: str
    config: Callable[[], types.GenerateContentConfig | None]
    shows: Callable[[dict[str, Any]], bool]
    model: str = "gemini-2.5-flash"


def _candidate(raw: dict[str, Any]) -> dict[str, Any]:
    return dict(raw.get("candidates", [{}])[0])


def _parts(raw: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_candidate(raw).get("content", {}).get("parts", []))


def _config(**fields: Any) -> Callable[[], types.GenerateContentConfig]:
    return lambda: types.GenerateContentConfig(**fields)


_WEATHER_CALLS = _config(
    tools=[types.Tool(function_declarations=[types.FunctionDeclaration.model_validate(copy.deepcopy(WEATHER_TOOL))])],
    tool_config=types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY)
    ),
    automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
)

KINDS = [
    pytest.param(
        Kind("Why is the sky blue?", lambda: None, lambda raw: bool(_parts(raw)) and "usageMetadata" in raw),
        id="text",
    ),
    pytest.param(
        Kind(
            "Why is the sky blue?",
            _config(thinking_config=types.ThinkingConfig(include_thoughts=True)),
            lambda raw: any(p.get("thought") for p in _parts(raw)),
        ),
        id="thoughts",
    ),
    pytest.param(
        Kind(
            "Why is the sky blue?",
            _config(
                thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_level=types.ThinkingLevel.LOW)
            ),
            lambda raw: any("thoughtSignature" in p for p in _parts(raw)),
            model="gemini-3-flash-preview",
        ),
        id="thoughts-signature-gemini-3",
    ),
    pytest.param(
        Kind(
            "Who won the Euro 2024 final?",
            _config(tools=[types.Tool(google_search=types.GoogleSearch())]),
            lambda raw: "groundingMetadata" in _candidate(raw) and raw["usageMetadata"].get("toolUsePromptTokenCount"),
        ),
        id="grounding",
    ),
    pytest.param(
        Kind("What is the weather like in Lyon?", _WEATHER_CALLS, lambda raw: "functionCall" in _parts(raw)[0]),
        id="function-call",
    ),
    pytest.param(
        Kind(
            "Summarise the cached report.",
            _config(cached_content="cachedContents/report-1"),
            lambda raw: raw["usageMetadata"].get("cachedContentTokenCount", 0) > 0,
        ),
        id="cached-content",
    ),
    pytest.param(
        Kind(
            "Rate this review: great phone [[fake:blocked]]",
            lambda: None,
            lambda raw: "candidates" not in raw and raw["promptFeedback"]["blockReason"] == "SAFETY",
        ),
        id="blocked-prompt",
    ),
    pytest.param(
        Kind(
            "Rate this review: great phone [[fake:safety]]",
            lambda: None,
            lambda raw: _candidate(raw)["finishReason"] == "SAFETY" and "content" not in _candidate(raw),
        ),
        id="safety-stop",
    ),
    pytest.param(
        Kind(
            "Rate this review: great phone [[fake:max_tokens]]",
            lambda: None,
            lambda raw: _candidate(raw)["finishReason"] == "MAX_TOKENS",
        ),
        id="max-tokens",
    ),
    pytest.param(
        Kind(
            "Classify: the battery died after a week.",
            _config(response_mime_type="application/json", response_schema=SENTIMENT),
            lambda raw: isinstance(orjson.loads(_parts(raw)[0]["text"]), dict),
        ),
        id="json-mode",
    ),
]


async def sdk_exchange(client: Any, tap: CaptureServer, kind: Kind) -> tuple[types.GenerateContentResponse, Captured]:
    """The SDK's parsed response and the exchange the tap saw (request bytes, response bytes)."""
    response = await client.models.generate_content(model=kind.model, contents=kind.prompt, config=kind.config())
    return response, tap.requests[-1]


async def batchgen_generate(url: str, model: str, body: bytes, *, stream: bool = False) -> dict[str, Any]:
    async with GeminiClient(Endpoint(base_url=url, model=model, stream=stream), ApiKey(KEY)) as client:
        return dict(await client(body))


def assert_agree(sdk: types.GenerateContentResponse, reply: Reply, raw: dict[str, Any]) -> None:
    """What batchgen records from a response equals what the SDK's own types say about it: the SDK client's
    reading (`sdk`) for text, usage and calls, the SDK types' strict reading of the body (`raw`) for every
    metadata column (R9)."""
    candidate = sdk.candidates[0] if sdk.candidates else None
    parts = (candidate.content.parts or []) if candidate and candidate.content else []
    assert reply.text == sdk.text  # the SDK's .text leaves thought parts out, as the `text` column must
    assert reply.thoughts == ("".join(p.text for p in parts if p.thought and p.text) or None)
    assert reply.finish_reason == (candidate.finish_reason.value if candidate and candidate.finish_reason else None)
    feedback = sdk.prompt_feedback
    assert reply.block_reason == (feedback.block_reason.value if feedback and feedback.block_reason else None)
    assert reply.model_version == sdk.model_version and reply.response_id == sdk.response_id
    usage = sdk.usage_metadata
    assert usage is not None
    # A count absent from usageMetadata is 0 (proto3 leaves out zeros): batchgen stores 0, the SDK None.
    assert astuple(reply.usage)[:6] == (
        usage.prompt_token_count or 0,
        usage.candidates_token_count or 0,
        usage.thoughts_token_count or 0,
        usage.cached_content_token_count or 0,
        usage.tool_use_prompt_token_count or 0,
        usage.total_token_count or 0,
    )
    calls = [(c.name, c.args, c.id) for c in sdk.function_calls or []]
    assert [(c.name, c.args, c.id) for c in reply.function_calls] == calls
    assert metadata_row(reply) == sdk_metadata(strict_sdk_response(raw))


def strict_sdk_response(raw: dict[str, Any]) -> types.GenerateContentResponse:
    """The SDK's strict reading of a response body, serviceTier aside (R7)."""
    usage = {k: v for k, v in raw.get("usageMetadata", {}).items() if k != "serviceTier"}
    return types.GenerateContentResponse.model_validate({**raw, "usageMetadata": usage})


def metadata_row(reply: Reply) -> dict[str, Any]:
    """The reply-metadata columns batchgen writes for a reply (service_tier aside: R7)."""
    result = Result(
        "r",
        Status.OK,
        usage=reply.usage,
        function_calls=reply.function_calls,
        metadata=reply.metadata,
        finish_message=reply.finish_message,
        block_reason_message=reply.block_reason_message,
        traffic_type=reply.traffic_type,
        tool_parts=reply.tool_parts,
    )
    columns = metadata_columns([result])
    return {f.name: column[0].as_py() for f, column in zip(METADATA, columns, strict=True) if f.name != "service_tier"}


def _value(enum: Any) -> Any:
    return None if enum is None else enum.value


def _modalities(details: list[types.ModalityTokenCount] | None) -> list[dict[str, Any]] | None:
    if details is None:
        return None
    return [{"modality": _value(d.modality), "token_count": d.token_count or 0} for d in details]  # R8


def _tool_part(part: types.Part) -> dict[str, Any] | None:
    fields: dict[str, Any] = {}
    if part.executable_code:
        code = part.executable_code
        fields = {"kind": "executableCode", "id": code.id, "language": _value(code.language), "code": code.code}
    elif part.code_execution_result:
        result = part.code_execution_result
        fields = {"kind": "codeExecutionResult", "id": result.id, "outcome": _value(result.outcome)}
        fields["output"] = result.output
    elif part.tool_call:
        call = part.tool_call
        fields = {"kind": "toolCall", "id": call.id, "tool_type": _value(call.tool_type)}
        fields["args_json"] = None if call.args is None else orjson.dumps(call.args).decode()
    elif part.tool_response:
        answer = part.tool_response
        fields = {"kind": "toolResponse", "id": answer.id, "tool_type": _value(answer.tool_type)}
        fields["response_json"] = None if answer.response is None else orjson.dumps(answer.response).decode()
    else:
        return None
    empty = dict.fromkeys(("id", "tool_type", "language", "code", "outcome", "output", "args_json", "response_json"))
    return {**empty, **fields, "thought": bool(part.thought)}


def _chunk(chunk: types.GroundingChunk) -> dict[str, Any]:
    empty = dict.fromkeys(
        ("uri", "title", "domain", "text", "document_name", "file_search_store", "page_number", "place_id")
    )
    if chunk.web:
        web = chunk.web
        return {
            **empty,
            "kind": "web",
            "uri": web.uri,
            "title": web.title,
            "domain": web.domain,
            "custom_metadata": None,
        }
    context = chunk.retrieved_context
    assert context is not None, chunk
    custom = [
        {
            "key": m.key,
            "string_value": m.string_value,
            "string_list_value": m.string_list_value.values if m.string_list_value else None,
            "numeric_value": m.numeric_value,
        }
        for m in context.custom_metadata or []
    ]
    return {
        **empty,
        "kind": "retrievedContext",
        "uri": context.uri,
        "title": context.title,
        "text": context.text,
        "document_name": context.document_name,
        "file_search_store": context.file_search_store,
        "page_number": context.page_number,
        "custom_metadata": custom if context.custom_metadata is not None else None,
    }


def sdk_metadata(sdk: types.GenerateContentResponse) -> dict[str, Any]:
    """The same columns read from the SDK's types. A start index the wire leaves out is 0 (proto3 default)."""
    usage = sdk.usage_metadata
    feedback = sdk.prompt_feedback
    candidate = sdk.candidates[0] if sdk.candidates else None
    parts = (candidate.content.parts or []) if candidate and candidate.content else []
    calls = [
        {"name": c.name, "args_json": orjson.dumps(c.args or {}).decode(), "id": c.id} for c in sdk.function_calls or []
    ]
    tool_parts = [p for p in map(_tool_part, parts) if p is not None]
    common = {
        "finish_message": candidate.finish_message if candidate else None,
        "block_reason_message": feedback.block_reason_message if feedback else None,
        "traffic_type": _value(usage.traffic_type) if usage else None,
        "error_details": None,
        "prompt_tokens_details": _modalities(usage.prompt_tokens_details) if usage else None,
        "candidates_tokens_details": _modalities(usage.candidates_tokens_details) if usage else None,
        "cache_tokens_details": _modalities(usage.cache_tokens_details) if usage else None,
        "tool_use_prompt_tokens_details": _modalities(usage.tool_use_prompt_tokens_details) if usage else None,
        "function_calls": calls or None,
        "tool_parts": tool_parts or None,
    }
    if candidate is None:
        ratings = feedback.safety_ratings if feedback else None
        rows = None if ratings is None else [_rating(r) for r in ratings]
        rest = {name: None for name in METADATA.names if name not in common and name != "service_tier"}
        return {**common, **rest, "safety_ratings": rows}
    grounding = candidate.grounding_metadata
    citations = candidate.citation_metadata
    entry = grounding.search_entry_point if grounding else None
    retrieval = grounding.retrieval_metadata if grounding else None
    return {
        **common,
        "grounding_queries": grounding.web_search_queries if grounding else None,
        "grounding_chunks": [_chunk(c) for c in grounding.grounding_chunks or []]
        if grounding and grounding.grounding_chunks is not None
        else None,
        "grounding_entry_point": entry.rendered_content if entry else None,
        "grounding_retrieval_score": retrieval.google_search_dynamic_retrieval_score if retrieval else None,
        "grounding_supports": [
            {
                "start_index": s.segment.start_index or 0,
                "end_index": s.segment.end_index,
                "text": s.segment.text,
                "chunk_indices": s.grounding_chunk_indices,
                "confidence": s.confidence_scores,
            }
            for s in grounding.grounding_supports or []
            if s.segment
        ]
        if grounding and grounding.grounding_supports is not None
        else None,
        "citations": [
            {
                "start_index": c.start_index or 0,
                "end_index": c.end_index,
                "uri": c.uri,
                "title": c.title,
                "license": c.license,
            }
            for c in citations.citations or []
        ]
        if citations
        else None,
        "safety_ratings": [_rating(r) for r in candidate.safety_ratings]
        if candidate.safety_ratings is not None
        else None,
        "avg_logprobs": candidate.avg_logprobs,
        "url_context": [
            {"url": u.retrieved_url, "status": u.url_retrieval_status.value if u.url_retrieval_status else None}
            for u in candidate.url_context_metadata.url_metadata or []
        ]
        if candidate.url_context_metadata and candidate.url_context_metadata.url_metadata is not None
        else None,
    }


def _rating(rating: types.SafetyRating) -> dict[str, Any]:
    return {"category": _value(rating.category), "probability": _value(rating.probability), "blocked": rating.blocked}


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_every_response_kind_parses_with_the_sdk_types_and_batchgen_agrees(fake: FakeServer, kind: Kind) -> None:
    """The SDK parses what the local server sends with its own types, strictly (unknown fields and enum values
    are errors), and batchgen's parser reads the same bytes, sent again over its own client, the same way."""
    with CaptureServer(upstream=fake.url) as tap:
        async with sdk_client(tap.url) as client:
            sdk, exchange = await sdk_exchange(client, tap, kind)
    assert exchange.status == 200
    raw = orjson.loads(exchange.response)
    assert kind.shows(raw), raw  # the local server did produce the feature under test
    strict_sdk_response(raw)  # extra="forbid": every field is one the SDK knows
    reply = parse_response(decode_json(exchange.response))
    assert_agree(sdk, reply, raw)
    assert reply.service_tier == raw["usageMetadata"]["serviceTier"] == "standard"  # R7
    # The same request bytes sent by batchgen's own client get the same answer (a fresh responseId aside).
    data = await batchgen_generate(fake.url, kind.model, exchange.raw)
    assert parse_response(data) == replace(reply, response_id=data["responseId"])
    if kind.model.startswith("gemini-2.5") and not reply.block_reason:
        assert reply.usage.thoughts and reply.usage.thoughts > 0  # 2.5 Flash thinks by default


@pytest.mark.anyio
async def test_citations_parse_alike(fake: FakeServer) -> None:
    """citationMetadata (`citationSources` on the wire, `.citations` in the SDK) comes out the same."""
    with CaptureServer(upstream=fake.url) as tap:
        async with sdk_client(tap.url) as client:
            # The local server cites a source in about one answer in eight; find one deterministically.
            for number in range(64):
                kind = Kind(f"Quote a famous line, take {number}.", lambda: None, lambda raw: True)
                sdk, exchange = await sdk_exchange(client, tap, kind)
                if sdk.candidates and sdk.candidates[0].citation_metadata:
                    break
            else:
                pytest.fail("the local server produced no citation in 64 answers")
    reply = parse_response(orjson.loads(exchange.response))
    assert_agree(sdk, reply, orjson.loads(exchange.response))
    assert metadata_row(reply)["citations"][0]["uri"].startswith("https://")


@pytest.mark.anyio
async def test_json_mode_output_equals_the_sdks_parsed_value(fake: FakeServer) -> None:
    """With a responseSchema, the value batchgen validates and stores is the SDK's `.parsed`."""
    kind = KINDS[-1].values[0]
    assert isinstance(kind, Kind)
    with CaptureServer(upstream=fake.url) as tap:
        async with sdk_client(tap.url) as client:
            sdk, exchange = await sdk_exchange(client, tap, kind)
    verdict = judge(parse_response(orjson.loads(exchange.response)), json_mode=True, validator=None)
    assert verdict.status is Status.OK
    assert verdict.output == sdk.parsed


STREAM_KINDS = [
    param
    for param in KINDS
    if param.id in ("text", "thoughts", "thoughts-signature-gemini-3", "grounding", "function-call", "blocked-prompt")
]


def decode_in_slices(raw: bytes, size: int) -> list[Any]:
    """batchgen's SSE decoder fed `raw` in `size`-byte slices, as a slow network would deliver it."""
    decoder = SseDecoder()
    events = [event for start in range(0, len(raw), size) for event in decoder.feed(raw[start : start + size])]
    return events + list(decoder.close())


@pytest.mark.anyio
@pytest.mark.parametrize("kind", STREAM_KINDS)
async def test_stream_agrees_with_the_sdk_and_with_the_unary_call(fake: FakeServer, kind: Kind) -> None:
    """`:streamGenerateContent?alt=sse`: batchgen decodes the events the SDK decoded (the same bytes, fed in
    7-byte slices), merges them to the SDK's concatenated text and final usage, and the merge equals the unary
    answer to the same request."""
    with CaptureServer(upstream=fake.url) as tap:
        async with sdk_client(tap.url) as client:
            stream = await client.models.generate_content_stream(
                model=kind.model, contents=kind.prompt, config=kind.config()
            )
            chunks = [chunk async for chunk in stream]
        exchange = tap.requests[-1]
    assert exchange.path.endswith(":streamGenerateContent") and exchange.query == {"alt": "sse"}
    events = decode_in_slices(exchange.response, 7)
    assert len(events) == len(chunks) >= 1
    for event in events:
        strict_sdk_response(event)
    merged = parse_response(merge_stream(events))
    parts = [p for c in chunks if c.candidates and c.candidates[0].content for p in c.candidates[0].content.parts or []]
    assert merged.text == ("".join(c.text or "" for c in chunks) or None)
    assert merged.thoughts == ("".join(p.text for p in parts if p.thought and p.text) or None)
    assert [(c.name, c.args) for c in merged.function_calls] == [
        (f.name, f.args) for c in chunks for f in c.function_calls or []
    ]
    final = chunks[-1].usage_metadata
    assert final is not None
    assert merged.usage.total == final.total_token_count and merged.usage.prompt == final.prompt_token_count
    assert merged.usage.candidates == (final.candidates_token_count or 0)
    assert merged.usage.thoughts == (final.thoughts_token_count or 0)
    assert merged.usage.tool_use == (final.tool_use_prompt_token_count or 0)
    assert merged.block_reason == (chunks[0].prompt_feedback.block_reason.value if merged.block_reason else None)
    # batchgen's own client, streaming and unary, sent the SDK's request bytes: the same reply.
    streamed = parse_response(await batchgen_generate(fake.url, kind.model, exchange.raw, stream=True))
    unary = parse_response(await batchgen_generate(fake.url, kind.model, exchange.raw))
    assert replace(streamed, response_id=None) == replace(merged, response_id=None)
    assert replace(unary, response_id=None, metadata={}) == replace(merged, response_id=None, metadata={})
    assert {k: v for k, v in unary.metadata.items() if k != "avgLogprobs"} == merged.metadata


@pytest.mark.anyio
async def test_count_tokens_agrees_with_the_sdk(fake: FakeServer) -> None:
    """countTokens: the SDK sends `{contents}`, batchgen a `{generateContentRequest}` (so system instruction and
    tools count too, which the SDK refuses on the Gemini API); for plain contents both shapes give one count."""
    text = "Count the tokens in this sentence, and then count them again."
    with CaptureServer(upstream=fake.url) as tap:
        async with sdk_client(tap.url) as client:
            counted = await client.models.count_tokens(model="gemini-2.5-flash", contents=text)
        endpoint = Endpoint(base_url=tap.url, model="gemini-2.5-flash")
        async with GeminiClient(endpoint, ApiKey(KEY)) as ours:
            total = await ours.count_tokens(RequestTemplate({}).render(user_contents(text)))
        sdk_body, our_body = tap.bodies("countTokens")
    assert total == counted.total_tokens and total > 0
    assert normalised(sdk_body) == {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    assert our_body == {
        "generateContentRequest": {"model": "models/gemini-2.5-flash", "contents": sdk_body["contents"]}
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("prompt", "key", "ours"),
    [
        pytest.param("hi [[fake:429]]", KEY, RateLimited, id="429-rate-limited"),
        pytest.param("hi [[fake:429day]]", KEY, QuotaExhausted, id="429-daily-quota"),
        pytest.param("hi [[fake:500]]", KEY, ServerError, id="500"),
        pytest.param("hi [[fake:503]]", KEY, ServerError, id="503"),
        pytest.param("hi", "wrong-key-0000", AuthError, id="400-api-key-invalid"),
    ],
)
async def test_error_bodies_read_alike(fake: FakeServer, prompt: str, key: str, ours: type[ApiError]) -> None:
    """The SDK's `APIError` and batchgen's error mapping read the same code, status and message from the
    local server's google.rpc error bodies (batchgen then decides: retry, wait, or stop)."""
    with CaptureServer(upstream=fake.url) as tap:
        async with sdk_client(tap.url, key=key) as client:
            with pytest.raises(genai_errors.APIError) as sdk:
                await client.models.generate_content(model="gemini-2.5-flash", contents=prompt)
        exchange = tap.requests[-1]
    mapped = error_from_response(exchange.status, exchange.response)
    assert isinstance(mapped, ours)
    assert (mapped.http_status, mapped.status) == (sdk.value.code, sdk.value.status)
    assert str(mapped).endswith(str(sdk.value.message))


def _event(text: str, *, final: bool = False) -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    event: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-2.5-flash", "responseId": "r-1"}
    if final:
        candidate["finishReason"] = "STOP"
        event["usageMetadata"] = {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}
    return orjson.dumps(event)


_MULTILINE = (
    b'data: {"candidates": [{"content": {"role": "model",\n'
    b'data:  "parts": [{"text": "Hello, world."}]}, "finishReason": "STOP", "index": 0}],\n'
    b'data: "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}}\n\n'
)
FRAMINGS = {
    "crlf": b"data: " + _event("Hello, ") + b"\r\n\r\ndata: " + _event("world.", final=True) + b"\r\n\r\n",
    "multi-line-data": _MULTILINE,
    "comments": b": keep-alive\n\ndata: "
    + _event("Hello, ")
    + b"\n\n: ping\ndata: "
    + _event("world.", final=True)
    + b"\n\n",
    "no-space-after-colon": b"data:" + _event("Hello, ") + b"\n\ndata:" + _event("world.", final=True) + b"\n\n",
    "event-and-id-fields": b"event: message\nid: 1\ndata: " + _event("Hello, world.", final=True) + b"\n\n",
}


@pytest.mark.anyio
@pytest.mark.parametrize("framing", list(FRAMINGS))
async def test_sse_framing_is_read_incrementally_over_http(framing: str) -> None:
    """A stream trickled a few bytes per write: CRLF line ends, `data:` fields over several lines, comments,
    `data:` without a space and other SSE fields all decode to the same reply. The SDK reads the first two
    alike; it fails on the last three (it treats any line not starting `data: ` as part of an error object),
    which the SSE specification allows and batchgen accepts."""
    with CaptureServer(sse=FRAMINGS[framing]) as server:
        endpoint = Endpoint(base_url=server.url, model="gemini-2.5-flash", stream=True)
        async with GeminiClient(endpoint, ApiKey(KEY)) as client:
            reply = parse_response(await client(RequestTemplate({}).render(user_contents("hi"))))
        if framing in ("crlf", "multi-line-data"):
            async with sdk_client(server.url) as sdk:
                chunks = [
                    c async for c in await sdk.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")
                ]
            assert reply.text == "".join(c.text or "" for c in chunks)
            final = chunks[-1].usage_metadata
            assert final is not None and reply.usage.total == final.total_token_count
    assert server.requests[0].query == {"alt": "sse"}
    assert (reply.text, reply.finish_reason, reply.usage.total) == ("Hello, world.", "STOP", 7)


# --- responses: the SDK's types on real recorded bodies ---------------------------------------------------------

UNARY_RECORDINGS = [rec for rec in load_all() if rec.kind == "unary"]


def _without_placeholders(node: Any) -> Any:
    """A recorded body minus the values its recorders shortened or replaced (thoughtSignature, inline data),
    which are no longer valid base64 for the SDK's bytes fields."""
    if isinstance(node, list):
        return [_without_placeholders(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {k: _without_placeholders(v) for k, v in node.items() if k not in ("thoughtSignature", "inlineData")}


@pytest.mark.parametrize("rec", UNARY_RECORDINGS, ids=[rec.name for rec in UNARY_RECORDINGS])
def test_recorded_responses_read_as_the_sdk_types_read_them(rec: Recording) -> None:
    """Every real recorded unary response (tests/recorded) parses with the SDK's types, strictly, and each
    reply-metadata column batchgen writes for it equals the same field read through those types."""
    sdk = strict_sdk_response(_without_placeholders(rec.body))
    reply = parse_response(rec.body)
    assert metadata_row(reply) == sdk_metadata(sdk)
    assert reply.service_tier == rec.body.get("usageMetadata", {}).get("serviceTier")  # R7
