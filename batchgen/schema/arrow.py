"""A response schema's top-level properties as typed Arrow columns: one shape per JSON Schema node."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import orjson
import pyarrow as pa

from batchgen.schema.dialect import BASE_URI, is_int, is_number
from batchgen.schema.jsonschema import schema_registry, walk

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class Shape:
    """How one JSON value becomes one Arrow value: its type and a converter that returns None for misfits.

    `key` tells shapes apart structurally: a plain string column and JSON text share `pa.string()` but not a
    converter, so unions are merged by key, never by Arrow type.
    """

    key: Hashable
    type: pa.DataType
    convert: Callable[[Any], Any]
    fields: tuple[tuple[str, Shape], ...] = ()


def _as_str(value: Any) -> Any:
    return value if isinstance(value, str) else None


def _as_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema counts 3.0 as an integer
    return value if is_int(value) and _INT64_MIN <= value <= _INT64_MAX else None


def _as_float(value: Any) -> Any:
    if not is_number(value):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _as_bool(value: Any) -> Any:
    return value if isinstance(value, bool) else None


def _as_json(value: Any) -> Any:
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return None


_STRING = Shape("string", pa.string(), _as_str)
_ENUM = Shape("enum", pa.dictionary(pa.int32(), pa.string()), _as_str)
_INT = Shape("int", pa.int64(), _as_int)
_FLOAT = Shape("float", pa.float64(), _as_float)
_BOOL = Shape("bool", pa.bool_(), _as_bool)
_JSON = Shape("json", pa.string(), _as_json)
_SCALARS = {"string": _STRING, "integer": _INT, "number": _FLOAT, "boolean": _BOOL}


def _list_shape(item: Shape) -> Shape:
    def convert(value: Any) -> Any:
        return [item.convert(element) for element in value] if isinstance(value, list) else None

    # "element" is the name Parquet gives list items, so a schema read back compares equal to the written one.
    return Shape(("list", item.key), pa.list_(pa.field("element", item.type)), convert)


def _struct_shape(fields: tuple[tuple[str, Shape], ...]) -> Shape:
    def convert(value: Any) -> Any:
        return {name: shape.convert(value.get(name)) for name, shape in fields} if isinstance(value, dict) else None

    arrow = pa.struct([pa.field(name, shape.type) for name, shape in fields])
    return Shape(("struct", tuple((name, shape.key) for name, shape in fields)), arrow, convert, fields)


def _enum_shape(values: list[Any]) -> Shape:
    present = [value for value in values if value is not None]
    if present and all(isinstance(value, str) for value in present):
        return _ENUM
    if present and all(is_int(value) for value in present):
        return _INT
    if present and all(is_number(value) for value in present):
        return _FLOAT
    if present and all(isinstance(value, bool) for value in present):
        return _BOOL
    return _JSON


def _merge(shapes: list[Shape]) -> Shape:
    """One shape that holds every alternative of a union, or JSON text when they differ."""
    keys = {shape.key for shape in shapes}
    if len(keys) == 1:
        return shapes[0]
    if keys and keys <= {"int", "float"}:
        return _FLOAT
    if keys and keys <= {"enum", "string"}:
        return _STRING
    return _JSON


class _Shapes:
    """Maps JSON Schema nodes to shapes, following `$ref`s; a recursive reference ends in JSON text."""

    def __init__(self, root: dict[str, Any]) -> None:
        self._registry = schema_registry(root)
        # jsonschema-rs hands back referenced schemas with their keys sorted; struct fields keep the order of
        # the document, so each lookup result is traded for the original node it equals.
        self._originals = {_canonical(node): node for node, _, _ in walk(root, (), BASE_URI)}

    def of(self, node: Any, base: str, active: frozenset[str]) -> Shape:
        if not isinstance(node, dict):
            return _JSON
        if isinstance(node.get("$id"), str):
            base = urljoin(base, node["$id"])
        if isinstance(node.get("$ref"), str):
            return self._ref(node["$ref"], base, active)
        if "enum" in node or "const" in node:
            return _enum_shape(node["enum"] if "enum" in node else [node["const"]])
        types = _declared_types(node)
        if types is not None:
            return self._typed(node, types, base, active)
        branches = node.get("anyOf", node.get("oneOf"))
        if isinstance(branches, list):
            present = [branch for branch in branches if not _is_null_only(branch)]
            return _merge([self.of(branch, base, active) for branch in present]) if present else _JSON
        return _JSON

    def _ref(self, ref: str, base: str, active: frozenset[str]) -> Shape:
        target = urljoin(base, ref)
        if target in active:
            return _JSON
        resolved = self._registry.resolver(base).lookup(ref)
        node = self._originals.get(_canonical(resolved.contents), resolved.contents)
        return self.of(node, resolved.resolver.base_uri, active | {target})

    def _typed(self, node: dict[str, Any], types: frozenset[str], base: str, active: frozenset[str]) -> Shape:
        if types == {"array"}:
            items = node.get("items")
            if "prefixItems" in node or isinstance(items, list):
                return _JSON  # a tuple has no single item type
            return _list_shape(self.of(items, base, active) if isinstance(items, dict) else _JSON)
        if types == {"object"}:
            properties = node.get("properties")
            if not isinstance(properties, dict) or not properties:
                return _JSON  # free-form; Parquet cannot store a struct without fields either
            return _struct_shape(tuple((name, self.of(sub, base, active)) for name, sub in properties.items()))
        return _merge([_SCALARS.get(name, _JSON) for name in types]) if types else _JSON


def _canonical(node: Any) -> str:
    return json.dumps(node, sort_keys=True, default=str)  # jsonschema-rs may hand back a Decimal


def _declared_types(node: dict[str, Any]) -> frozenset[str] | None:
    """The non-null JSON types a node admits, or None when it says nothing about its type itself."""
    kind = node.get("type")
    if isinstance(kind, str):
        names = {kind}
    elif isinstance(kind, list):
        names = {name for name in kind if isinstance(name, str)}
    elif "properties" in node:
        names = {"object"}
    elif "items" in node or "prefixItems" in node:
        names = {"array"}
    else:
        return None
    return frozenset(names - {"null"})


def _is_null_only(node: Any) -> bool:
    return isinstance(node, dict) and (node.get("type") in ("null", ["null"]) or node.get("enum") == [None])


def property_shapes(json_schema: dict[str, Any]) -> tuple[tuple[str, Shape], ...]:
    """The shape of each top-level property, in schema order; empty unless the root is an object."""
    return _Shapes(json_schema).of(json_schema, BASE_URI, frozenset()).fields
