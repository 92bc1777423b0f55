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

Responses: the SDK is pointed at the local fake server; every response kind it produces must parse with the
SDK's own types and agree with `gemini.parse_response` field by field.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from google import genai
from google.genai import types
from servers import CaptureServer

from batchgen.client import Endpoint, GeminiClient
from batchgen.gemini import RequestTemplate
from batchgen.job import Job, load_job
from batchgen.prompts import PromptBuilder
from batchgen.reader import InputSource
from batchgen.secret import ApiKey

KEY = "sdk-compat-key-4b7e"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
)
# Bytes whose base64 differs between the standard and the URL-safe alphabet.
BINARY = bytes([0xFB, 0xFF, 0xFE, 0x00, 0x3E, 0x3F])


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
    return out


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


def job_builder(job: Job) -> PromptBuilder:
    return PromptBuilder(
        id_field=job.input.id_field,
        prompt_template=job.input.prompt_template,
        prompt_field=job.input.prompt_field,
        contents_field=job.input.contents_field,
        keep_columns=job.output.keep_columns,
        media_field=job.input.media_field,
        media_uri_field=job.input.media_uri_field,
        mime_field=job.input.mime_field,
        media_root=job.input.path.parent,
    )


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
    source = InputSource(job.input.path, job_builder(job))
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
WEATHER_TOOL = {
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
                tools=[types.Tool(function_declarations=[types.FunctionDeclaration(**copy.deepcopy(WEATHER_TOOL))])],
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
                cached_content="cachedContents/abc123", service_tier="flex", labels={"team": "research"}
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
    job = write_job(tmp_path, case.model, case.request, {"id": "r1", "q": "Is this review positive?"})
    with CaptureServer() as server:
        await send_with_batchgen(server.url, job)
        await send_with_sdk(server.url, case.model, "Is this review positive?", case.config())
        ours, sdks = server.bodies()
        assert [c.path for c in server.requests] == [f"v1beta/models/{case.model}:generateContent"] * 2
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
