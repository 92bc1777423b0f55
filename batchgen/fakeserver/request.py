"""Parse and check a GenerateContentRequest body the way the API does where that is cheap.

The result is a `GenerateRequest`: only what the fake needs to answer (prompt text and token count, output
mode and schema, thinking, tools). Field names are proto JSON: lowerCamelCase, with the original snake_case
spelling accepted too, as Google's JSON parser does. Every refusal is an `RpcError` (400 INVALID_ARGUMENT).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from batchgen.fakeserver.dialects import SchemaRejected
from batchgen.fakeserver.errors import RpcError, bad_enum, field_violation, invalid_argument, unknown_field
from batchgen.fakeserver.faults import Directive, parse_directives
from batchgen.fakeserver.fields import (
    CATEGORIES,
    FUNCTION_FIELDS,
    GENERATION_FIELDS,
    MIME_TYPES,
    MODES,
    PART_DATA,
    PART_FIELDS,
    SCHEMA_MIME_TYPES,
    THRESHOLDS,
    TOOL_FIELDS,
    TOP_FIELDS,
)
from batchgen.fakeserver.models import Thinking, plan_thinking
from batchgen.fakeserver.schema import CompiledSchema, SchemaCache
from batchgen.fakeserver.tokens import count_chars

_ROLES = frozenset({"user", "model", ""})
# An image, audio clip or file part costs a flat amount, like a single image does in the API.
_MEDIA_TOKENS = 258
_MAX_CANDIDATES = 8


@dataclass(frozen=True, slots=True)
class FunctionDecl:
    """A declared function and the compiled schema of its arguments (None: no parameters)."""

    name: str
    parameters: CompiledSchema | None


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """What a generateContent call asks for, checked."""

    model: str
    prompt: str
    prompt_tokens: int
    cached_tokens: int
    mime_type: str
    schema: CompiledSchema | None
    thinking: Thinking
    candidate_count: int
    max_output_tokens: int | None
    stop_sequences: tuple[str, ...]
    functions: tuple[FunctionDecl, ...]
    function_mode: str
    allowed_functions: tuple[str, ...]
    google_search: bool
    directives: tuple[Directive, ...]

    @property
    def json_mode(self) -> bool:
        return self.mime_type == "application/json"


def load_body(body: bytes) -> dict[str, Any]:
    """The JSON object in a request body; an empty body is an empty object, as for the API."""
    if not body.strip():
        return {}
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid_argument(f"Invalid JSON payload received. {exc}") from exc
    if not isinstance(payload, dict):
        raise invalid_argument('Invalid JSON payload received. Unknown name "": Root element must be a message.')
    return payload


def _proto_keys(message: Any, where: str) -> dict[str, Any]:
    """`message` with snake_case field names turned into lowerCamelCase; refuses a non-object."""
    if not isinstance(message, dict):
        raise invalid_argument(f"Invalid JSON payload received. Expected an object for '{where}'.")
    if not any("_" in key for key in message):
        return message
    out = {}
    for key, value in message.items():
        if "_" in key.lstrip("_"):
            head, *rest = key.split("_")
            key = head + "".join(part.capitalize() for part in rest)
        out[key] = value
    return out


def _check_fields(message: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    for key in message:
        if key not in allowed:
            raise unknown_field(key, where)


@dataclass(slots=True)
class _Prompt:
    """Running totals while walking contents, system instruction and tools."""

    chars: int = 0
    media_tokens: int = 0
    last_text: str = ""
    all_text: str = ""


def _walk_content(content: Any, where: str, totals: _Prompt, *, need_role: bool) -> str:
    content = _proto_keys(content, where)
    _check_fields(content, frozenset({"role", "parts"}), where)
    if need_role and content.get("role", "") not in _ROLES:
        raise invalid_argument("Please use a valid role: user, model.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise field_violation(f"{where}.parts", "contents.parts must not be empty.")
    texts = []
    for index, part in enumerate(parts):
        part_where = f"{where}.parts[{index}]"
        part = _proto_keys(part, part_where)
        _check_fields(part, PART_FIELDS, part_where)
        data = [key for key in part if key in PART_DATA]
        if not data:
            raise field_violation(f"{part_where}.data", "required oneof field 'data' must have one initialized field")
        if "text" in part:
            if not isinstance(part["text"], str):
                raise bad_enum(f"{part_where}.text", "Part", part["text"])
            texts.append(part["text"])
            totals.chars += len(part["text"])
        elif data[0] in ("inlineData", "fileData"):
            totals.media_tokens += _MEDIA_TOKENS
        else:
            totals.chars += len(orjson.dumps(part[data[0]]))
    return "\n".join(texts)


def _walk_contents(payload: Mapping[str, Any], totals: _Prompt) -> None:
    contents = payload.get("contents")
    if not isinstance(contents, list) or not contents:
        raise field_violation("contents", "contents is not specified")
    texts = [_walk_content(c, f"contents[{i}]", totals, need_role=True) for i, c in enumerate(contents)]
    totals.last_text = texts[-1]
    totals.all_text = "\n".join(texts)


def _cached_tokens(name: Any) -> int:
    if name is None:
        return 0
    if not isinstance(name, str) or not name.startswith("cachedContents/") or name == "cachedContents/":
        raise field_violation("cached_content", "must be a resource name of the form cachedContents/{id}")
    # A fixed size per cache name, at least the 1024-token minimum the API requires of a cache.
    return 1024 + zlib.crc32(name.encode()) % 4096


def parse_generate(model: str, payload: Mapping[str, Any], schemas: SchemaCache) -> GenerateRequest:
    """Check a GenerateContentRequest body for `model`; raise RpcError where the API would refuse it."""
    payload = _proto_keys(payload, "")
    _check_fields(payload, TOP_FIELDS, "")
    totals = _Prompt()
    _walk_contents(payload, totals)
    if payload.get("systemInstruction") is not None:
        _walk_content(payload["systemInstruction"], "system_instruction", totals, need_role=False)
    functions, google_search = _parse_tools(payload.get("tools"), schemas, totals)
    mode, allowed = _parse_tool_config(payload.get("toolConfig"))
    _check_safety(payload.get("safetySettings"))
    cached = _cached_tokens(payload.get("cachedContent"))
    if cached and any(payload.get(k) for k in ("systemInstruction", "tools", "toolConfig")):
        raise invalid_argument(
            "CachedContent can not be used with GenerateContent request setting system_instruction, tools or "
            "tool_config.\n\nProposed fix: move those values to CachedContent from GenerateContent request."
        )
    config = _proto_keys(payload.get("generationConfig") or {}, "generation_config")
    _check_fields(config, GENERATION_FIELDS | {"_responseJsonSchema"}, "generation_config")
    _check_sampling(config)
    mime_type, schema = _parse_output(config, schemas)
    try:
        directives = parse_directives(totals.all_text)
    except ValueError as exc:
        raise invalid_argument(str(exc)) from exc
    return GenerateRequest(
        model=model,
        prompt=totals.last_text,
        prompt_tokens=count_chars(totals.chars) + totals.media_tokens + cached,
        cached_tokens=cached,
        mime_type=mime_type,
        schema=schema,
        thinking=plan_thinking(model, _proto_keys(config.get("thinkingConfig") or {}, "thinking_config")),
        candidate_count=_candidate_count(config),
        max_output_tokens=_max_output_tokens(config),
        stop_sequences=_stop_sequences(config),
        functions=functions,
        function_mode=mode,
        allowed_functions=allowed,
        google_search=google_search,
        directives=directives,
    )


def _parse_tools(tools: Any, schemas: SchemaCache, totals: _Prompt) -> tuple[tuple[FunctionDecl, ...], bool]:
    if tools is None:
        return (), False
    if not isinstance(tools, list):
        raise invalid_argument("Invalid JSON payload received. Expected a list for 'tools'.")
    functions: list[FunctionDecl] = []
    search = False
    for index, tool in enumerate(tools):
        tool = _proto_keys(tool, f"tools[{index}]")
        _check_fields(tool, TOOL_FIELDS, f"tools[{index}]")
        search = search or "googleSearch" in tool or "googleSearchRetrieval" in tool
        declarations = tool.get("functionDeclarations") or []
        # The declarations are sent to the model as text, so they count as prompt.
        totals.chars += len(orjson.dumps(declarations)) if declarations else 0
        for number, declaration in enumerate(declarations):
            where = f"tools[{index}].function_declarations[{number}]"
            functions.append(_parse_function(_proto_keys(declaration, where), where, schemas))
    return tuple(functions), search


def _parse_function(declaration: dict[str, Any], where: str, schemas: SchemaCache) -> FunctionDecl:
    _check_fields(declaration, FUNCTION_FIELDS, where)
    name = declaration.get("name")
    if not isinstance(name, str) or not name:
        raise field_violation(f"{where}.name", "Name cannot be empty.")
    try:
        if declaration.get("parameters") is not None:
            return FunctionDecl(name, schemas.get("openapi", declaration["parameters"], f"{where}.parameters"))
        if declaration.get("parametersJsonSchema") is not None:
            schema = declaration["parametersJsonSchema"]
            return FunctionDecl(name, schemas.get("jsonschema", schema, f"{where}.parameters_json_schema"))
    except SchemaRejected as exc:
        raise invalid_argument(str(exc)) from exc
    return FunctionDecl(name, None)


def _parse_tool_config(tool_config: Any) -> tuple[str, tuple[str, ...]]:
    if tool_config is None:
        return "AUTO", ()
    calling = _proto_keys(_proto_keys(tool_config, "tool_config").get("functionCallingConfig") or {}, "x")
    mode = calling.get("mode", "AUTO")
    if mode not in MODES:
        raise bad_enum("tool_config.function_calling_config.mode", "FunctionCallingConfig.Mode", mode)
    allowed = calling.get("allowedFunctionNames") or []
    if allowed and mode not in ("ANY", "VALIDATED"):
        raise field_violation(
            "tool_config.function_calling_config.allowed_function_names",
            "only allowed when mode is ANY or VALIDATED.",
        )
    return ("AUTO" if mode == "MODE_UNSPECIFIED" else mode), tuple(allowed)


def _check_safety(settings: Any) -> None:
    if settings is None:
        return
    seen = set()
    for index, setting in enumerate(settings if isinstance(settings, list) else [settings]):
        setting = _proto_keys(setting, f"safety_settings[{index}]")
        category, threshold = setting.get("category"), setting.get("threshold")
        if category not in CATEGORIES:
            raise bad_enum(f"safety_settings[{index}].category", "HarmCategory", category)
        if threshold not in THRESHOLDS:
            raise bad_enum(f"safety_settings[{index}].threshold", "SafetySetting.HarmBlockThreshold", threshold)
        if category in seen:
            raise field_violation("safety_settings", f"duplicate category {category}.")
        seen.add(category)


def _parse_output(config: Mapping[str, Any], schemas: SchemaCache) -> tuple[str, CompiledSchema | None]:
    mime_type = config.get("responseMimeType", "text/plain")
    if mime_type not in MIME_TYPES:
        raise field_violation(
            "generation_config.response_mime_type",
            "allowed mimetypes are `text/plain`, `application/json`, `application/xml`, "
            "`application/yaml` and `text/x.enum`.",
        )
    open_api = config.get("responseSchema")
    json_schema = config.get("responseJsonSchema", config.get("_responseJsonSchema"))
    if open_api is not None and json_schema is not None:
        raise field_violation(
            "generation_config.response_schema",
            "response_schema and response_json_schema cannot both be set.",
        )
    if open_api is None and json_schema is None:
        if mime_type == "text/x.enum":
            raise field_violation(
                "generation_config.response_schema",
                "an enum schema is required for response_mime_type text/x.enum.",
            )
        return mime_type, None
    if mime_type not in SCHEMA_MIME_TYPES:
        raise field_violation(
            "generation_config.response_mime_type",
            "a response schema needs response_mime_type application/json or text/x.enum.",
        )
    try:
        if open_api is not None:
            schema = schemas.get("openapi", open_api, "generation_config.response_schema")
        else:
            schema = schemas.get("jsonschema", json_schema, "generation_config.response_json_schema")
    except SchemaRejected as exc:
        raise invalid_argument(str(exc)) from exc
    if mime_type == "text/x.enum" and schema.enum_values() is None:
        raise field_violation(
            "generation_config.response_schema", "text/x.enum needs a STRING schema with enum values."
        )
    return mime_type, schema


def _int_field(config: Mapping[str, Any], key: str, where: str) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RpcError(
            400,
            "INVALID_ARGUMENT",
            f"Invalid value at '{where}' (TYPE_INT32), {orjson.dumps(value).decode()}",
        )
    return value


def _candidate_count(config: Mapping[str, Any]) -> int:
    count = _int_field(config, "candidateCount", "generation_config.candidate_count")
    if count is None or count == 0:
        return 1
    if not 1 <= count <= _MAX_CANDIDATES:
        raise field_violation("generation_config.candidate_count", "must be in [1, 8].")
    return count


def _max_output_tokens(config: Mapping[str, Any]) -> int | None:
    value = _int_field(config, "maxOutputTokens", "generation_config.max_output_tokens")
    if value is not None and value < 0:
        raise field_violation("generation_config.max_output_tokens", "must be positive.")
    # 0 is the proto default: unset.
    return value or None


def _stop_sequences(config: Mapping[str, Any]) -> tuple[str, ...]:
    stops = config.get("stopSequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid_argument("Invalid JSON payload received. Expected a list of strings for 'stop_sequences'.")
    if len(stops) > 5:
        raise field_violation("generation_config.stop_sequences", "at most 5 stop sequences are allowed.")
    return tuple(s for s in stops if s)


def _check_sampling(config: Mapping[str, Any]) -> None:
    for key, low, high in (("temperature", 0.0, 2.0), ("topP", 0.0, 1.0)):
        value = config.get(key)
        if value is not None and (not isinstance(value, (int, float)) or not low <= value <= high):
            raise field_violation(f"generation_config.{key}", f"must be in [{low:g}, {high:g}].")


def count_tokens(model: str, payload: Mapping[str, Any], schemas: SchemaCache) -> dict[str, Any]:
    """The countTokens answer for either request shape: `contents`, or a whole `generateContentRequest`."""
    payload = _proto_keys(payload, "")
    _check_fields(payload, frozenset({"contents", "generateContentRequest"}), "")
    nested = payload.get("generateContentRequest")
    if nested is not None:
        request = parse_generate(model, nested, schemas)
        total, cached = request.prompt_tokens, request.cached_tokens
    else:
        totals = _Prompt()
        _walk_contents(payload, totals)
        total, cached = count_chars(totals.chars) + totals.media_tokens, 0
    answer: dict[str, Any] = {"totalTokens": total}
    if cached:
        answer["cachedContentTokenCount"] = cached
    answer["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": total}]
    return answer
