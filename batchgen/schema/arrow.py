"""A response schema's top-level properties as typed Arrow columns: one shape per JSON Schema node.

Beyond the JSON types: a string enum is a dictionary column whose categories are the schema's values in the
schema's order (not the order answers happened to use them), so every part, and a DataFrame's categorical,
lists them the same way; `format: date` is a date32 column and `format: date-time` a UTC timestamp.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
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
    converter, so unions are merged by key, never by Arrow type. `enum` holds a string enum's values (its
    dictionary), `item` a list's item shape and `fields` a struct's, so that `array` can build dictionaries
    in schema order at any depth.
    """

    key: Hashable
    type: pa.DataType
    convert: Callable[[Any], Any]
    fields: tuple[tuple[str, Shape], ...] = ()
    item: Shape | None = None
    enum: tuple[str, ...] = ()
    _fixed_dictionary: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        inner = [shape for _, shape in self.fields] + ([self.item] if self.item is not None else [])
        object.__setattr__(self, "_fixed_dictionary", bool(self.enum) or any(s._fixed_dictionary for s in inner))

    @property
    def kind(self) -> str:
        """The shape's kind without its details: "enum" for every enum, "list", "struct", "int"..."""
        return self.key[0] if isinstance(self.key, tuple) else str(self.key)

    def array(self, values: Sequence[Any]) -> pa.Array:
        """The Arrow array of converted `values` (what `convert` returned), enum dictionaries in schema order."""
        if not self._fixed_dictionary:
            return pa.array(values, self.type)
        mask = pa.array([value is None for value in values], pa.bool_())
        if self.enum:
            position = {value: index for index, value in enumerate(self.enum)}
            indices = pa.array([position.get(value) for value in values], pa.int32())
            return pa.DictionaryArray.from_arrays(indices, pa.array(self.enum, pa.string()))
        if self.item is not None:
            offsets: list[int] = [0]
            items: list[Any] = []
            for value in values:
                items.extend(value or ())
                offsets.append(len(items))
            return pa.ListArray.from_arrays(
                pa.array(offsets, pa.int32()), self.item.array(items), type=self.type, mask=mask
            )
        children = [shape.array([None if v is None else v.get(name) for v in values]) for name, shape in self.fields]
        return pa.StructArray.from_arrays(children, fields=list(self.type), mask=mask)


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


def _as_date(value: Any) -> Any:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        moment = _as_datetime(value)  # a date-time where a date was asked for: its (UTC) day
        return None if moment is None else moment.date()


def _as_datetime(value: Any) -> Any:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    # RFC 3339 requires an offset; a model that leaves it out most likely means UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_STRING = Shape("string", pa.string(), _as_str)
_DATE = Shape("date", pa.date32(), _as_date)
_DATETIME = Shape("datetime", pa.timestamp("us", tz="UTC"), _as_datetime)
_FORMATS = {"date": _DATE, "date-time": _DATETIME}
_INT = Shape("int", pa.int64(), _as_int)
_FLOAT = Shape("float", pa.float64(), _as_float)
_BOOL = Shape("bool", pa.bool_(), _as_bool)
_JSON = Shape("json", pa.string(), _as_json)
_SCALARS = {"string": _STRING, "integer": _INT, "number": _FLOAT, "boolean": _BOOL}


def _list_shape(item: Shape) -> Shape:
    def convert(value: Any) -> Any:
        return [item.convert(element) for element in value] if isinstance(value, list) else None

    # "element" is the name Parquet gives list items, so a schema read back compares equal to the written one.
    return Shape(("list", item.key), pa.list_(pa.field("element", item.type)), convert, item=item)


def _struct_shape(fields: tuple[tuple[str, Shape], ...]) -> Shape:
    def convert(value: Any) -> Any:
        return {name: shape.convert(value.get(name)) for name, shape in fields} if isinstance(value, dict) else None

    arrow = pa.struct([pa.field(name, shape.type) for name, shape in fields])
    return Shape(("struct", tuple((name, shape.key) for name, shape in fields)), arrow, convert, fields)


def _string_enum(values: Sequence[str]) -> Shape:
    ordered = tuple(dict.fromkeys(values))

    def convert(value: Any) -> Any:
        return value if isinstance(value, str) and value in ordered else None

    return Shape(("enum", ordered), pa.dictionary(pa.int32(), pa.string()), convert, enum=ordered)


def _enum_shape(values: list[Any]) -> Shape:
    present = [value for value in values if value is not None]
    if present and all(isinstance(value, str) for value in present):
        return _string_enum(present)
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
    kinds = {shape.kind for shape in shapes}
    if kinds == {"enum"}:
        return _string_enum([value for shape in shapes for value in shape.enum])
    if kinds and kinds <= {"int", "float"}:
        return _FLOAT
    if kinds and kinds <= {"enum", "string", "date", "datetime"}:
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
        if types == {"string"} and node.get("format") in _FORMATS:
            return _FORMATS[node["format"]]
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
