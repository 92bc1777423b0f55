"""JSON mode of the fake server: answers conform to `responseSchema` and `responseJsonSchema`, construct by
construct, checked with the `jsonschema` library over real HTTP; plus the pattern generator on its own."""

from __future__ import annotations

import random
import re
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest

from batchgen.fakeserver import FakeServer, ServerConfig
from batchgen.fakeserver.patterns import PatternError, compile_pattern

KEY = "schema-key"
SAMPLES = 8
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")


@pytest.fixture
def server_config() -> ServerConfig:
    return ServerConfig(api_key=KEY)


async def documents(
    session: aiohttp.ClientSession, server: FakeServer, config: dict[str, Any], count: int = SAMPLES
) -> list[Any]:
    """`count` JSON documents answered for different prompts under generationConfig `config`."""
    found = []
    for number in range(count):
        payload = {
            "contents": [{"parts": [{"text": f"Describe lighthouse keepers and storms, take {number}"}]}],
            "generationConfig": {"responseMimeType": "application/json", **config},
        }
        url = f"{server.url}/v1beta/models/gemini-2.5-flash:generateContent"
        async with session.post(url, data=orjson.dumps(payload), headers={"x-goog-api-key": KEY}) as response:
            answer = orjson.loads(await response.read())
            assert response.status == 200, answer
        candidate = answer["candidates"][0]
        assert candidate["finishReason"] == "STOP"
        found.append(orjson.loads("".join(p["text"] for p in candidate["content"]["parts"])))
    return found


def openapi_to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The test's own reading of Gemini's OpenAPI subset as JSON Schema (no extra keys allowed)."""
    out: dict[str, Any] = {}
    kind = schema.get("type", "").lower()
    if kind:
        out["type"] = kind
    if "enum" in schema:
        cast = {"integer": int, "number": float}.get(kind, str)
        out["enum"] = [cast(v) for v in schema["enum"]]
    for key in ("minimum", "maximum", "pattern", "required"):
        if key in schema:
            out[key] = schema[key]
    for key in _COUNTS:
        if key in schema:
            out[key] = int(schema[key])
    if "items" in schema:
        out["items"] = openapi_to_json_schema(schema["items"])
    if "properties" in schema:
        out["properties"] = {k: openapi_to_json_schema(v) for k, v in schema["properties"].items()}
        out["additionalProperties"] = False
    if "anyOf" in schema:
        out["anyOf"] = [openapi_to_json_schema(s) for s in schema["anyOf"]]
    return {"anyOf": [out, {"type": "null"}]} if schema.get("nullable") else out


PERSON = {
    "type": "OBJECT",
    "properties": {
        "name": {"type": "STRING", "description": "full name"},
        "age": {"type": "INTEGER", "minimum": 0, "maximum": 120, "format": "int32"},
        "email": {"type": "STRING", "format": "email"},
    },
    "required": ["name", "age"],
}

OPENAPI_CASES = [
    pytest.param({"type": "STRING"}, id="string"),
    pytest.param({"type": "string", "title": "lower-case type"}, id="lowercase-type"),
    pytest.param({"type": "STRING", "minLength": 30, "maxLength": 40}, id="string-length"),
    pytest.param({"type": "STRING", "maxLength": "3"}, id="int64-as-string"),
    pytest.param({"type": "STRING", "pattern": r"^[A-Z]{2}-\d{3,5}(-[a-z]+)?$"}, id="pattern"),
    pytest.param({"type": "STRING", "enum": ["red", "green", "blue"]}, id="enum"),
    pytest.param({"type": "INTEGER", "format": "enum", "enum": ["1", "2", "3"]}, id="integer-enum"),
    pytest.param({"type": "INTEGER", "minimum": -5, "maximum": 5}, id="integer-bounds"),
    pytest.param({"type": "NUMBER", "minimum": 0.5, "maximum": 0.75, "format": "double"}, id="number-bounds"),
    pytest.param({"type": "NUMBER", "minimum": 1e6}, id="number-minimum-only"),
    pytest.param({"type": "BOOLEAN"}, id="boolean"),
    pytest.param({"type": "NULL"}, id="null"),
    pytest.param({"type": "STRING", "nullable": True}, id="nullable"),
    pytest.param({"type": "ARRAY", "items": {"type": "INTEGER"}, "minItems": 2, "maxItems": 4}, id="array-bounds"),
    pytest.param(PERSON, id="object-required"),
    pytest.param({**PERSON, "minProperties": 3}, id="min-properties"),
    pytest.param(
        {
            "type": "OBJECT",
            "properties": {"a": {"type": "STRING"}, "b": {"type": "STRING"}},
            "maxProperties": 1,
        },
        id="max-properties",
    ),
    pytest.param({"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}, id="any-of"),
    pytest.param(
        {"type": "ARRAY", "items": {**PERSON, "nullable": True}, "minItems": 1, "example": [], "default": []},
        id="array-of-nullable-objects",
    ),
    pytest.param(
        {
            "type": "OBJECT",
            "properties": {
                "title": {"type": "STRING"},
                "sections": {
                    "type": "ARRAY",
                    "items": {
                        "type": "OBJECT",
                        "properties": {"heading": {"type": "STRING"}, "score": {"type": "NUMBER"}},
                        "required": ["heading", "score"],
                    },
                },
            },
            "required": ["title", "sections"],
        },
        id="nested",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize("schema", OPENAPI_CASES)
async def test_response_schema_answers_conform(
    server: FakeServer, session: aiohttp.ClientSession, schema: dict[str, Any]
) -> None:
    """Every answer under a responseSchema validates against that schema read as JSON Schema."""
    validator = jsonschema.Draft202012Validator(
        openapi_to_json_schema(schema), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for document in await documents(session, server, {"responseSchema": schema}):
        validator.validate(document)


@pytest.mark.anyio
async def test_response_schema_keys_follow_property_ordering_else_alphabetical(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    """propertyOrdering sets the key order; without it the keys come out alphabetically, as the API does."""
    properties = {name: {"type": "STRING"} for name in ("zeta", "alpha", "mid")}
    base = {"type": "OBJECT", "properties": properties, "required": list(properties)}
    ordered = {**base, "propertyOrdering": ["mid", "zeta", "alpha"]}
    assert [list(d) for d in await documents(session, server, {"responseSchema": ordered}, 2)] == [
        ["mid", "zeta", "alpha"]
    ] * 2
    assert [list(d) for d in await documents(session, server, {"responseSchema": base}, 2)] == [
        ["alpha", "mid", "zeta"]
    ] * 2


TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "minLength": 1},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 3},
            },
            "required": ["label"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}

JSON_SCHEMA_CASES = [
    pytest.param({"type": "string", "minLength": 5, "maxLength": 12}, id="string-length"),
    pytest.param({"type": "string", "pattern": r"^\w+@example\.(com|org)$"}, id="pattern"),
    pytest.param({"type": "string", "format": "date"}, id="format-date"),
    pytest.param({"type": "string", "format": "uuid"}, id="format-uuid"),
    pytest.param({"type": ["string", "null"]}, id="type-list"),
    pytest.param({"const": {"fixed": [1, 2]}}, id="const"),
    pytest.param({"enum": ["a", 1, None, 2.5]}, id="mixed-enum"),
    pytest.param({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}, id="exclusive-bounds"),
    pytest.param({"type": "number", "minimum": -1, "maximum": -1}, id="single-point"),
    pytest.param(TREE, id="recursive-ref"),
    pytest.param(
        {
            "definitions": {"id": {"type": "integer", "minimum": 1}},
            "type": "object",
            "properties": {"ids": {"type": "array", "items": {"$ref": "#/definitions/id"}, "minItems": 1}},
            "required": ["ids"],
        },
        id="definitions-ref",
    ),
    pytest.param(
        {
            "oneOf": [
                {"type": "boolean"},
                {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
            ]
        },
        id="one-of",
    ),
    pytest.param({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "number"}}]}, id="any-of"),
    pytest.param(
        {
            "type": "array",
            "prefixItems": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}],
            "items": False,
            "minItems": 2,
        },
        id="prefix-items",
    ),
    pytest.param(
        {"type": "object", "additionalProperties": {"type": "integer", "maximum": 9}, "minProperties": 1},
        id="additional-properties-map",
    ),
    pytest.param(
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "boolean"}}, "required": ["b"]},
            ]
        },
        id="all-of",
    ),
    pytest.param({"properties": {"n": {"minimum": 3, "maximum": 4}}, "required": ["n"]}, id="inferred-types"),
    pytest.param(True, id="true-schema"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("schema", JSON_SCHEMA_CASES)
async def test_response_json_schema_answers_conform(
    server: FakeServer, session: aiohttp.ClientSession, schema: Any
) -> None:
    """Every answer under a responseJsonSchema validates against it (formats checked too)."""
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    for document in await documents(session, server, {"responseJsonSchema": schema}):
        validator.validate(document)


@pytest.mark.anyio
async def test_response_json_schema_keeps_schema_key_order(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """responseJsonSchema keeps the schema's key order unless propertyOrdering says otherwise."""
    properties = {name: {"type": "integer"} for name in ("zeta", "alpha", "mid")}
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    assert [list(d) for d in await documents(session, server, {"responseJsonSchema": schema}, 2)] == [
        ["zeta", "alpha", "mid"]
    ] * 2
    reordered = {**schema, "propertyOrdering": ["alpha"]}
    assert list((await documents(session, server, {"responseJsonSchema": reordered}, 1))[0]) == [
        "alpha",
        "zeta",
        "mid",
    ]


@pytest.mark.anyio
async def test_recursive_tree_reaches_some_depth(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """A recursive schema produces nested documents, not only the trivial one."""

    def depth(node: dict[str, Any]) -> int:
        return 1 + max((depth(child) for child in node.get("children", [])), default=0)

    assert max(depth(d) for d in await documents(session, server, {"responseJsonSchema": TREE}, 12)) >= 3


@pytest.mark.anyio
async def test_json_mode_without_schema_returns_an_object(server: FakeServer, session: aiohttp.ClientSession) -> None:
    """application/json without a schema still answers a JSON object."""
    assert all(isinstance(d, dict) for d in await documents(session, server, {}, 2))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            {
                "responseJsonSchema": {
                    "$defs": {"a": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "required": ["a"]}},
                    "$ref": "#/$defs/a",
                }
            },
            "too many states",
            id="required-recursion",
        ),
        pytest.param({"responseJsonSchema": {"$ref": "https://example.com/s.json"}}, "$ref", id="remote-ref"),
        pytest.param(
            {"responseSchema": {"type": "STRING", "pattern": r"(?=x)x"}},
            "fake server: cannot generate",
            id="lookahead",
        ),
        pytest.param(
            {
                "responseSchema": {
                    "type": "OBJECT",
                    "properties": {"a": {"type": "STRING"}},
                    "required": ["b"],
                }
            },
            "property is not defined",
            id="required-not-a-property",
        ),
        pytest.param({"responseSchema": {"type": "ARRAY"}}, "items", id="array-without-items"),
        pytest.param({"responseSchema": {"type": "WORD"}}, "Invalid value", id="bad-type"),
    ],
)
async def test_schemas_the_server_cannot_serve_are_400(
    server: FakeServer, session: aiohttp.ClientSession, config: dict[str, Any], message: str
) -> None:
    """Schemas the API rejects (or the fake cannot generate for) are 400 INVALID_ARGUMENT, every time."""
    payload = {
        "contents": [{"parts": [{"text": "hi"}]}],
        "generationConfig": {"responseMimeType": "application/json", **config},
    }
    url = f"{server.url}/v1beta/models/gemini-2.5-flash:generateContent"
    for _ in range(2):  # the second time comes from the compiled-schema cache
        async with session.post(url, data=orjson.dumps(payload), headers={"x-goog-api-key": KEY}) as response:
            answer = orjson.loads(await response.read())
        assert response.status == 400
        assert message in answer["error"]["message"]


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[A-Z]{3}-\d{4}$",
        r"(foo|bar)+baz?",
        r"[^a-z]{2,5}",
        r"\w+@\w+\.(com|org)",
        r"a{x}",
        r"[-a-c]x[]a]",
        r"(?P<year>\d{4})-(?:0[1-9]|1[0-2])",
        r"\.\*\(\)",
        r"[\d\-]+\s\S",
        r"x{,3}y{2,}z*?",
        r"\A.+\Z",
    ],
)
def test_patterns_generate_matching_strings(pattern: str) -> None:
    """Generated strings fully match the pattern they came from."""
    generate = compile_pattern(pattern)
    rng = random.Random(3)
    for _ in range(100):
        text = generate(rng)
        assert re.fullmatch(pattern.replace(r"\Z", "$").replace(r"\A", "^"), text), (pattern, text)


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)a", r"(?i)a", r"\bword", r"\p{L}", r"(ab", r"ab)", r"*a"])
def test_unsupported_patterns_are_refused(pattern: str) -> None:
    """Constructs outside the documented subset raise PatternError instead of producing wrong strings."""
    with pytest.raises(PatternError):
        compile_pattern(pattern)
