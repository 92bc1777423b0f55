"""`responseJsonSchema`: checked against the metaschema and the API's own rules (refs resolve, no siblings)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import jsonschema_rs

from batchgen.errors import SchemaError
from batchgen.schema.dialect import BASE_URI, SchemaPath, pointer, shorten

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
        registry = schema_registry(_strip_refs(schema))
    except ValueError as exc:  # an `$id` that is no URI reference, which the metaschema lets through
        raise SchemaError(shorten(str(exc)), file=file, pointer="") from exc
    for node, path, base in walk(schema, (), BASE_URI):
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
        raise SchemaError(shorten(exc.message), file=file, pointer=pointer(exc.instance_path)) from exc


def _children(schema: dict[str, Any], path: SchemaPath) -> Iterator[tuple[dict[str, Any], SchemaPath]]:
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


def walk(schema: dict[str, Any], path: SchemaPath, base: str) -> Iterator[tuple[dict[str, Any], SchemaPath, str]]:
    """Every object sub-schema with its pointer path and the base URI its `$ref`s resolve against."""
    if isinstance(schema.get("$id"), str):
        base = urljoin(base, schema["$id"])
    yield schema, path, base
    for child, child_path in _children(schema, path):
        yield from walk(child, child_path, base)


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


def schema_registry(schema: dict[str, Any]) -> jsonschema_rs.Registry:
    return jsonschema_rs.Registry([(BASE_URI, schema)])


def _check_ref(
    node: dict[str, Any], path: SchemaPath, base: str, registry: jsonschema_rs.Registry, file: str | None
) -> None:
    if "$ref" not in node:
        return
    siblings = [key for key in node if not key.startswith("$")]
    if siblings:
        raise SchemaError(
            f"the API allows only $-keywords next to $ref; move {siblings[0]!r} into the referenced schema",
            file=file,
            pointer=pointer((*path, siblings[0])),
        )
    try:
        registry.resolver(base).lookup(node["$ref"])
    except (jsonschema_rs.ReferencingError, ValueError) as exc:
        message = f"$ref {node['$ref']!r} does not resolve within the schema: {shorten(str(exc))}"
        raise SchemaError(message, file=file, pointer=pointer((*path, "$ref"))) from exc


def _check_required(node: dict[str, Any], path: SchemaPath, file: str | None) -> None:
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
            raise SchemaError(message, file=file, pointer=pointer((*path, "required", index)))
