"""Response schemas in both Gemini dialects: checked at start, converted once, validated per row, typed.

A job names its schema in `generationConfig` as `responseSchema` (Gemini's OpenAPI 3.0 subset) or
`responseJsonSchema` (JSON Schema). Either way the schema is checked before anything is sent, so a schema the
API would reject fails the job at start with the file and the JSON pointer of the problem. The OpenAPI subset
is then converted to JSON Schema once, and every output is validated by one compiled jsonschema-rs validator
(the fastest and most complete of the libraries measured in `benchmarks/validators.py`). Finally the schema's
top-level properties become typed Arrow columns, derived once so every part file has the same schema.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urljoin

import jsonschema_rs
import orjson
import pyarrow as pa

from batchgen.errors import ConfigError, SchemaError

_Path = tuple[str | int, ...]

# Relative `$id`s and `$ref`s resolve against this; `.invalid` never resolves, and nothing is fetched anyway.
_BASE_URI = "https://batchgen.invalid/response-schema.json"
_MESSAGE_LIMIT = 200
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class Dialect(StrEnum):
    """Which schema language a job uses; the value is its key in `generationConfig`."""

    OPENAPI = "responseSchema"
    JSON_SCHEMA = "responseJsonSchema"


def _pointer(path: Sequence[str | int]) -> str:
    """RFC 6901 JSON pointer for a path of keys and indexes."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


# --- responseSchema (OpenAPI subset) ------------------------------------------------------------------------

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

    def _fail(self, message: str, path: _Path) -> NoReturn:
        raise SchemaError(message, file=self._file, pointer=_pointer(path))

    def node(self, schema: Any, path: _Path) -> None:
        if not isinstance(schema, dict):
            self._fail("a schema must be a JSON object", path)
        self._keywords(schema, path)
        kind = self._type(schema, path)
        self._scalars(schema, path)
        self._enum(schema, kind, path)
        self._object(schema, kind, path)
        self._array(schema, kind, path)
        self._any_of(schema, path)

    def _keywords(self, schema: dict[str, Any], path: _Path) -> None:
        for key in schema:
            if key not in _OPENAPI_KEYWORDS:
                known = key.startswith("$") or key in {"additionalProperties", "oneOf", "allOf", "const"}
                hint = _JSON_SCHEMA_ONLY if known else "is not a responseSchema keyword"
                self._fail(f"{key!r} {hint}", (*path, key))

    def _type(self, schema: dict[str, Any], path: _Path) -> str | None:
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

    def _scalars(self, schema: dict[str, Any], path: _Path) -> None:
        if "nullable" in schema and not isinstance(schema["nullable"], bool):
            self._fail("nullable must be true or false", (*path, "nullable"))
        for key in _TEXTS:
            if key in schema and not isinstance(schema[key], str):
                self._fail(f"{key} must be a string", (*path, key))
        for key in _COUNTS:
            if key in schema and not (_is_int(schema[key]) and schema[key] >= 0):
                self._fail(f"{key} must be a non-negative integer", (*path, key))
        for key in _NUMBERS:
            if key in schema and not (_is_number(schema[key]) and math.isfinite(schema[key])):
                self._fail(f"{key} must be a finite number", (*path, key))
        for low, high in _BOUNDS:
            if low in schema and high in schema and schema[low] > schema[high]:
                self._fail(f"{low} ({schema[low]}) is greater than {high} ({schema[high]})", (*path, low))

    def _enum(self, schema: dict[str, Any], kind: str | None, path: _Path) -> None:
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

    def _object(self, schema: dict[str, Any], kind: str | None, path: _Path) -> None:
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

    def _names(self, schema: dict[str, Any], key: str, properties: dict[str, Any], path: _Path) -> None:
        if key not in schema:
            return
        names = schema[key]
        if not isinstance(names, list):
            self._fail(f"{key} must be a list of property names", (*path, key))
        for index, name in enumerate(names):
            if not isinstance(name, str) or name not in properties:
                self._fail(f"{key} names {name!r}, which is not in properties", (*path, key, index))

    def _array(self, schema: dict[str, Any], kind: str | None, path: _Path) -> None:
        if "items" in schema:
            self.node(schema["items"], (*path, "items"))
        elif kind == "ARRAY":
            # The API answers "items: missing field".
            self._fail("type ARRAY needs items", path)

    def _any_of(self, schema: dict[str, Any], path: _Path) -> None:
        if "anyOf" not in schema:
            return
        branches = schema["anyOf"]
        if not isinstance(branches, list) or not branches:
            self._fail("anyOf must be a non-empty list of schemas", (*path, "anyOf"))
        for index, branch in enumerate(branches):
            self.node(branch, (*path, "anyOf", index))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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


# --- responseJsonSchema -------------------------------------------------------------------------------------

# jsonschema-rs would try to download any other `$schema`; the API has no use for a custom metaschema either.
_METASCHEMAS = frozenset(
    {
        "https://json-schema.org/draft/2020-12/schema",
        "https://json-schema.org/draft/2019-09/schema",
        "http://json-schema.org/draft-07/schema",
        "http://json-schema.org/draft-06/schema",
        "http://json-schema.org/draft-04/schema",
    }
)
# Where sub-schemas sit in a JSON Schema (all drafts); everything else (enum, const, default...) is data.
_ONE_SCHEMA = (
    "items", "additionalProperties", "additionalItems", "not", "if", "then", "else", "contains",
    "propertyNames", "unevaluatedItems", "unevaluatedProperties", "contentSchema",
)  # fmt: skip
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")


def check_json_schema(schema: Any, *, file: str | None) -> None:
    """Raise `SchemaError` unless `schema` is a valid JSON Schema the API accepts as `responseJsonSchema`.

    Checked: the metaschema (by the validator library), every `$ref` resolves within the document, a `$ref`
    carries no sibling keywords but `$`-prefixed ones (an API rule), and `required` names declared properties.
    """
    if not isinstance(schema, dict):
        raise SchemaError("responseJsonSchema must be a JSON object", file=file, pointer="")
    _check_metaschema(schema, file)
    try:
        registry = _registry(_strip_refs(schema))
    except ValueError as exc:  # an `$id` that is no URI reference, which the metaschema lets through
        raise SchemaError(_shorten(str(exc)), file=file, pointer="") from exc
    for node, path, base in _walk(schema, (), _BASE_URI):
        _check_ref(node, path, base, registry, file)
        _check_required(node, path, file)


def _check_metaschema(schema: dict[str, Any], file: str | None) -> None:
    declared = schema.get("$schema")
    if declared is not None and (not isinstance(declared, str) or declared.rstrip("#") not in _METASCHEMAS):
        raise SchemaError(
            f"unknown $schema {declared!r}; use https://json-schema.org/draft/2020-12/schema",
            file=file,
            pointer="/$schema",
        )
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        raise SchemaError(_shorten(exc.message), file=file, pointer=_pointer(exc.instance_path)) from exc


def _children(schema: dict[str, Any], path: _Path) -> Iterator[tuple[dict[str, Any], _Path]]:
    """The object sub-schemas directly under `schema` (boolean sub-schemas have nothing to check)."""
    for key in _ONE_SCHEMA:
        if isinstance(schema.get(key), dict):
            yield schema[key], (*path, key)
    for key in _SCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            yield from ((sub, (*path, key, i)) for i, sub in enumerate(schema[key]) if isinstance(sub, dict))
    for key in _SCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            yield from ((sub, (*path, key, n)) for n, sub in schema[key].items() if isinstance(sub, dict))


def _walk(schema: dict[str, Any], path: _Path, base: str) -> Iterator[tuple[dict[str, Any], _Path, str]]:
    """Every object sub-schema with its pointer path and the base URI its `$ref`s resolve against."""
    if isinstance(schema.get("$id"), str):
        base = urljoin(base, schema["$id"])
    yield schema, path, base
    for child, child_path in _children(schema, path):
        yield from _walk(child, child_path, base)


def _strip_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy without `$ref`s: jsonschema-rs resolves every `$ref` while building a registry and reports a
    broken one without saying where it is, so references are looked up one by one in this copy instead."""
    out = {key: value for key, value in schema.items() if key != "$ref"}
    for key in _ONE_SCHEMA:
        if isinstance(out.get(key), dict):
            out[key] = _strip_refs(out[key])
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_strip_refs(sub) if isinstance(sub, dict) else sub for sub in out[key]]
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {n: _strip_refs(sub) if isinstance(sub, dict) else sub for n, sub in out[key].items()}
    return out


def _registry(schema: dict[str, Any]) -> jsonschema_rs.Registry:
    return jsonschema_rs.Registry([(_BASE_URI, schema)])


def _check_ref(
    node: dict[str, Any], path: _Path, base: str, registry: jsonschema_rs.Registry, file: str | None
) -> None:
    if "$ref" not in node:
        return
    siblings = [key for key in node if not key.startswith("$")]
    if siblings:
        raise SchemaError(
            f"the API allows only $-keywords next to $ref; move {siblings[0]!r} into the referenced schema",
            file=file,
            pointer=_pointer((*path, siblings[0])),
        )
    try:
        registry.resolver(base).lookup(node["$ref"])
    except (jsonschema_rs.ReferencingError, ValueError) as exc:
        message = f"$ref {node['$ref']!r} does not resolve within the schema: {_shorten(str(exc))}"
        raise SchemaError(message, file=file, pointer=_pointer((*path, "$ref"))) from exc


def _check_required(node: dict[str, Any], path: _Path, file: str | None) -> None:
    # Constrained decoding only writes declared properties unless extra ones are allowed explicitly, so a
    # required name missing from `properties` could never be produced.
    required, properties = node.get("required"), node.get("properties")
    if not isinstance(required, list) or not isinstance(properties, dict):
        return
    if "patternProperties" in node or node.get("additionalProperties", False) is not False:
        return
    for index, name in enumerate(required):
        if name not in properties:
            message = f"required names {name!r}, which is not in properties"
            raise SchemaError(message, file=file, pointer=_pointer((*path, "required", index)))


# --- typed columns ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Shape:
    """How one JSON value becomes one Arrow value: its type and a converter that returns None for misfits.

    `key` tells shapes apart structurally: a plain string column and JSON text share `pa.string()` but not a
    converter, so unions are merged by key, never by Arrow type.
    """

    key: Hashable
    type: pa.DataType
    convert: Callable[[Any], Any]
    fields: tuple[tuple[str, _Shape], ...] = ()


def _as_str(value: Any) -> Any:
    return value if isinstance(value, str) else None


def _as_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema counts 3.0 as an integer
    return value if _is_int(value) and _INT64_MIN <= value <= _INT64_MAX else None


def _as_float(value: Any) -> Any:
    if not _is_number(value):
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


_STRING = _Shape("string", pa.string(), _as_str)
_ENUM = _Shape("enum", pa.dictionary(pa.int32(), pa.string()), _as_str)
_INT = _Shape("int", pa.int64(), _as_int)
_FLOAT = _Shape("float", pa.float64(), _as_float)
_BOOL = _Shape("bool", pa.bool_(), _as_bool)
_JSON = _Shape("json", pa.string(), _as_json)
_SCALARS = {"string": _STRING, "integer": _INT, "number": _FLOAT, "boolean": _BOOL}


def _list_shape(item: _Shape) -> _Shape:
    def convert(value: Any) -> Any:
        return [item.convert(element) for element in value] if isinstance(value, list) else None

    # "element" is the name Parquet gives list items, so a schema read back compares equal to the written one.
    return _Shape(("list", item.key), pa.list_(pa.field("element", item.type)), convert)


def _struct_shape(fields: tuple[tuple[str, _Shape], ...]) -> _Shape:
    def convert(value: Any) -> Any:
        return {name: shape.convert(value.get(name)) for name, shape in fields} if isinstance(value, dict) else None

    arrow = pa.struct([pa.field(name, shape.type) for name, shape in fields])
    return _Shape(("struct", tuple((name, shape.key) for name, shape in fields)), arrow, convert, fields)


def _enum_shape(values: list[Any]) -> _Shape:
    present = [value for value in values if value is not None]
    if present and all(isinstance(value, str) for value in present):
        return _ENUM
    if present and all(_is_int(value) for value in present):
        return _INT
    if present and all(_is_number(value) for value in present):
        return _FLOAT
    if present and all(isinstance(value, bool) for value in present):
        return _BOOL
    return _JSON


def _merge(shapes: list[_Shape]) -> _Shape:
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
        self._registry = _registry(root)
        # jsonschema-rs hands back referenced schemas with their keys sorted; struct fields keep the order of
        # the document, so each lookup result is traded for the original node it equals.
        self._originals = {_canonical(node): node for node, _, _ in _walk(root, (), _BASE_URI)}

    def of(self, node: Any, base: str, active: frozenset[str]) -> _Shape:
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

    def _ref(self, ref: str, base: str, active: frozenset[str]) -> _Shape:
        target = urljoin(base, ref)
        if target in active:
            return _JSON
        resolved = self._registry.resolver(base).lookup(ref)
        node = self._originals.get(_canonical(resolved.contents), resolved.contents)
        return self.of(node, resolved.resolver.base_uri, active | {target})

    def _typed(self, node: dict[str, Any], types: frozenset[str], base: str, active: frozenset[str]) -> _Shape:
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


# --- the schema of a job ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class ResponseSchema:
    """A checked response schema, ready to send, to validate outputs with and to type the output columns.

    The validator is compiled and the columns derived once, here; `validate` runs on the hot path per row.
    """

    dialect: Dialect
    wire: dict[str, Any]
    json_schema: dict[str, Any]
    source: str | None = None
    _validator: jsonschema_rs.Validator = field(init=False, repr=False)
    _fields: tuple[tuple[str, _Shape], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_validator", _compile(self.json_schema, self.source))
        root = _Shapes(self.json_schema).of(self.json_schema, _BASE_URI, frozenset())
        object.__setattr__(self, "_fields", root.fields)

    def validate(self, value: Any) -> str | None:
        """None when `value` conforms, else a short message starting with the JSON pointer of the problem."""
        if self._validator.is_valid(value):
            return None
        error = next(self._validator.iter_errors(value))
        return f"{_pointer(error.instance_path) or '/'}: {_shorten(error.message)}"

    def arrow_schema(self, prefix: str = "out_") -> pa.Schema:
        """One nullable column per top-level property, in schema order; empty unless the root is an object."""
        return pa.schema([pa.field(prefix + name, shape.type) for name, shape in self._fields])

    def arrow_columns(self, outputs: Sequence[Any]) -> list[pa.Array]:
        """The arrays for `arrow_schema`'s fields, one value per output; None or a misfit becomes null."""
        return [
            pa.array(
                [shape.convert(out.get(name)) if isinstance(out, dict) else None for out in outputs],
                shape.type,
            )
            for name, shape in self._fields
        ]


def _compile(json_schema: dict[str, Any], source: str | None) -> jsonschema_rs.Validator:
    # Formats stay annotations (the 2020-12 default): the API gives most of them no effect, so asserting them
    # would fail rows the model wrote in good faith. `offline` because no schema may reach the network.
    try:
        return jsonschema_rs.validator_for(json_schema, validate_formats=False, offline=True, base_uri=_BASE_URI)
    except (
        ValueError,
        jsonschema_rs.ReferencingError,
    ) as exc:  # ValidationError (a bad pattern) is a ValueError
        path = getattr(exc, "instance_path", ())
        raise SchemaError(_shorten(getattr(exc, "message", str(exc))), file=source, pointer=_pointer(path)) from exc


def _shorten(message: str) -> str:
    # Messages quote the offending value, which can be a whole model output.
    return message if len(message) <= _MESSAGE_LIMIT else message[: _MESSAGE_LIMIT - 3] + "..."


def load_response_schema(
    generation_config: Mapping[str, Any], base_dir: Path, *, job_file: str | None = None
) -> ResponseSchema | None:
    """The checked schema a job's `generationConfig` names, or None when it names none.

    A string value is the path of a JSON file, relative to `base_dir`; an object is the schema itself.
    Raises `ConfigError` when both dialects are set or the MIME type cannot carry a schema, `SchemaError` when
    the file cannot be read or the schema would be rejected by the API.
    """
    dialects = [dialect for dialect in Dialect if dialect.value in generation_config]
    if not dialects:
        return None
    if len(dialects) > 1:
        raise ConfigError("set responseSchema or responseJsonSchema, not both", file=job_file, key="generationConfig")
    dialect = dialects[0]
    mime_type = generation_config.get("responseMimeType")
    if mime_type != "application/json":
        message = f'a response schema needs responseMimeType "application/json", not {mime_type!r}'
        raise ConfigError(message, file=job_file, key="generationConfig.responseMimeType")
    wire, source = _schema_value(generation_config[dialect.value], dialect, base_dir, job_file)
    if dialect is Dialect.OPENAPI:
        check_openapi_schema(wire, file=source)
        return ResponseSchema(dialect, wire, openapi_to_json_schema(wire), source)
    check_json_schema(wire, file=source)
    return ResponseSchema(dialect, wire, wire, source)


def _schema_value(value: Any, dialect: Dialect, base_dir: Path, job_file: str | None) -> tuple[Any, str | None]:
    """The schema and where it came from: a file path, or the job file for an inline schema."""
    if isinstance(value, dict):
        return value, job_file
    if not isinstance(value, str):
        message = f"must be the path of a JSON file or an inline schema object, not {type(value).__name__}"
        raise ConfigError(message, file=job_file, key=f"generationConfig.{dialect.value}")
    path = base_dir / value
    return _read_json(path), str(path)


def _read_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SchemaError(f"cannot read the schema file: {exc.strerror or exc}", file=str(path)) from exc
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"the schema file is not valid JSON: {exc}", file=str(path)) from exc
