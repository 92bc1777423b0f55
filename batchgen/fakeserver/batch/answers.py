"""How one batch line is answered: by the online answer generator, or with an error line, or not at all.

A line's request is checked and answered exactly as a generateContent call with the same model and body
(compact JSON, as `orjson.dumps` writes it) would be: the same text, the same usage. What can go wrong:

- a line that is not JSON, has no `request`, or whose request the API would refuse: an error line
  (INVALID_ARGUMENT, or whatever the online check answers);
- a prompt directive: `[[fake:missing]]` leaves the key out of the output, `[[fake:error_line]]` and
  `[[fake:status_line]]` answer an error line in that shape, 429 / 429help / 429day / 500 / 503 answer an
  error line with that status, the other transport faults an INTERNAL one (`nocandidates` a response without
  candidates), and output faults break the response as they do online. Directives count attempts per
  request, shared with the online routes, so `[[fake:500*1]]` fails once and is answered when resubmitted;
- otherwise a draw against `error_rate` and `missing_rate`, per job and line.

Output lines (file): `{"response": {...}, "key": k}`, or `{"error": {"code": 500, "message", "status":
"INTERNAL"}, "key": k}` / `{"status": {"code": 13, "message"}, "key": k}` (see BatchConfig.error_shape);
a line without a key has none. Inline: `{"response" | "error": {"code": 13, "message"}, "metadata": {...}}`,
the error a google.rpc.Status as the SDK's `JobError` reads it (code, message; no details).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from batchgen.fakeserver import errors
from batchgen.fakeserver.batch.config import BatchConfig
from batchgen.fakeserver.batch.lines import Entry, Line, read_line
from batchgen.fakeserver.batch.resources import rpc_status
from batchgen.fakeserver.config import OUTPUT_FAULTS
from batchgen.fakeserver.content import answer_rng, compose
from batchgen.fakeserver.faults import FaultPlanner, directed_fault, request_key, unit
from batchgen.fakeserver.request import GenerateRequest, parse_generate
from batchgen.fakeserver.response import no_candidates_body, unary_body
from batchgen.fakeserver.schema import SchemaCache
from batchgen.fakeserver.stats import Ledger
from batchgen.fakeserver.tokens import Usage

_LINE_ERRORS = {
    "429": errors.shared_capacity(None),
    "429help": errors.shared_capacity(None),
    "429day": errors.shared_capacity(None),
    "500": errors.internal(),
    "503": errors.unavailable(),
}
_RANDOM_ERRORS = (errors.shared_capacity(None), errors.internal(), errors.unavailable())
# Salts that keep each per-line draw independent of the others.
_MISSING, _ERROR, _KIND, _SHAPE = 21, 22, 23, 24
# The fault of a line drawn against `error_rate` (not a directive name, so no prompt can ask for it).
_DRAWN_ERROR = "drawn error"


@dataclass(frozen=True, slots=True)
class Result:
    """One answered line: what it became, and the output it contributes (none when missing)."""

    index: int
    key: str | None
    outcome: str
    output: dict[str, Any] | None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Context:
    """What the answers of one job depend on besides the line: the server's shared state and the job."""

    config: BatchConfig
    seed: int
    faults: FaultPlanner
    schemas: SchemaCache
    ledger: Ledger
    model: str
    job_number: int
    inline: bool


def answer(line: Line, context: Context) -> Result:
    """Answer one line of a job."""
    entry = read_line(line)
    if entry.problem is not None:
        return _failed(line, entry, entry.problem, context)
    assert entry.request is not None
    try:
        parsed = parse_generate(context.model, entry.request, context.schemas)
    except errors.RpcError as error:
        return _failed(line, entry, error, context)
    key = request_key(context.model, orjson.dumps(entry.request))
    fault = _directed(parsed, key, context) if parsed.directives else _drawn(key, line, context)
    if fault == "missing":
        return Result(line.index, entry.key, "missing", None)
    line_error = _line_error(fault, key, line, context)
    if line_error is not None:
        shape = fault.removesuffix("_line") if fault in ("error_line", "status_line") else None
        return _failed(line, entry, line_error, context, shape)
    return _succeeded(line, entry, parsed, key, fault, context)


def _directed(parsed: GenerateRequest, key: int, context: Context) -> str | None:
    fault = directed_fault(parsed.directives, context.faults.next_attempt(key))
    if fault is not None:
        context.ledger.faults[fault] += 1
    return fault


def _drawn(key: int, line: Line, context: Context) -> str | None:
    config = context.config
    if config.missing_rate and _draw(context, key, line, _MISSING) < config.missing_rate:
        return "missing"
    if config.error_rate and _draw(context, key, line, _ERROR) < config.error_rate:
        return _DRAWN_ERROR
    return None


def _line_error(fault: str | None, key: int, line: Line, context: Context) -> errors.RpcError | None:
    """The error a line's fault answers with; None when the line gets a response."""
    if fault is None or fault in OUTPUT_FAULTS or fault == "nocandidates":
        return None
    if fault == _DRAWN_ERROR:
        return _RANDOM_ERRORS[int(_draw(context, key, line, _KIND) * len(_RANDOM_ERRORS))]
    return _LINE_ERRORS.get(fault, errors.internal())


def _draw(context: Context, key: int, line: Line, salt: int) -> float:
    return unit(context.seed, key, context.job_number, line.index, salt)


def _succeeded(
    line: Line, entry: Entry, parsed: GenerateRequest, key: int, fault: str | None, context: Context
) -> Result:
    response_id = _response_id(key, context.job_number, line.index)
    if fault == "nocandidates":
        return _result(line, entry, "succeeded", {"response": no_candidates_body(context.model, response_id)}, None)
    outcome = compose(parsed, answer_rng(context.seed, key), fault if fault in OUTPUT_FAULTS else None)
    body = unary_body(outcome, context.model, response_id)
    return _result(line, entry, "succeeded", {"response": body}, outcome.usage)


def _failed(line: Line, entry: Entry, error: errors.RpcError, context: Context, shape: str | None = None) -> Result:
    if context.inline:
        return _result(line, entry, "failed", {"error": rpc_status(error)}, None)
    shape = shape or _shape(context, line)
    if shape == "status":
        return _result(line, entry, "failed", {"status": rpc_status(error)}, None)
    body = {"code": error.http_status, "message": error.message, "status": error.status}
    return _result(line, entry, "failed", {"error": body}, None)


def _shape(context: Context, line: Line) -> str:
    shape = context.config.error_shape
    if shape != "mixed":
        return shape
    return "status" if unit(context.seed, context.job_number, line.index, _SHAPE) < 0.5 else "error"


def _result(line: Line, entry: Entry, outcome: str, output: dict[str, Any], usage: Usage | None) -> Result:
    # The live file output writes the key after the response; inline entries carry their metadata instead.
    if entry.metadata is not None:
        output["metadata"] = entry.metadata
    elif entry.key is not None:
        output["key"] = entry.key
    return Result(line.index, entry.key, outcome, output, usage)


def _response_id(key: int, job_number: int, index: int) -> str:
    raw = key.to_bytes(8, "little") + ((job_number << 32) | index).to_bytes(8, "little")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
