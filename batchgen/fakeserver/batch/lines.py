"""A batchGenerateContent request checked, and the input lines it names, read one at a time.

The body (ai.google.dev/api/batch-api; the SDK's `_CreateBatchJobParameters_to_mldev`):

    {"batch": {"displayName": "...", "priority": "0",
               "inputConfig": {"fileName": "files/abc"}
                            | {"requests": {"requests": [{"request": {GenerateContentRequest},
                                                          "metadata": {"key": "..."}}]}}}}

An input file is JSONL, one `{"key": "...", "request": {GenerateContentRequest}}` per line (cookbook
quickstarts/Batch_mode.ipynb). The body's own shape is checked when the job is created (a 400 refuses the
whole batch, as proto parsing of the body would); each line is read when the job reaches it, so a malformed
line fails alone and becomes an error line (INVALID_ARGUMENT), as a bad line inside a good batch does at
Google (UKGovernmentBEIS/inspect_ai PR #3273 quotes one).

A display name may carry job directives: `[[fake:batch_failed]]` or `[[fake:batch_expired]]`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from batchgen.fakeserver.batch.files import FileStore
from batchgen.fakeserver.errors import RpcError, invalid_argument, unknown_field

_JOB_DIRECTIVE = re.compile(r"\[\[fake:(batch_failed|batch_expired)\]\]")
_BATCH_FIELDS = frozenset({"displayName", "inputConfig", "priority", "model", "name", "webhookConfig"})
_INLINE_FIELDS = frozenset({"request", "metadata"})
# "Inline requests: total request size < 20 MB" (batch docs); the live message for an oversized payload.
INLINE_LIMIT = 20 * 1024 * 1024


def payload_too_large() -> RpcError:
    return invalid_argument(f"Request payload size exceeds the limit: {INLINE_LIMIT} bytes.")


@dataclass(frozen=True, slots=True)
class Line:
    """One input line as submitted: a raw JSONL line (`raw`) or an inline request entry (`item`)."""

    index: int
    raw: bytes | None = None
    item: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """A line read: its key (file `key`, or inline `metadata.key`), the inline metadata to echo back, and
    either the GenerateContentRequest object or why there is none."""

    key: str | None
    metadata: Mapping[str, Any] | None
    request: Mapping[str, Any] | None
    problem: RpcError | None = None


@dataclass(frozen=True, slots=True)
class BatchInput:
    """A checked create request."""

    display_name: str
    priority: int
    file_name: str | None
    lines: tuple[Line, ...]
    directive: str | None

    @property
    def inline(self) -> bool:
        return self.file_name is None


def parse_create(payload: Mapping[str, Any], files: FileStore) -> BatchInput:
    """Check a create body; read the input file's lines (an unknown file answers as the Files API does)."""
    for key in payload:
        if key != "batch":
            raise unknown_field(key)
    batch = _object(payload.get("batch"), "batch")
    for key in batch:
        if key not in _BATCH_FIELDS:
            raise unknown_field(key, "batch")
    display_name = batch.get("displayName", "")
    if not isinstance(display_name, str):
        raise invalid_argument(f"Invalid value at 'batch.display_name' (TYPE_STRING), {display_name!r}")
    config = _object(batch.get("inputConfig"), "batch.input_config")
    file_name, lines = _input(config, files)
    if not lines:
        raise invalid_argument("* BatchGenerateContentRequest.batch.input_config: the batch has no requests.\n")
    directive = _JOB_DIRECTIVE.search(display_name)
    return BatchInput(
        display_name, _priority(batch.get("priority")), file_name, lines, directive[1] if directive else None
    )


def read_line(line: Line) -> Entry:
    """What a line asks for, or what is wrong with it."""
    if line.item is not None:
        metadata = line.item.get("metadata")
        key = metadata.get("key") if isinstance(metadata, Mapping) else None
        return Entry(key if isinstance(key, str) else None, metadata, line.item["request"])
    assert line.raw is not None
    try:
        value = orjson.loads(line.raw)
    except orjson.JSONDecodeError as exc:
        return Entry(None, None, None, invalid_argument(f"Invalid JSON payload received. {exc}"))
    if not isinstance(value, dict):
        return Entry(None, None, None, invalid_argument("Invalid JSON payload received. Expected an object."))
    key = value.get("key")
    key = str(key) if isinstance(key, (str, int)) and not isinstance(key, bool) else None
    request = value.get("request")
    if not isinstance(request, dict):
        return Entry(key, None, None, invalid_argument("* request: a GenerateContentRequest object is required.\n"))
    return Entry(key, None, request)


def _input(config: Mapping[str, Any], files: FileStore) -> tuple[str | None, tuple[Line, ...]]:
    has_file, has_requests = "fileName" in config, "requests" in config
    if has_file == has_requests:
        raise invalid_argument(
            "* BatchGenerateContentRequest.batch.input_config: exactly one of file_name or requests must be set.\n"
        )
    if has_file:
        name = config["fileName"]
        if not isinstance(name, str) or not name.startswith("files/"):
            raise invalid_argument(f"Invalid file name {name!r}: expected files/{{id}}.")
        data = files.get(name.removeprefix("files/")).data
        raw = (line.strip() for line in data.split(b"\n"))
        return name, tuple(Line(index, raw=text) for index, text in enumerate(t for t in raw if t))
    requests = _object(config["requests"], "batch.input_config.requests").get("requests")
    if not isinstance(requests, list):
        raise invalid_argument("Invalid JSON payload received. Expected a list for 'requests.requests'.")
    return None, tuple(Line(index, item=_inline_item(item, index)) for index, item in enumerate(requests))


def _inline_item(item: Any, index: int) -> Mapping[str, Any]:
    where = f"batch.input_config.requests.requests[{index}]"
    entry = _object(item, where)
    for key in entry:
        if key not in _INLINE_FIELDS:
            raise unknown_field(key, where)
    _object(entry.get("request"), f"{where}.request")
    if entry.get("metadata") is not None:
        _object(entry["metadata"], f"{where}.metadata")
    return entry


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid_argument(f"* BatchGenerateContentRequest.{where}: an object is required.\n")
    return value


def _priority(value: Any) -> int:
    # int64 in proto JSON: a string, though a number is accepted too.
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise invalid_argument(f"Invalid value at 'batch.priority' (TYPE_INT64), {orjson.dumps(value).decode()}")
