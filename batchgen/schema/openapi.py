"""`responseSchema`, Gemini's OpenAPI 3.0 subset: checked as the API checks it, then converted to JSON Schema."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from batchgen.errors import SchemaError
from batchgen.schema.dialect import SchemaPath, is_int, is_number, pointer

_OPENAPI_TYPES = ("STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL")
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")
_NUMBERS = ("minimum", "maximum")
_TEXTS = ("format", "title", "description", "pattern")
_BOUNDS = (("minItems", "maxItems"), ("minLength", "maxLength"), ("minProperties", "maxProperties"), _NUMBERS)
# The proto `Schema` message: any other key fails proto parsing with "Unknown name ... Cannot find field".
_OPENAPI_KEYWORDS = frozenset(
    {"type", "nullable", "enum", "items", "properties", "required", "anyOf", "propertyOrdering", "example"}
    | {"default", *_COUNTS, *_NUMBERS, *_TEXTS}
)
# JSON's number grammar: Python's int() and float() also take "1_000", " 7 ", "nan" and "inf".
_JSON_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_JSON_SCHEMA_ONLY = "is JSON Schema, not part of the responseSchema subset; use responseJsonSchema for it"


def check_openapi_schema(schema: Any, *, file: str | None) -> None:
    """Raise `SchemaError` at the first construct the API would reject in a `responseSchema`."""
    _OpenApiChecker(file).node(schema, ())


class _OpenApiChecker:
    """Walks a responseSchema depth first; each method checks one aspect of one node."""

    def __init__(self, file: str | None) -> None:
        self._file = file

    def _fail(self, message: str, path: SchemaPath) -> NoReturn:
        raise SchemaError(message, file=self._file, pointer=pointer(path))

    def node(self, schema: Any, path: SchemaPath) -> None:
        if not isinstance(schema, dict):
            self._fail("a schema must be a JSON object", path)
        self._keywords(schema, path)
        kind = self._type(schema, path)
        self._scalars(schema, path)
        self._enum(schema, kind, path)
        self._object(schema, kind, path)
        self._array(schema, kind, path)
        self._any_of(schema, path)

    def _keywords(self, schema: dict[str, Any], path: SchemaPath) -> None:
        for key in schema:
            if key not in _OPENAPI_KEYWORDS:
                known = key.startswith("$") or key in {"additionalProperties", "oneOf", "allOf", "const"}
                hint = _JSON_SCHEMA_ONLY if known else "is not a responseSchema keyword"
                self._fail(f"{key!r} {hint}", (*path, key))

    def _type(self, schema: dict[str, Any], path: SchemaPath) -> str | None:
        if "type" not in schema:
            if "anyOf" not in schema:
                self._fail("type is required unless anyOf is given", path)
            return None
        kind = schema["type"]
        if isinstance(kind, list):
            self._fail(
                "type must be one name; for a null value use nullable: true, for a union anyOf",
                (*path, "type"),
            )
        if not isinstance(kind, str) or kind.upper() not in _OPENAPI_TYPES:
            self._fail(f"unknown type {kind!r}; expected one of {', '.join(_OPENAPI_TYPES)}", (*path, "type"))
        return kind.upper()

    def _scalars(self, schema: dict[str, Any], path: SchemaPath) -> None:
        if "nullable" in schema and not isinstance(schema["nullable"], bool):
            self._fail("nullable must be true or false", (*path, "nullable"))
        for key in _TEXTS:
            if key in schema and not isinstance(schema[key], str):
                self._fail(f"{key} must be a string", (*path, key))
        for key in _COUNTS:
            if key in schema and not (is_int(schema[key]) and schema[key] >= 0):
                self._fail(f"{key} must be a non-negative integer", (*path, key))
        for key in _NUMBERS:
            if key in schema and not (is_number(schema[key]) and math.isfinite(schema[key])):
                self._fail(f"{key} must be a finite number", (*path, key))
        for low, high in _BOUNDS:
            if low in schema and high in schema and schema[low] > schema[high]:
                self._fail(f"{low} ({schema[low]}) is greater than {high} ({schema[high]})", (*path, low))

    def _enum(self, schema: dict[str, Any], kind: str | None, path: SchemaPath) -> None:
        if "enum" not in schema:
            return
        values = schema["enum"]
        if not isinstance(values, list) or not values:
            self._fail("enum must be a non-empty list of strings", (*path, "enum"))
        if kind not in ("STRING", "INTEGER", "NUMBER"):
            self._fail(f"enum needs type STRING, INTEGER or NUMBER, not {kind or 'no type'}", (*path, "enum"))
        for index, value in enumerate(values):
            # The proto field is `repeated string`: INTEGER/NUMBER enums are written as numeric strings.
            if not isinstance(value, str) or _enum_value(kind, value) is None:
                expected = {"STRING": "a string", "INTEGER": "an integer", "NUMBER": "a number"}[kind]
                self._fail(f"enum value {value!r} must be {expected} in a string", (*path, "enum", index))

    def _object(self, schema: dict[str, Any], kind: str | None, path: SchemaPath) -> None:
        properties = schema.get("properties")
        if properties is not None:
            if not isinstance(properties, dict):
                self._fail("properties must be an object mapping names to schemas", (*path, "properties"))
            if kind != "OBJECT":
                self._fail("properties is only allowed on type OBJECT", (*path, "properties"))
            for name, sub in properties.items():
                self.node(sub, (*path, "properties", name))
        if kind == "OBJECT" and not properties:
            # The API answers "properties: should be non-empty for OBJECT type" for a missing or empty map.
            where = (*path, "properties") if "properties" in schema else path
            self._fail("type OBJECT needs at least one property (free-form objects need responseJsonSchema)", where)
        for key in ("required", "propertyOrdering"):
            self._names(schema, key, properties or {}, path)

    def _names(self, schema: dict[str, Any], key: str, properties: dict[str, Any], path: SchemaPath) -> None:
        if key not in schema:
            return
        names = schema[key]
        if not isinstance(names, list):
            self._fail(f"{key} must be a list of property names", (*path, key))
        for index, name in enumerate(names):
            if not isinstance(name, str) or name not in properties:
                self._fail(f"{key} names {name!r}, which is not in properties", (*path, key, index))

    def _array(self, schema: dict[str, Any], kind: str | None, path: SchemaPath) -> None:
        if "items" in schema:
            self.node(schema["items"], (*path, "items"))
        elif kind == "ARRAY":
            # The API answers "items: missing field".
            self._fail("type ARRAY needs items", path)

    def _any_of(self, schema: dict[str, Any], path: SchemaPath) -> None:
        if "anyOf" not in schema:
            return
        branches = schema["anyOf"]
        if not isinstance(branches, list) or not branches:
            self._fail("anyOf must be a non-empty list of schemas", (*path, "anyOf"))
        for index, branch in enumerate(branches):
            self.node(branch, (*path, "anyOf", index))


def _enum_value(kind: str | None, text: str) -> str | int | float | None:
    """The JSON value an enum string stands for under `kind`, or None when it cannot stand for one."""
    if kind == "STRING":
        return text
    if kind == "INTEGER":
        return int(text) if _JSON_INTEGER.fullmatch(text) else None
    return float(text) if _JSON_NUMBER.fullmatch(text) else None


def openapi_to_json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that accepts what a checked `responseSchema` describes.

    `nullable` becomes a `null` alternative, types become lower case, INTEGER/NUMBER enum strings become
    numbers, and `propertyOrdering` and `example` (they only steer generation) are dropped. `format` stays an
    annotation.
    """
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **_convert(schema)}


def _convert(schema: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    nullable = schema.get("nullable") is True
    kind = schema["type"].upper() if "type" in schema else None
    if kind is not None:
        name = kind.lower()
        out["type"] = [name, "null"] if nullable and name != "null" else name
    for key in ("title", "description", "format", "pattern", "default", "required", *_COUNTS, *_NUMBERS):
        if key in schema:
            out[key] = schema[key]
    if "enum" in schema:
        out["enum"] = [_enum_value(kind, value) for value in schema["enum"]] + ([None] if nullable else [])
    if "properties" in schema:
        out["properties"] = {name: _convert(sub) for name, sub in schema["properties"].items()}
    if "items" in schema:
        out["items"] = _convert(schema["items"])
    if "anyOf" in schema:
        out["anyOf"] = [_convert(branch) for branch in schema["anyOf"]] + ([{"type": "null"}] if nullable else [])
    return out
