"""The two schema dialects compiled into node trees: `responseSchema` (Gemini's OpenAPI subset, checked as the
API parses it) and `responseJsonSchema` (JSON Schema, followed as far as `schema`'s docstring says)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from batchgen.fakeserver.errors import bad_enum
from batchgen.fakeserver.nodes import (
    AnyNode,
    ArrayNode,
    BooleanNode,
    ConstNode,
    EnumNode,
    IntegerNode,
    Node,
    NullableNode,
    NullNode,
    NumberNode,
    ObjectNode,
    RefNode,
    StringNode,
    UnionNode,
    integer_bounds,
    number_bounds,
)
from batchgen.fakeserver.patterns import PatternError, compile_pattern

OPENAPI_KEYS = frozenset(
    [
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "items",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
    ]
)
OPENAPI_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"})


class SchemaRejected(ValueError):
    """The API would refuse this schema; the message is the 400's message."""


def violation(path: str, message: str) -> SchemaRejected:
    """A field violation in the API's wording: "* GenerateContentRequest.<path>: <message>"."""
    return SchemaRejected(f"* GenerateContentRequest.{path}: {message}\n")


def _camel(key: str) -> str:
    # Proto JSON accepts the original snake_case field names as well as lowerCamelCase.
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _pattern_node(schema: Mapping[str, Any], where: str) -> StringNode:
    pattern = schema.get("pattern")
    try:
        generator = compile_pattern(pattern) if isinstance(pattern, str) else None
    except PatternError as exc:
        raise SchemaRejected(f"fake server: cannot generate strings for {where}.pattern: {exc}") from exc
    max_len = _count(schema, "maxLength", where)
    return StringNode(_count(schema, "minLength", where) or 0, max_len, generator, schema.get("format"))


def _count(schema: Mapping[str, Any], key: str, where: str) -> int | None:
    # int64 fields may arrive as JSON strings in proto JSON.
    value = schema.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise SchemaRejected(f"Invalid value at '{where}.{key}' (TYPE_INT64), {orjson.dumps(value).decode()}")


def _bound(schema: Mapping[str, Any], key: str, where: str) -> float | None:
    value = schema.get(key)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    raise SchemaRejected(f"Invalid value at '{where}.{key}' (TYPE_DOUBLE), {orjson.dumps(value).decode()}")


def _numeric(integer: bool, low: float | None, high: float | None, open_low: bool, open_high: bool, where: str) -> Node:
    if integer:
        lo, hi = integer_bounds(low, high, open_low, open_high)
        if lo > hi:
            raise violation(where, "minimum must not exceed maximum.")
        return IntegerNode(lo, hi)
    flo, fhi = number_bounds(low, high)
    if flo > fhi or (flo == fhi and (open_low or open_high)):
        raise violation(where, "minimum must not exceed maximum.")
    return NumberNode(flo, fhi, open_low, open_high)


def _ordered(names: list[str], ordering: Any) -> list[str]:
    """`names` with those listed in `ordering` first, in that order, then the rest as they were."""
    if not isinstance(ordering, list):
        return names
    listed = [n for n in ordering if n in names]
    return listed + [n for n in names if n not in listed]


class OpenApi:
    """The Gemini `Schema` message: OpenAPI 3.0 subset, strict like the proto parser."""

    def node(self, schema: Any, where: str) -> Node:
        if not isinstance(schema, dict):
            raise SchemaRejected(f"Invalid JSON payload received. Expected an object at '{where}'.")
        schema = {(_camel(k) if "_" in k else k): v for k, v in schema.items()}
        for key in schema:
            if key not in OPENAPI_KEYS:
                raise SchemaRejected(
                    f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field."
                )
        node = self.typed(schema, where)
        return NullableNode(node) if schema.get("nullable") is True else node

    def typed(self, schema: dict[str, Any], where: str) -> Node:
        kind = schema.get("type")
        if isinstance(kind, list):
            raise SchemaRejected(
                f"Invalid JSON payload received. Unknown name \"type\" at '{where}': "
                "Proto field is not repeating, cannot start list."
            )
        if kind is None:
            if isinstance(schema.get("anyOf"), list):
                return UnionNode([self.node(s, f"{where}.any_of[{i}]") for i, s in enumerate(schema["anyOf"])])
            raise violation(f"{where}.type", "must be specified")
        name = kind.upper() if isinstance(kind, str) else None
        if name not in OPENAPI_TYPES:
            raise SchemaRejected(bad_enum(f"{where}.type", "Type", kind).message)
        return self.by_type(name, schema, where)

    def by_type(self, name: str, schema: dict[str, Any], where: str) -> Node:
        if isinstance(schema.get("enum"), list) and name in ("STRING", "INTEGER", "NUMBER"):
            return self.enum(name, schema["enum"], where)
        if name == "STRING":
            return _pattern_node(schema, where)
        if name in ("INTEGER", "NUMBER"):
            low, high = _bound(schema, "minimum", where), _bound(schema, "maximum", where)
            return _numeric(name == "INTEGER", low, high, False, False, where)
        if name == "BOOLEAN":
            return BooleanNode()
        if name == "NULL":
            return NullNode()
        if name == "ARRAY":
            if "items" not in schema:
                raise violation(f"{where}.items", "missing field.")
            items = self.node(schema["items"], f"{where}.items")
            return ArrayNode(items, (), _count(schema, "minItems", where) or 0, _count(schema, "maxItems", where))
        return self.object(schema, where)

    def enum(self, name: str, values: list[Any], where: str) -> Node:
        if not values:
            raise violation(f"{where}.enum", "must not be empty")
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise SchemaRejected(
                    f"Invalid value at '{where}.enum[{index}]' (TYPE_STRING), {orjson.dumps(value).decode()}"
                )
        if name == "STRING":
            return EnumNode(values)
        # Numeric enums are written as strings (with format "enum"); the output is the number itself.
        try:
            return EnumNode([int(v) if name == "INTEGER" else float(v) for v in values])
        except ValueError as exc:
            raise violation(f"{where}.enum", f"values must be {name}") from exc

    def object(self, schema: dict[str, Any], where: str) -> Node:
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            raise violation(f"{where}.properties", "should be non-empty for OBJECT type")
        required = schema.get("required") or []
        for index, name in enumerate(required):
            if name not in properties:
                raise violation(f"{where}.required[{index}]", "property is not defined")
        names = _ordered(sorted(properties), schema.get("propertyOrdering"))
        props = [(n, self.node(properties[n], f"{where}.properties[{n}].value")) for n in names]
        return ObjectNode(
            props,
            required,
            None,
            _count(schema, "minProperties", where) or 0,
            _count(schema, "maxProperties", where),
        )


_OBJECT_HINTS = ("properties", "additionalProperties", "required", "minProperties", "maxProperties")
_ARRAY_HINTS = ("items", "prefixItems", "minItems", "maxItems")
_STRING_HINTS = ("minLength", "maxLength", "pattern", "format")
_NUMBER_HINTS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


class JsonSchema:
    """JSON Schema as `responseJsonSchema` accepts it; unknown keywords are ignored."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.table: dict[str, Node] = {}

    def node(self, schema: Any, where: str) -> Node:
        if schema is True:
            return AnyNode()
        if not isinstance(schema, dict):
            raise violation(where, "a schema must be an object or true")
        if "$ref" in schema:
            return self.ref(schema["$ref"], where)
        if isinstance(schema.get("allOf"), list):
            return self.node(self.merged(schema, where), where)
        if "const" in schema:
            return ConstNode(schema["const"])
        if isinstance(schema.get("enum"), list):
            if not schema["enum"]:
                raise violation(f"{where}.enum", "must not be empty")
            return EnumNode(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return UnionNode([self.node(s, f"{where}.{key}[{i}]") for i, s in enumerate(schema[key])])
        kind = schema.get("type")
        if isinstance(kind, list):
            return UnionNode([self.typed(k, schema, where) for k in kind])
        return self.typed(kind if kind is not None else _infer_type(schema), schema, where)

    def ref(self, ref: Any, where: str) -> Node:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaRejected(f"fake server: only local $ref pointers are supported, got {ref!r} at {where}")
        if ref not in self.table:
            # Register before compiling the target so a cycle back to this ref finds an entry.
            self.table[ref] = AnyNode()
            self.table[ref] = self.node(self.lookup(ref, where), ref)
        return RefNode(ref, self.table)

    def lookup(self, ref: str, where: str) -> Any:
        target = self.root
        for token in ref[1:].lstrip("/").split("/") if ref != "#" else ():
            token = token.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or token not in target:
                raise violation(where, f"$ref {ref} does not resolve")
            target = target[token]
        return target

    def merged(self, schema: dict[str, Any], where: str) -> dict[str, Any]:
        out = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            if isinstance(part, dict) and "$ref" in part:
                part = self.lookup(part["$ref"], where)
            if not isinstance(part, dict):
                continue
            for key, value in part.items():
                if key == "properties" and isinstance(value, dict):
                    out["properties"] = {**out.get("properties", {}), **value}
                elif key == "required" and isinstance(value, list):
                    out["required"] = list(dict.fromkeys([*out.get("required", []), *value]))
                else:
                    out.setdefault(key, value)
        return out

    def typed(self, kind: Any, schema: dict[str, Any], where: str) -> Node:
        name = kind.lower() if isinstance(kind, str) else None
        if name == "any":
            return AnyNode()
        if name == "string":
            return _pattern_node(schema, where)
        if name in ("integer", "number"):
            return self.numeric(name == "integer", schema, where)
        if name == "boolean":
            return BooleanNode()
        if name == "null":
            return NullNode()
        if name == "array":
            return self.array(schema, where)
        if name == "object":
            return self.object(schema, where)
        raise violation(f"{where}.type", f"unknown type {kind!r}")

    def numeric(self, integer: bool, schema: dict[str, Any], where: str) -> Node:
        low, high = _bound(schema, "minimum", where), _bound(schema, "maximum", where)
        open_low = open_high = False
        # Draft 6+ writes exclusive bounds as numbers of their own.
        ex_low, ex_high = _bound(schema, "exclusiveMinimum", where), _bound(schema, "exclusiveMaximum", where)
        if ex_low is not None and (low is None or ex_low >= low):
            low, open_low = ex_low, True
        if ex_high is not None and (high is None or ex_high <= high):
            high, open_high = ex_high, True
        return _numeric(integer, low, high, open_low, open_high, where)

    def array(self, schema: dict[str, Any], where: str) -> Node:
        items = schema.get("items")
        prefix_schemas = schema.get("prefixItems")
        if isinstance(items, list):  # draft 4 tuple form
            prefix_schemas, items = items, schema.get("additionalItems", True)
        prefix = [self.node(s, f"{where}.prefixItems[{i}]") for i, s in enumerate(prefix_schemas or [])]
        item_node = None if items is False else self.node(True if items is None else items, f"{where}.items")
        return ArrayNode(item_node, prefix, _count(schema, "minItems", where) or 0, _count(schema, "maxItems", where))

    def object(self, schema: dict[str, Any], where: str) -> Node:
        properties = schema.get("properties") or {}
        names = _ordered(list(properties), schema.get("propertyOrdering"))
        props = [(n, self.node(properties[n], f"{where}.properties[{n}]")) for n in names]
        extra_schema = schema.get("additionalProperties")
        extra = None if extra_schema in (None, False) else self.node(extra_schema, f"{where}.additionalProperties")
        return ObjectNode(
            props,
            [n for n in schema.get("required") or [] if isinstance(n, str)],
            extra,
            _count(schema, "minProperties", where) or 0,
            _count(schema, "maxProperties", where),
        )


def _infer_type(schema: Mapping[str, Any]) -> str:
    """The type a schema without `type` implies by its keywords; "any" when nothing does."""
    for hints, kind in (
        (_OBJECT_HINTS, "object"),
        (_ARRAY_HINTS, "array"),
        (_STRING_HINTS, "string"),
        (_NUMBER_HINTS, "number"),
    ):
        if any(h in schema for h in hints):
            return kind
    return "any"
