"""A job's response schema: loaded from the job, checked once, compiled for validation, typed for columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pyarrow as pa

from batchgen.errors import ConfigError, SchemaError
from batchgen.schema.arrow import Shape, property_shapes
from batchgen.schema.dialect import BASE_URI, Dialect, pointer, shorten
from batchgen.schema.jsonschema import check_json_schema
from batchgen.schema.openapi import check_openapi_schema, openapi_to_json_schema


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
    _fields: tuple[tuple[str, Shape], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_validator", _compile(self.json_schema, self.source))
        object.__setattr__(self, "_fields", property_shapes(self.json_schema))

    def __reduce__(self) -> tuple[type[ResponseSchema], tuple[Any, ...]]:
        # A compiled validator cannot be pickled: a schema sent to another process (a Ray worker) is rebuilt
        # from its values there, and compiled again.
        return ResponseSchema, (self.dialect, self.wire, self.json_schema, self.source)

    def validate(self, value: Any) -> str | None:
        """None when `value` conforms, else a short message starting with the JSON pointer of the problem."""
        if self._validator.is_valid(value):
            return None
        error = next(self._validator.iter_errors(value))
        return f"{pointer(error.instance_path) or '/'}: {shorten(error.message)}"

    def arrow_schema(self, prefix: str = "out_") -> pa.Schema:
        """One nullable column per top-level property, in schema order; empty unless the root is an object."""
        return pa.schema([pa.field(prefix + name, shape.type) for name, shape in self._fields])

    def arrow_columns(self, outputs: Sequence[Any]) -> list[pa.Array]:
        """The arrays for `arrow_schema`'s fields, one value per output; None or a misfit becomes null."""
        return [
            shape.array([shape.convert(out.get(name)) if isinstance(out, dict) else None for out in outputs])
            for name, shape in self._fields
        ]


def _compile(json_schema: dict[str, Any], source: str | None) -> jsonschema_rs.Validator:
    # Formats stay annotations (the 2020-12 default): the API gives most of them no effect, so asserting them
    # would fail rows the model wrote in good faith. `offline` because no schema may reach the network.
    try:
        return jsonschema_rs.validator_for(json_schema, validate_formats=False, offline=True, base_uri=BASE_URI)
    except (
        ValueError,
        jsonschema_rs.ReferencingError,
    ) as exc:  # ValidationError (a bad pattern) is a ValueError
        path = getattr(exc, "instance_path", ())
        raise SchemaError(shorten(getattr(exc, "message", str(exc))), file=source, pointer=pointer(path)) from exc


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
