"""Response schemas: start-up checks in both dialects, conversion, per-row validation and typed columns."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchgen.errors import ConfigError, SchemaError
from batchgen.schema.dialect import Dialect
from batchgen.schema.jsonschema import check_json_schema
from batchgen.schema.openapi import check_openapi_schema, openapi_to_json_schema
from batchgen.schema.response import ResponseSchema, load_response_schema

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
JSON_MODE = {"responseMimeType": "application/json"}


def inline(dialect: Dialect, schema: Any) -> ResponseSchema:
    loaded = load_response_schema({dialect.value: schema, **JSON_MODE}, Path("."), job_file="jobs/job.toml")
    assert loaded is not None
    return loaded


def from_file(name: str, dialect: Dialect) -> ResponseSchema:
    loaded = load_response_schema({dialect.value: f"{name}.json", **JSON_MODE}, SCHEMAS)
    assert loaded is not None
    return loaded


def rejected(tmp_path: Path, dialect: Dialect, schema: Any) -> SchemaError:
    """Load `schema` from a file and return the SchemaError it must raise."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(schema))
    with pytest.raises(SchemaError) as info:
        load_response_schema({dialect.value: "bad.json", **JSON_MODE}, tmp_path)
    return info.value


# --- each construct, in both dialects -----------------------------------------------------------------------

CONSTRUCTS = [
    # id, responseSchema property, responseJsonSchema property, a valid value, an invalid value, its pointer
    pytest.param({"type": "STRING"}, {"type": "string"}, "a", 1, "/v", id="string"),
    pytest.param({"type": "NUMBER"}, {"type": "number"}, 1.5, "1.5", "/v", id="number"),
    pytest.param({"type": "INTEGER"}, {"type": "integer"}, 3, 3.5, "/v", id="integer"),
    pytest.param({"type": "BOOLEAN"}, {"type": "boolean"}, True, "true", "/v", id="boolean"),
    pytest.param({"type": "NULL"}, {"type": "null"}, None, 0, "/v", id="null"),
    pytest.param(
        {"type": "ARRAY", "items": {"type": "STRING"}},
        {"type": "array", "items": {"type": "string"}},
        ["a", "b"],
        ["a", 2],
        "/v/1",
        id="array-items",
    ),
    pytest.param(
        {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "required": ["a"]},
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        {"a": "x"},
        {"b": "x"},
        "/v",
        id="object-properties-required",
    ),
    pytest.param(
        {"type": "STRING", "enum": ["x", "y"]},
        {"type": "string", "enum": ["x", "y"]},
        "y",
        "z",
        "/v",
        id="enum",
    ),
    pytest.param(
        {"type": "INTEGER", "format": "enum", "enum": ["1", "2"]},
        {"type": "integer", "enum": [1, 2]},
        2,
        3,
        "/v",
        id="integer-enum",
    ),
    pytest.param({"type": "STRING", "nullable": True}, {"type": ["string", "null"]}, None, 1, "/v", id="nullable"),
    pytest.param(
        {"type": "STRING", "format": "date-time"},
        {"type": "string", "format": "date-time"},
        "not a date: formats are annotations",
        5,
        "/v",
        id="format",
    ),
    pytest.param(
        {"type": "ARRAY", "items": {"type": "INTEGER"}, "minItems": 1, "maxItems": 2},
        {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
        [1, 2],
        [1, 2, 3],
        "/v",
        id="min-max-items",
    ),
    pytest.param(
        {"type": "NUMBER", "minimum": 0, "maximum": 1},
        {"type": "number", "minimum": 0, "maximum": 1},
        0.5,
        1.5,
        "/v",
        id="minimum-maximum",
    ),
    pytest.param(
        {"type": "STRING", "minLength": 2, "maxLength": 3},
        {"type": "string", "minLength": 2, "maxLength": 3},
        "ab",
        "a",
        "/v",
        id="min-max-length",
    ),
    pytest.param(
        {"type": "STRING", "pattern": "^[a-z]+$"},
        {"type": "string", "pattern": "^[a-z]+$"},
        "abc",
        "ABC",
        "/v",
        id="pattern",
    ),
    pytest.param(
        {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
        {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        3,
        1.5,
        "/v",
        id="anyOf",
    ),
    pytest.param(
        {
            "type": "OBJECT",
            "properties": {"a": {"type": "STRING"}, "b": {"type": "STRING"}},
            "minProperties": 1,
            "maxProperties": 1,
        },
        {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "minProperties": 1,
            "maxProperties": 1,
        },
        {"b": "x"},
        {"a": "x", "b": "y"},
        "/v",
        id="min-max-properties",
    ),
    pytest.param(
        {
            "type": "OBJECT",
            "properties": {"a": {"type": "INTEGER"}, "b": {"type": "INTEGER"}},
            "propertyOrdering": ["b", "a"],
        },
        {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
        {"a": 1, "b": 2},
        {"a": 1, "b": "2"},
        "/v/b",
        id="propertyOrdering",
    ),
    pytest.param(
        {"type": "STRING", "title": "Label", "description": "what it is", "default": "x", "example": "y"},
        {"type": "string", "title": "Label", "description": "what it is", "default": "x"},
        "anything",
        None,
        "/v",
        id="title-description-default-example",
    ),
]


@pytest.mark.parametrize(("openapi", "json_schema", "valid", "invalid", "pointer"), CONSTRUCTS)
@pytest.mark.parametrize("dialect", list(Dialect))
def test_each_construct_accepts_valid_and_rejects_invalid_values(
    dialect: Dialect, openapi: Any, json_schema: Any, valid: Any, invalid: Any, pointer: str
) -> None:
    """Every construct of both dialects validates: a conforming value passes, a wrong one gets its pointer."""
    if dialect is Dialect.OPENAPI:
        schema = {"type": "OBJECT", "properties": {"v": openapi}, "required": ["v"]}
    else:
        schema = {"type": "object", "properties": {"v": json_schema}, "required": ["v"]}
    loaded = inline(dialect, schema)
    assert loaded.validate({"v": valid}) is None
    message = loaded.validate({"v": invalid})
    assert message is not None
    assert message.startswith(f"{pointer}: ")


JSON_ONLY = [
    pytest.param(
        {
            "$defs": {"label": {"type": "string", "enum": ["a", "b"]}},
            "type": "array",
            "items": {"$ref": "#/$defs/label"},
        },
        ["a"],
        ["a", "c"],
        "/1",
        id="ref-defs",
    ),
    pytest.param(
        {"$defs": {"n": {"$anchor": "num", "type": "number"}}, "properties": {"x": {"$ref": "#num"}}},
        {"x": 1},
        {"x": "1"},
        "/x",
        id="anchor",
    ),
    pytest.param(
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
        ["a", 1],
        ["a", "b"],
        "/1",
        id="prefixItems",
    ),
    pytest.param(
        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
        {"a": "x"},
        {"a": "x", "b": 1},
        "/",
        id="additionalProperties-false",
    ),
    pytest.param(
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"a": 1},
        {"a": "1"},
        "/a",
        id="additionalProperties-schema",
    ),
    pytest.param({"oneOf": [{"type": "string"}, {"type": "integer"}]}, 1, 1.5, "/", id="oneOf"),
    pytest.param({"const": "fixed"}, "fixed", "other", "/", id="const"),
    pytest.param({"type": ["integer", "null"]}, None, "1", "/", id="type-list"),
]


@pytest.mark.parametrize(("schema", "valid", "invalid", "pointer"), JSON_ONLY)
def test_json_schema_only_constructs_validate(schema: Any, valid: Any, invalid: Any, pointer: str) -> None:
    """responseJsonSchema keeps the full JSON Schema meaning, references included."""
    loaded = inline(Dialect.JSON_SCHEMA, schema)
    assert loaded.validate(valid) is None
    message = loaded.validate(invalid)
    assert message is not None
    assert message.startswith(f"{pointer}: ")


# --- start-up rejections ------------------------------------------------------------------------------------


def obj(**properties: Any) -> dict[str, Any]:
    return {"type": "OBJECT", "properties": properties}


OPENAPI_REJECTIONS = [
    pytest.param(obj(a={"type": "STR"}), "/properties/a/type", "unknown type 'STR'", id="unknown-type"),
    pytest.param(obj(a={"type": "TYPE_UNSPECIFIED"}), "/properties/a/type", "unknown type", id="type-unspecified"),
    pytest.param(obj(a={"type": ["STRING", "NULL"]}), "/properties/a/type", "nullable", id="type-list"),
    pytest.param(obj(a={"type": 3}), "/properties/a/type", "unknown type", id="type-not-a-string"),
    pytest.param(obj(a={"description": "x"}), "/properties/a", "type is required", id="missing-type"),
    pytest.param(
        {**obj(a={"type": "STRING"}, b={"type": "STRING"}), "required": ["a", "c"]},
        "/required/1",
        "'c', which is not in properties",
        id="required-missing-property",
    ),
    pytest.param({**obj(a={"type": "STRING"}), "required": "a"}, "/required", "list", id="required-not-a-list"),
    pytest.param(
        obj(a={"type": "BOOLEAN", "enum": ["true"]}),
        "/properties/a/enum",
        "needs type STRING, INTEGER or NUMBER, not BOOLEAN",
        id="enum-on-boolean",
    ),
    pytest.param(
        obj(a={"type": "STRING", "enum": ["x", 1]}),
        "/properties/a/enum/1",
        "must be a string",
        id="enum-non-string",
    ),
    pytest.param(
        obj(a={"type": "INTEGER", "enum": ["1", "two"]}),
        "/properties/a/enum/1",
        "must be an integer in a string",
        id="integer-enum-not-numeric",
    ),
    pytest.param(obj(a={"type": "STRING", "enum": []}), "/properties/a/enum", "non-empty", id="enum-empty"),
    pytest.param(
        obj(a={"type": "INTEGER", "enum": ["1_000"]}),
        "/properties/a/enum/0",
        "integer",
        id="integer-enum-python-only",
    ),
    pytest.param(
        obj(a={"type": "NUMBER", "enum": ["0.5", "nan"]}),
        "/properties/a/enum/1",
        "number",
        id="number-enum-nan",
    ),
    pytest.param(
        obj(a={"enum": ["a"], "anyOf": [{"type": "STRING"}]}),
        "/properties/a/enum",
        "no type",
        id="enum-untyped",
    ),
    pytest.param(obj(a={"$ref": "#/$defs/x"}), "/properties/a/$ref", "use responseJsonSchema", id="ref"),
    pytest.param({**obj(a={"type": "STRING"}), "$defs": {}}, "/$defs", "use responseJsonSchema", id="defs"),
    pytest.param(
        {**obj(a={"type": "STRING"}), "additionalProperties": False},
        "/additionalProperties",
        "use responseJsonSchema",
        id="additionalProperties",
    ),
    pytest.param(obj(a={"type": "STRING", "const": "x"}), "/properties/a/const", "JSON Schema", id="const"),
    pytest.param(
        obj(a={"type": "ARRAY", "items": {"type": "STRING"}, "uniqueItems": True}),
        "/properties/a/uniqueItems",
        "not a responseSchema keyword",
        id="unknown-keyword",
    ),
    pytest.param({"$schema": "x", **obj(a={"type": "STRING"})}, "/$schema", "JSON Schema", id="dollar-schema"),
    pytest.param(
        obj(a={"type": "NUMBER", "minimum": 5, "maximum": 1}),
        "/properties/a/minimum",
        "greater than maximum",
        id="minimum-gt-maximum",
    ),
    pytest.param(
        obj(a={"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 3, "maxItems": 2}),
        "/properties/a/minItems",
        "greater than maxItems",
        id="minItems-gt-maxItems",
    ),
    pytest.param(
        obj(a={"type": "STRING", "minLength": 4, "maxLength": 2}),
        "/properties/a/minLength",
        "greater",
        id="minLength-gt-maxLength",
    ),
    pytest.param(
        obj(a={"type": "STRING", "minLength": -1}),
        "/properties/a/minLength",
        "non-negative",
        id="negative-count",
    ),
    pytest.param(
        obj(a={"type": "STRING", "maxLength": 2.5}),
        "/properties/a/maxLength",
        "integer",
        id="fractional-count",
    ),
    pytest.param(
        obj(a={"type": "NUMBER", "minimum": "0"}),
        "/properties/a/minimum",
        "number",
        id="minimum-not-a-number",
    ),
    pytest.param(
        obj(a={"type": "STRING", "nullable": "yes"}),
        "/properties/a/nullable",
        "true or false",
        id="nullable-not-bool",
    ),
    pytest.param(
        obj(a={"type": "STRING", "description": 1}),
        "/properties/a/description",
        "string",
        id="description-not-string",
    ),
    pytest.param(obj(a={"type": "OBJECT"}), "/properties/a", "at least one property", id="object-without-properties"),
    pytest.param(
        obj(a={"type": "OBJECT", "properties": {}}),
        "/properties/a/properties",
        "at least one",
        id="object-empty-properties",
    ),
    pytest.param(obj(a={"type": "ARRAY"}), "/properties/a", "needs items", id="array-without-items"),
    pytest.param(
        obj(a={"type": "STRING", "properties": {"b": {"type": "STRING"}}}),
        "/properties/a/properties",
        "only allowed on type OBJECT",
        id="properties-on-string",
    ),
    pytest.param(
        {**obj(a={"type": "STRING"}), "propertyOrdering": ["b"]},
        "/propertyOrdering/0",
        "not in properties",
        id="propertyOrdering-unknown",
    ),
    pytest.param(obj(a={"anyOf": []}), "/properties/a/anyOf", "non-empty", id="anyOf-empty"),
    pytest.param(
        obj(a={"type": "ARRAY", "items": "STRING"}),
        "/properties/a/items",
        "JSON object",
        id="schema-not-an-object",
    ),
    pytest.param(
        obj(**{"a/b": {"type": "ARRAY", "items": obj(**{"c~d": {"type": "BAD"}})}}),
        "/properties/a~1b/items/properties/c~0d/type",
        "unknown type",
        id="nested-pointer-escaped",
    ),
    pytest.param(obj(a={"type": "STRING", "pattern": "(["}), "/properties/a/pattern", "regex", id="bad-pattern"),
    pytest.param([{"type": "STRING"}], "", "JSON object", id="root-not-an-object"),
]


@pytest.mark.parametrize(("schema", "pointer", "reason"), OPENAPI_REJECTIONS)
def test_response_schema_the_api_would_reject_fails_at_start(
    tmp_path: Path, schema: Any, pointer: str, reason: str
) -> None:
    """A responseSchema the API would reject raises SchemaError naming the file and the JSON pointer."""
    error = rejected(tmp_path, Dialect.OPENAPI, schema)
    assert error.pointer == pointer
    assert reason in str(error)
    assert str(tmp_path / "bad.json") in str(error)
    assert f"(at {pointer or '/'})" in str(error)


JSON_SCHEMA_REJECTIONS = [
    pytest.param({"type": "strin"}, "/type", "anyOf", id="metaschema-type"),
    pytest.param({"properties": {"a": {"minimum": "3"}}}, "/properties/a/minimum", "number", id="metaschema-nested"),
    pytest.param({"required": "a"}, "/required", "array", id="metaschema-required"),
    pytest.param({"$schema": "https://example.com/my-meta"}, "/$schema", "unknown $schema", id="unknown-metaschema"),
    pytest.param(
        {"properties": {"a": {"$ref": "#/$defs/missing"}}},
        "/properties/a/$ref",
        "does not resolve",
        id="unresolved-ref",
    ),
    pytest.param(
        {"properties": {"a": {"$ref": "https://example.com/remote.json"}}},
        "/properties/a/$ref",
        "does not resolve",
        id="remote-ref-never-fetched",
    ),
    pytest.param({"items": {"$ref": "#nowhere"}}, "/items/$ref", "does not resolve", id="unknown-anchor"),
    pytest.param(
        {"$defs": {"x": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/x", "description": "d"}}},
        "/properties/a/description",
        "only $-keywords next to $ref",
        id="ref-with-sibling",
    ),
    pytest.param(
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]},
        "/required/1",
        "'b', which is not in properties",
        id="required-missing-property",
    ),
    pytest.param(
        {"properties": {"a": {"type": "string", "pattern": "(["}}},
        "/properties/a/pattern",
        "regex",
        id="bad-pattern",
    ),
    pytest.param({"$id": "http://[bad"}, "", "Invalid URI", id="bad-id"),
    pytest.param(True, "", "JSON object", id="root-boolean"),
]


@pytest.mark.parametrize(("schema", "pointer", "reason"), JSON_SCHEMA_REJECTIONS)
def test_response_json_schema_the_api_would_reject_fails_at_start(
    tmp_path: Path, schema: Any, pointer: str, reason: str
) -> None:
    """An invalid or unusable responseJsonSchema raises SchemaError naming the file and the JSON pointer."""
    error = rejected(tmp_path, Dialect.JSON_SCHEMA, schema)
    assert error.pointer == pointer
    assert reason in str(error)
    assert str(tmp_path / "bad.json") in str(error)


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param(
            {"$defs": {"x": {"type": "string"}}, "items": {"$ref": "#/$defs/x", "$comment": "c"}},
            id="ref-with-dollar-sibling",
        ),
        pytest.param(
            {"properties": {"a": {"type": "string"}}, "required": ["a", "b"], "additionalProperties": True},
            id="required-extra-property-allowed",
        ),
        pytest.param({"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"}, id="draft-07"),
        pytest.param(
            {
                "$id": "https://example.com/root.json",
                "$defs": {"b": {"$id": "b.json", "type": "integer"}},
                "items": {"$ref": "b.json"},
            },
            id="ref-to-embedded-id",
        ),
        pytest.param({"properties": {"$ref": {"type": "string"}}, "required": ["$ref"]}, id="property-named-ref"),
    ],
)
def test_acceptable_json_schemas_pass_the_checks(schema: Any) -> None:
    """Only what the API rejects is rejected: $-siblings of $ref, declared extra properties, older drafts."""
    check_json_schema(schema, file="ok.json")


def test_schema_files_pass_the_checks() -> None:
    """The schemas shipped in schemas/ are accepted in their own dialect."""
    check_openapi_schema(json.loads((SCHEMAS / "sentiment.json").read_text()), file="sentiment.json")
    check_openapi_schema(json.loads((SCHEMAS / "topics.json").read_text()), file="topics.json")
    check_json_schema(json.loads((SCHEMAS / "entities.json").read_text()), file="entities.json")
    check_json_schema(json.loads((SCHEMAS / "invoice.json").read_text()), file="invoice.json")


def test_bounds_must_be_finite() -> None:
    """minimum/maximum must be finite numbers (an inline TOML schema can hold nan)."""
    with pytest.raises(SchemaError) as info:
        check_openapi_schema({"type": "NUMBER", "maximum": float("nan")}, file="job.toml")
    assert info.value.pointer == "/maximum"


# --- loading ------------------------------------------------------------------------------------------------


def test_no_schema_means_none() -> None:
    """A generationConfig without a schema is plain text mode."""
    assert load_response_schema({"temperature": 0}, Path(".")) is None


def test_both_dialects_at_once_is_a_config_error() -> None:
    """The API rejects responseSchema together with responseJsonSchema, so the job does too."""
    config = {"responseSchema": "a.json", "responseJsonSchema": "b.json", **JSON_MODE}
    with pytest.raises(ConfigError) as info:
        load_response_schema(config, Path("."), job_file="jobs/job.toml")
    assert not isinstance(info.value, SchemaError)
    assert info.value.file == "jobs/job.toml"
    assert "not both" in str(info.value)


@pytest.mark.parametrize("mime_type", [None, "text/plain", "text/x.enum"])
def test_a_schema_needs_json_mime_type(mime_type: str | None) -> None:
    """A schema only makes sense in JSON mode; anything else fails before sending."""
    config: dict[str, Any] = {"responseSchema": "sentiment.json"}
    if mime_type is not None:
        config["responseMimeType"] = mime_type
    with pytest.raises(ConfigError) as info:
        load_response_schema(config, SCHEMAS, job_file="jobs/job.toml")
    assert info.value.key == "generationConfig.responseMimeType"


@pytest.mark.parametrize("value", [["a.json"], 3, None])
def test_a_schema_value_is_a_path_or_an_object(value: Any) -> None:
    """Anything but a file path or an inline object is a config error naming the key."""
    with pytest.raises(ConfigError) as info:
        load_response_schema({"responseJsonSchema": value, **JSON_MODE}, Path("."), job_file="jobs/job.toml")
    assert info.value.key == "generationConfig.responseJsonSchema"


def test_a_missing_schema_file_names_the_file(tmp_path: Path) -> None:
    """An unreadable schema file is a SchemaError naming the file."""
    with pytest.raises(SchemaError) as info:
        load_response_schema({"responseSchema": "nope.json", **JSON_MODE}, tmp_path)
    assert info.value.file == str(tmp_path / "nope.json")
    assert "cannot read" in str(info.value)


def test_a_schema_file_that_is_not_json_names_the_file(tmp_path: Path) -> None:
    """A schema file that does not parse is a SchemaError naming the file."""
    (tmp_path / "broken.json").write_text('{"type": "OBJECT",')
    with pytest.raises(SchemaError) as info:
        load_response_schema({"responseJsonSchema": "broken.json", **JSON_MODE}, tmp_path)
    assert info.value.file == str(tmp_path / "broken.json")
    assert "not valid JSON" in str(info.value)


def test_file_schema_is_sent_exactly_as_written() -> None:
    """The wire schema is the file's content unchanged; only validation uses the converted form."""
    loaded = from_file("sentiment", Dialect.OPENAPI)
    assert loaded.dialect is Dialect.OPENAPI
    assert loaded.wire == json.loads((SCHEMAS / "sentiment.json").read_text())
    assert loaded.json_schema == openapi_to_json_schema(loaded.wire)
    assert loaded.source == str(SCHEMAS / "sentiment.json")


def test_schema_path_resolves_against_base_dir_or_stays_absolute(tmp_path: Path) -> None:
    """A relative path is taken from base_dir (the job's folder); an absolute one is used as is."""
    config = {"responseJsonSchema": str(SCHEMAS / "entities.json"), **JSON_MODE}
    loaded = load_response_schema(config, tmp_path)
    assert loaded is not None
    assert loaded.dialect is Dialect.JSON_SCHEMA
    assert loaded.wire is loaded.json_schema


def test_inline_schema_errors_name_the_job_file() -> None:
    """An inline schema's problems point into the schema and name the job file it sits in."""
    with pytest.raises(SchemaError) as info:
        inline(Dialect.OPENAPI, obj(a={"type": "ARRAY"}))
    assert info.value.file == "jobs/job.toml"
    assert str(info.value).startswith("jobs/job.toml: ")
    assert inline(Dialect.OPENAPI, obj(a={"type": "STRING"})).source == "jobs/job.toml"


def test_direct_construction_translates_compile_errors() -> None:
    """A ResponseSchema built by hand still fails with SchemaError, never a validator-library error."""
    with pytest.raises(SchemaError) as info:
        ResponseSchema(Dialect.JSON_SCHEMA, {}, {"properties": {"a": {"pattern": "(["}}}, "x.json")
    assert info.value.pointer == "/properties/a/pattern"


def test_response_schema_is_immutable() -> None:
    """A loaded schema is a frozen value shared by every task of the job."""
    loaded = from_file("sentiment", Dialect.OPENAPI)
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.source = "other.json"  # type: ignore[misc]


# --- conversion ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["STRING", "string", "String"])
def test_types_are_case_insensitive(spelling: str) -> None:
    """responseSchema type names are accepted in any case and become JSON Schema's lower-case names."""
    check_openapi_schema({"type": spelling}, file=None)
    assert openapi_to_json_schema({"type": spelling})["type"] == "string"


def test_conversion_targets_draft_2020_12() -> None:
    """The converted schema declares its draft so the validator never guesses."""
    assert openapi_to_json_schema({"type": "STRING"})["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize(
    ("openapi", "expected"),
    [
        pytest.param({"type": "STRING", "nullable": True}, {"type": ["string", "null"]}, id="nullable"),
        pytest.param({"type": "NULL", "nullable": True}, {"type": "null"}, id="nullable-null"),
        pytest.param({"type": "STRING", "nullable": False}, {"type": "string"}, id="not-nullable"),
        pytest.param(
            {"type": "STRING", "enum": ["a", "b"], "nullable": True},
            {"type": ["string", "null"], "enum": ["a", "b", None]},
            id="nullable-enum",
        ),
        pytest.param({"type": "INTEGER", "enum": ["1", "-2"]}, {"type": "integer", "enum": [1, -2]}, id="integer-enum"),
        pytest.param(
            {"type": "NUMBER", "enum": ["0.5", "1"]}, {"type": "number", "enum": [0.5, 1.0]}, id="number-enum"
        ),
        pytest.param(
            {"anyOf": [{"type": "STRING"}, {"type": "INTEGER", "minimum": 1}], "nullable": True},
            {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 1}, {"type": "null"}]},
            id="nullable-anyOf",
        ),
        pytest.param(
            {
                "type": "STRING",
                "format": "date",
                "title": "T",
                "description": "D",
                "default": "x",
                "example": "y",
            },
            {"type": "string", "format": "date", "title": "T", "description": "D", "default": "x"},
            id="annotations-kept-example-dropped",
        ),
        pytest.param(
            {
                "type": "OBJECT",
                "properties": {"b": {"type": "BOOLEAN"}, "a": {"type": "ARRAY", "items": {"type": "NUMBER"}}},
                "required": ["a"],
                "propertyOrdering": ["b", "a"],
                "minProperties": 1,
            },
            {
                "type": "object",
                "properties": {"b": {"type": "boolean"}, "a": {"type": "array", "items": {"type": "number"}}},
                "required": ["a"],
                "minProperties": 1,
            },
            id="propertyOrdering-dropped",
        ),
    ],
)
def test_conversion_details(openapi: dict[str, Any], expected: dict[str, Any]) -> None:
    """nullable, enums, anyOf, annotations and propertyOrdering convert to their JSON Schema meaning."""
    check_openapi_schema(openapi, file=None)
    converted = openapi_to_json_schema(openapi)
    del converted["$schema"]
    assert converted == expected


def test_converted_schemas_are_valid_json_schemas() -> None:
    """Whatever the conversion makes passes the responseJsonSchema checks itself."""
    for name in ("sentiment", "topics"):
        check_json_schema(from_file(name, Dialect.OPENAPI).json_schema, file=name)


# --- validation messages ------------------------------------------------------------------------------------


def test_validation_message_names_the_instance_pointer() -> None:
    """A mismatch deep in the output is reported with its pointer, then the reason."""
    loaded = from_file("topics", Dialect.OPENAPI)
    output = {
        "primary_topic": "billing",
        "topics": ["billing", "x"],
        "urgency": 2,
        "is_spam": False,
        "language": "en",
    }
    assert loaded.validate(output) == '/topics/1: "x" is not one of "billing", "shipping" or 4 other candidates'
    del output["topics"]
    assert loaded.validate(output) == '/: "topics" is a required property'


def test_validation_message_escapes_keys_and_stays_short() -> None:
    """Keys with / and ~ are escaped per RFC 6901, and a huge offending value does not make a huge message."""
    loaded = inline(Dialect.JSON_SCHEMA, {"properties": {"a/b~c": {"type": "integer"}}})
    message = loaded.validate({"a/b~c": "x" * 10_000})
    assert message is not None
    assert message.startswith("/a~1b~0c: ")
    assert len(message) < 250


@pytest.mark.parametrize(
    ("name", "dialect", "output"),
    [
        pytest.param(
            "sentiment",
            Dialect.OPENAPI,
            {"sentiment": "mixed", "confidence": 0.7, "aspects": []},
            id="sentiment",
        ),
        pytest.param(
            "topics",
            Dialect.OPENAPI,
            {
                "primary_topic": "returns",
                "topics": ["returns", "billing"],
                "urgency": 4,
                "is_spam": False,
                "language": "de",
                "follow_up": {"channel": "email", "before": None},
                "keywords": ["refund"],
            },
            id="topics",
        ),
        pytest.param(
            "entities",
            Dialect.JSON_SCHEMA,
            {
                "entities": [
                    {
                        "name": "Ada",
                        "kind": "person",
                        "salience": 0.9,
                        "mentions": [{"start": 0, "end": 3}],
                        "wikipedia_url": None,
                    }
                ],
                "relations": [{"subject": "Ada", "predicate": "works_for", "object": "ACME"}],
                "language": "en",
                "quoted_figure": None,
            },
            id="entities",
        ),
        pytest.param(
            "invoice",
            Dialect.JSON_SCHEMA,
            {
                "invoice_number": "INV-7",
                "issue_date": "2026-01-31",
                "currency": "EUR",
                "vendor": {"name": "ACME", "address": {"city": "Berlin", "country": "DE"}},
                "line_items": [{"description": "Widget", "quantity": 2, "unit_price": 9.5, "tax_rate": 0.19}],
                "total": 22.61,
            },
            id="invoice",
        ),
    ],
)
def test_schema_files_accept_realistic_outputs(name: str, dialect: Dialect, output: Any) -> None:
    """Each shipped schema accepts a realistic model output and types every column of it."""
    loaded = from_file(name, dialect)
    assert loaded.validate(output) is None
    columns = loaded.arrow_columns([output])
    row = pa.Table.from_arrays(columns, schema=loaded.arrow_schema()).to_pylist()[0]
    stored = {key: value.isoformat() if isinstance(value, date) else value for key, value in row.items()}
    assert all(stored[f"out_{key}"] == value for key, value in output.items() if not isinstance(value, dict | list))


# --- typed columns ------------------------------------------------------------------------------------------

ENUM = pa.dictionary(pa.int32(), pa.string())


def element(item: pa.DataType) -> pa.DataType:
    return pa.list_(pa.field("element", item))


ARROW_TYPES = [
    pytest.param({"type": "string"}, pa.string(), "x", "x", id="string"),
    pytest.param({"type": "string", "enum": ["a", "b"]}, ENUM, "a", "a", id="string-enum"),
    pytest.param({"const": "a"}, ENUM, "a", "a", id="const"),
    pytest.param({"type": "integer"}, pa.int64(), 3, 3, id="integer"),
    pytest.param({"type": "integer"}, pa.int64(), 3.0, 3, id="integer-written-as-float"),
    pytest.param({"type": "integer", "enum": [1, 2]}, pa.int64(), 2, 2, id="integer-enum"),
    pytest.param({"type": "number"}, pa.float64(), 2, 2.0, id="number"),
    pytest.param({"enum": [0.5, 1]}, pa.float64(), 1, 1.0, id="number-enum"),
    pytest.param({"type": "boolean"}, pa.bool_(), False, False, id="boolean"),
    pytest.param({"type": ["string", "null"]}, pa.string(), None, None, id="nullable"),
    pytest.param({"anyOf": [{"type": "integer"}, {"type": "null"}]}, pa.int64(), 5, 5, id="anyOf-with-null"),
    pytest.param({"type": ["integer", "number"]}, pa.float64(), 1, 1.0, id="integer-or-number"),
    pytest.param(
        {"anyOf": [{"type": "string", "enum": ["a"]}, {"type": "string"}]},
        pa.string(),
        "z",
        "z",
        id="enum-or-string",
    ),
    pytest.param({"anyOf": [{"type": "string"}, {"type": "integer"}]}, pa.string(), 3, "3", id="anyOf-mixed-json"),
    pytest.param({"type": ["string", "integer"]}, pa.string(), "x", '"x"', id="type-list-mixed-json"),
    pytest.param({"type": "object"}, pa.string(), {"k": [1, None]}, '{"k":[1,null]}', id="free-form-object-json"),
    pytest.param({}, pa.string(), [1, "a"], '[1,"a"]', id="anything-json"),
    pytest.param({"type": "null"}, pa.string(), None, None, id="null-only"),
    pytest.param({"type": "array", "items": {"type": "string"}}, element(pa.string()), ["a"], ["a"], id="array"),
    pytest.param({"type": "array", "items": {"enum": ["a", "b"]}}, element(ENUM), ["b"], ["b"], id="array-of-enum"),
    pytest.param({"type": "array"}, element(pa.string()), [{"a": 1}], ['{"a":1}'], id="array-any-items-json"),
    pytest.param(
        {"prefixItems": [{"type": "string"}, {"type": "integer"}]},
        pa.string(),
        ["a", 1],
        '["a",1]',
        id="tuple-json",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {"n": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
        },
        pa.struct([pa.field("n", pa.int64()), pa.field("tags", element(pa.string()))]),
        {"n": 1, "tags": ["t"]},
        {"n": 1, "tags": ["t"]},
        id="object-struct",
    ),
    pytest.param(
        {
            "$defs": {
                "node": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "child": {"$ref": "#/properties/p"}},
                }
            },
            "$ref": "#/properties/p/$defs/node",
        },
        pa.struct([pa.field("name", pa.string()), pa.field("child", pa.string())]),
        {"name": "a", "child": {"name": "b"}},
        {"name": "a", "child": '{"name":"b"}'},
        id="recursive-ref-ends-in-json",
    ),
]


@pytest.mark.parametrize(("prop", "arrow_type", "value", "stored"), ARROW_TYPES)
def test_arrow_type_per_property_kind(prop: dict[str, Any], arrow_type: pa.DataType, value: Any, stored: Any) -> None:
    """Each kind of property maps to its Arrow type, and a conforming value is stored in it."""
    loaded = inline(Dialect.JSON_SCHEMA, {"type": "object", "properties": {"p": prop}})
    assert loaded.validate({"p": value}) is None
    assert loaded.arrow_schema() == pa.schema([pa.field("out_p", arrow_type)])
    (column,) = loaded.arrow_columns([{"p": value}])
    assert column.type == arrow_type
    assert column.to_pylist() == [stored]


@pytest.mark.parametrize(
    ("prop", "arrow_type"),
    [
        pytest.param({"type": "STRING", "enum": ["a"]}, ENUM, id="enum"),
        pytest.param({"type": "INTEGER", "enum": ["1", "2"]}, pa.int64(), id="integer-enum"),
        pytest.param({"type": "NUMBER", "nullable": True}, pa.float64(), id="nullable-number"),
        pytest.param(
            {"type": "OBJECT", "nullable": True, "properties": {"x": {"type": "BOOLEAN"}}},
            pa.struct([pa.field("x", pa.bool_())]),
            id="nullable-object",
        ),
        pytest.param({"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]}, pa.string(), id="anyOf-mixed"),
    ],
)
def test_arrow_types_from_response_schema(prop: dict[str, Any], arrow_type: pa.DataType) -> None:
    """responseSchema properties get their types through the converted schema."""
    loaded = inline(Dialect.OPENAPI, obj(p=prop))
    assert loaded.arrow_schema().field("out_p").type == arrow_type


def test_columns_follow_property_order_and_prefix() -> None:
    """Columns come in the schema's property order (also behind $ref), named with the configurable prefix."""
    invoice = from_file("invoice", Dialect.JSON_SCHEMA)
    assert invoice.arrow_schema("x_").names[:4] == [
        "x_invoice_number",
        "x_issue_date",
        "x_due_date",
        "x_currency",
    ]
    address = invoice.arrow_schema().field("out_vendor").type.field("address").type
    assert [address.field(i).name for i in range(address.num_fields)] == [
        "street",
        "city",
        "postal_code",
        "country",
    ]
    assert all(field.nullable for field in invoice.arrow_schema())


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param({"type": "array", "items": {"type": "string"}}, id="array-root"),
        pytest.param({"type": "object"}, id="free-form-root"),
        pytest.param({"anyOf": [{"type": "string"}, {"type": "object", "properties": {"a": {}}}]}, id="union-root"),
    ],
)
def test_no_columns_unless_the_root_is_an_object_with_properties(schema: dict[str, Any]) -> None:
    """Typed columns need named top-level properties; otherwise only output_json carries the output."""
    loaded = inline(Dialect.JSON_SCHEMA, schema)
    assert len(loaded.arrow_schema()) == 0
    assert loaded.arrow_columns([["a"], None]) == []


def test_values_that_do_not_fit_become_null_never_an_error() -> None:
    """Misfits (wrong type, out of int64 range, non-object rows) are nulls; conforming values are kept."""
    loaded = from_file("topics", Dialect.OPENAPI)
    outputs = [
        {
            "primary_topic": 7,
            "topics": ["billing", 3],
            "urgency": 2**70,
            "is_spam": "no",
            "follow_up": {"channel": 1},
        },
        "not an object",
        None,
        {"urgency": 1.5, "keywords": "not a list", "follow_up": []},
    ]
    table = pa.Table.from_arrays(loaded.arrow_columns(outputs), schema=loaded.arrow_schema())
    rows = table.to_pylist()
    assert rows[0]["out_topics"] == ["billing", None]
    assert rows[0]["out_follow_up"] == {"channel": None, "before": None}
    assert rows[0]["out_primary_topic"] is None and rows[0]["out_urgency"] is None and rows[0]["out_is_spam"] is None
    assert all(value is None for row in rows[1:] for value in row.values())


SENTIMENT_OUTPUTS = [
    {"sentiment": "positive", "confidence": 0.93, "aspects": ["price", "delivery"]},
    None,  # a row that failed: nulls in every typed column
    {"sentiment": "mixed", "confidence": 1, "aspects": []},
    None,
    {"sentiment": "negative", "confidence": 0.2, "aspects": ["support"]},
]


def write_parquet(loaded: ResponseSchema, outputs: list[Any], path: Path) -> pa.Table:
    table = pa.Table.from_arrays(
        [pa.array([f"r{i}" for i in range(len(outputs))]), *loaded.arrow_columns(outputs)],
        schema=pa.schema([pa.field("id", pa.string()), *loaded.arrow_schema()]),
    )
    pq.write_table(table, path)
    return table


def test_enum_categories_follow_the_schema_not_the_answers(tmp_path: Path) -> None:
    """An enum column's categories are the schema's values in the schema's order, in every part (also one
    whose rows used none, or used them in another order), at any depth: a DataFrame's categorical and a
    chart's axis list them as the schema does, not in order of first appearance."""
    schema = {
        "type": "object",
        "properties": {
            "level": {"type": "string", "enum": ["low", "medium", "high"]},
            "tags": {"type": "array", "items": {"type": "object", "properties": {"kind": {"enum": ["a", "b", "c"]}}}},
        },
    }
    loaded = inline(Dialect.JSON_SCHEMA, schema)
    write_parquet(
        loaded, [{"level": "high", "tags": [{"kind": "c"}]}, {"level": "low", "tags": []}], tmp_path / "1.parquet"
    )
    write_parquet(loaded, [None, {"level": "extreme", "tags": None}], tmp_path / "2.parquet")
    frame = pd.read_parquet(tmp_path)
    assert list(frame["out_level"].cat.categories) == ["low", "medium", "high"]
    assert frame["out_level"].tolist()[:2] == ["high", "low"] and frame["out_level"].isna().tolist()[2:] == [True] * 2
    kinds = pq.read_table(tmp_path / "1.parquet").column("out_tags").combine_chunks().flatten().field("kind")
    assert kinds.dictionary.to_pylist() == ["a", "b", "c"] and kinds.to_pylist() == ["c"]


def test_date_and_date_time_formats_are_arrow_dates_and_utc_timestamps() -> None:
    """`format: date` is date32 and `format: date-time` a UTC timestamp (an offset converted, none taken as
    UTC); what does not parse is null, like any misfit."""
    loaded = inline(
        Dialect.OPENAPI,
        obj(day={"type": "STRING", "format": "date"}, at={"type": "STRING", "format": "date-time", "nullable": True}),
    )
    assert loaded.arrow_schema().field("out_day").type == pa.date32()
    assert loaded.arrow_schema().field("out_at").type == pa.timestamp("us", tz="UTC")
    outputs = [
        {"day": "2026-02-01", "at": "2026-02-01T10:30:00+02:00"},
        {"day": "2026-02-01T23:00:00Z", "at": "2026-02-01T10:30:00"},
        {"day": "next tuesday", "at": None},
    ]
    day, at = loaded.arrow_columns(outputs)
    assert day.to_pylist() == [date(2026, 2, 1), date(2026, 2, 1), None]
    assert at.to_pylist() == [datetime(2026, 2, 1, 8, 30, tzinfo=UTC), datetime(2026, 2, 1, 10, 30, tzinfo=UTC), None]


def test_typed_columns_round_trip_through_parquet_with_pyarrow(tmp_path: Path) -> None:
    """Written with pyarrow.parquet, the typed columns read back with the same schema and values."""
    loaded = from_file("sentiment", Dialect.OPENAPI)
    written = write_parquet(loaded, SENTIMENT_OUTPUTS, tmp_path / "part-0.parquet")
    read = pq.read_table(tmp_path / "part-0.parquet")
    assert read.schema.equals(written.schema)
    assert read.schema.field("out_sentiment").type == ENUM
    assert read.schema.field("out_confidence").type == pa.float64()
    assert read.schema.field("out_aspects").type == element(pa.string())
    assert read.column("out_sentiment").to_pylist() == ["positive", None, "mixed", None, "negative"]
    assert read.column("out_confidence").to_pylist() == [0.93, None, 1.0, None, 0.2]
    assert read.column("out_aspects").to_pylist() == [["price", "delivery"], None, [], None, ["support"]]


def test_every_part_gets_the_same_schema(tmp_path: Path) -> None:
    """Parts with no ok rows at all still carry the full typed schema, so a dataset of parts reads as one."""
    loaded = from_file("entities", Dialect.JSON_SCHEMA)
    output = {
        "entities": [{"name": "Ada", "kind": "person", "salience": 0.5, "mentions": [], "wikipedia_url": None}],
        "relations": [],
        "language": "en",
        "quoted_figure": 3.5,
    }
    write_parquet(loaded, [output], tmp_path / "part-0.parquet")
    write_parquet(loaded, [None, None], tmp_path / "part-1.parquet")
    schemas = [pq.read_schema(tmp_path / f"part-{i}.parquet") for i in range(2)]
    assert schemas[0].equals(schemas[1])
    assert pq.read_table(tmp_path).num_rows == 3


def test_typed_columns_read_back_with_duckdb(tmp_path: Path) -> None:
    """DuckDB sees enums as VARCHAR, integers as BIGINT, numbers as DOUBLE, lists and structs as such."""
    loaded = from_file("invoice", Dialect.JSON_SCHEMA)
    output = {
        "invoice_number": "INV-1",
        "issue_date": "2026-02-01",
        "due_date": None,
        "currency": "USD",
        "vendor": {
            "name": "ACME",
            "vat_id": None,
            "address": {"street": "1 Main", "city": "Oslo", "country": "NO"},
        },
        "line_items": [{"description": "Bolt", "quantity": 10, "unit_price": 0.25, "tax_rate": 0.2}],
        "subtotal": 2.5,
        "total": 3.0,
        "paid": True,
        "payment_terms_days": 30,
        "extra_fields": {"po": "77"},
    }
    path = tmp_path / "part-0.parquet"
    write_parquet(loaded, [output, None], path)
    with duckdb.connect() as con:
        types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{path}')").fetchall())
        rows = con.execute(
            f"SELECT out_currency, out_payment_terms_days, out_total, out_paid, out_vendor.address.city, "
            f"out_line_items[1].quantity, out_extra_fields::JSON->>'po' FROM '{path}' ORDER BY id"
        ).fetchall()
    assert types["out_invoice_number"] == "VARCHAR"
    assert types["out_currency"] == "VARCHAR"
    assert types["out_payment_terms_days"] == "BIGINT"
    assert types["out_total"] == "DOUBLE"
    assert types["out_paid"] == "BOOLEAN"
    assert types["out_extra_fields"] == "VARCHAR"
    assert types["out_vendor"] == (
        'STRUCT("name" VARCHAR, vat_id VARCHAR, '
        "address STRUCT(street VARCHAR, city VARCHAR, postal_code VARCHAR, country VARCHAR))"
    )
    assert (
        types["out_line_items"] == "STRUCT(description VARCHAR, quantity DOUBLE, unit_price DOUBLE, tax_rate DOUBLE)[]"
    )
    assert rows == [("USD", 30, 3.0, True, "Oslo", 10.0, "77"), (None, None, None, None, None, None, None)]
