"""The Batch API's wire format, as pure functions: input lines, job operations, results lines (no I/O).

    request_line     one `{"key", "request"}` line of a job's JSONL input file
    create_body      the `batchGenerateContent` body of a job over an uploaded file
    Operation        a batch job as its long-running operation shows it: state, counts, output file, error
    ResultLine       one line of a job's results file: its key, and the response or the error

Shapes follow shared/reference/gemini-api.md section 8, the recorded facts ("Batch API") and the SDK's
`batches.py`. Where the docs leave a shape open (UNCONFIRMED), every plausible answer is read: a failed line
carries `error` ({code, message, status}) or `status` (a google.rpc.Status, whose code is gRPC's), and a
line whose `response` is missing or null failed whatever else it holds. States come as `BATCH_STATE_*`
(REST) or `JOB_STATE_*` (the SDK's names, and Vertex's extra states); both read as the same short names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchgen.errors import ApiError, MalformedResponse
from batchgen.gemini.errors import error_from_response

PENDING = "PENDING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
EXPIRED = "EXPIRED"
# PARTIALLY_SUCCEEDED is Vertex's; it ends a job with output, as SUCCEEDED does.
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED, "PARTIALLY_SUCCEEDED"})
_STATE_PREFIXES = ("BATCH_STATE_", "JOB_STATE_")
# The JSONL input file's MIME type as the cookbook uploads it (quickstarts/Batch_mode.ipynb: mime_type="jsonl").
INPUT_MIME_TYPE = "jsonl"
# google.rpc.Code numbers (what a `status` object's `code` holds) and the HTTP status each maps to.
_RPC_CODES: Mapping[int, tuple[str, int]] = {
    1: ("CANCELLED", 499),
    2: ("UNKNOWN", 500),
    3: ("INVALID_ARGUMENT", 400),
    4: ("DEADLINE_EXCEEDED", 504),
    5: ("NOT_FOUND", 404),
    6: ("ALREADY_EXISTS", 409),
    7: ("PERMISSION_DENIED", 403),
    8: ("RESOURCE_EXHAUSTED", 429),
    9: ("FAILED_PRECONDITION", 400),
    10: ("ABORTED", 409),
    11: ("OUT_OF_RANGE", 400),
    12: ("UNIMPLEMENTED", 501),
    13: ("INTERNAL", 500),
    14: ("UNAVAILABLE", 503),
    15: ("DATA_LOSS", 500),
    16: ("UNAUTHENTICATED", 401),
}


def request_line(key: str, body: bytes) -> bytes:
    """One input line: the row's id as the key and its request body exactly as an online call sends it."""
    return b'{"key":' + orjson.dumps(key) + b',"request":' + body + b"}\n"


def create_body(display_name: str, file_name: str) -> bytes:
    """The body that creates a batch job over the uploaded JSONL file `file_name` (`files/...`)."""
    return orjson.dumps({"batch": {"displayName": display_name, "inputConfig": {"fileName": file_name}}})


def file_name(data: Any) -> str:
    """The name (`files/...`) of the File in a Files API answer (`{"file": {...}}`, or the File itself)."""
    file = data.get("file", data) if isinstance(data, Mapping) else None
    name = file.get("name") if isinstance(file, Mapping) else None
    if not isinstance(name, str) or not name.startswith("files/"):
        raise MalformedResponse("the Files API answer names no file")
    return name


@dataclass(frozen=True, slots=True)
class Operation:
    """A batch job as `batches.get` (or create, or list) shows it.

    `state` is the short name (PENDING, RUNNING, SUCCEEDED, ...); `counts` the int64-string `batchStats` read
    as numbers; `error` the operation's error message when the job ended without succeeding.
    """

    name: str
    state: str
    display_name: str | None = None
    responses_file: str | None = None
    create_time: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None
    done: bool = False

    @property
    def terminal(self) -> bool:
        """Whether the job has ended (it will not change any more)."""
        return self.done or self.state in TERMINAL


def parse_operation(data: Any) -> Operation:
    """A batch job's operation; MalformedResponse when the answer is not one."""
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
        raise MalformedResponse("the Batch API answer is not a batch operation (no name)")
    metadata = data.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    output = metadata.get("output") or data.get("response") or {}
    responses = output.get("responsesFile") if isinstance(output, Mapping) else None
    error = data.get("error")
    return Operation(
        name=data["name"],
        state=_short_state(metadata.get("state") or data.get("state")),
        display_name=_text(metadata.get("displayName")),
        responses_file=responses if isinstance(responses, str) else None,
        create_time=_text(metadata.get("createTime")),
        counts=_counts(metadata.get("batchStats")),
        error=_status_text(error) if isinstance(error, Mapping) else None,
        done=data.get("done") is True,
    )


def parse_operations(data: Any) -> tuple[list[Operation], str | None]:
    """A `batches.list` page: its operations (unreadable entries left out) and the next page's token."""
    if not isinstance(data, Mapping):
        raise MalformedResponse("the Batch API list answer is not an object")
    entries = data.get("operations") or data.get("batches") or []
    operations = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            operations.append(parse_operation(entry))
        except MalformedResponse:
            continue
    token = data.get("nextPageToken")
    return operations, token if isinstance(token, str) and token else None


@dataclass(frozen=True, slots=True)
class ResultLine:
    """One results line: its key, and either the response or the error that took its place."""

    key: str | None
    response: Mapping[str, Any] | None
    error: ApiError | None


def parse_result_line(raw: bytes) -> ResultLine:
    """Read one line of a results file. Anything without a usable `response` object is a failed line, its
    error mapped as an HTTP answer of the same status would be."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ResultLine(None, None, MalformedResponse(f"a results line is not JSON ({len(raw)} bytes)"))
    if not isinstance(value, Mapping):
        return ResultLine(None, None, MalformedResponse("a results line is not a JSON object"))
    raw_key = value.get("key")
    key = str(raw_key) if isinstance(raw_key, str | int) and not isinstance(raw_key, bool) else None
    response = value.get("response")
    if isinstance(response, Mapping):
        return ResultLine(key, response, None)
    status = value.get("error") or value.get("status")
    if isinstance(status, Mapping):
        return ResultLine(key, None, line_error(status))
    return ResultLine(key, None, MalformedResponse("the results line has no response and no error"))


def line_error(status: Mapping[str, Any]) -> ApiError:
    """A failed line's `error` / `status` object as the error an HTTP answer with that status would be.

    `code` is an HTTP status in the `{"code", "message", "status"}` shape and a gRPC code (0-16) in a
    google.rpc.Status; the two ranges do not overlap, so either is read right.
    """
    code = status.get("code")
    name = status.get("status")
    http = 500
    if isinstance(code, int) and not isinstance(code, bool):
        if code in _RPC_CODES:
            name = name or _RPC_CODES[code][0]
            http = _RPC_CODES[code][1]
        elif 100 <= code < 600:
            http = code
    message = str(status.get("message") or "no message")
    body = {"error": {"code": http, "message": f"batch line: {message}", "status": name, **_details(status)}}
    return error_from_response(http, orjson.dumps(body))


def _details(status: Mapping[str, Any]) -> dict[str, Any]:
    details = status.get("details")
    return {"details": details} if isinstance(details, list) else {}


def _short_state(state: Any) -> str:
    text = str(state or "UNSPECIFIED")
    for prefix in _STATE_PREFIXES:
        text = text.removeprefix(prefix)
    return text


def _counts(stats: Any) -> dict[str, int]:
    # int64 fields come as strings ("5"); zero counts are left out, as proto JSON does.
    if not isinstance(stats, Mapping):
        return {}
    counts = {}
    for name, value in stats.items():
        try:
            counts[str(name)] = int(value)
        except (TypeError, ValueError):
            continue
    return counts


def _status_text(error: Mapping[str, Any]) -> str:
    code = error.get("code")
    name = _RPC_CODES[code][0] if isinstance(code, int) and code in _RPC_CODES else error.get("status")
    message = error.get("message") or "no message"
    return f"{name}: {message}" if name else str(message)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
