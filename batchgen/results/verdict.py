"""From a model reply to a row status: the precedence rules of the results contract.

failed (no usable response) > blocked > truncated > invalid_json > schema_mismatch > ok.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from batchgen.gemini.response import Reply
from batchgen.records import Status

# finishReasons that mean a filter stopped the output: whatever text came is not the model's answer.
SAFETY_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)

# Statuses a re-ask may fix: the same prompt can yield parseable, conforming or complete output next time.
REASKABLE = frozenset({Status.INVALID_JSON, Status.SCHEMA_MISMATCH, Status.TRUNCATED})


class Validator(Protocol):
    """Checks a parsed JSON output; returns None when it conforms, else why not."""

    def validate(self, value: Any) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """A reply's status, its parsed output (JSON mode, when usable) and the reason when not ok."""

    status: Status
    output: Any = None
    output_json: str | None = None
    error: str | None = None


def judge(reply: Reply, *, json_mode: bool, validator: Validator | None) -> Verdict:
    """Decide what a reply is worth under the job's output mode."""
    if reply.block_reason:
        return Verdict(Status.BLOCKED, error=f"prompt blocked: {reply.block_reason}")
    finish = reply.finish_reason
    if finish in SAFETY_FINISH_REASONS:
        return Verdict(Status.BLOCKED, error=f"output stopped by finishReason {finish}")
    if not json_mode:
        return _judge_text(reply)
    return _judge_json(reply, validator)


def _judge_text(reply: Reply) -> Verdict:
    if reply.finish_reason == "MAX_TOKENS":
        return Verdict(Status.TRUNCATED, error="output cut at maxOutputTokens (finishReason MAX_TOKENS)")
    if not reply.text and not reply.function_calls:
        return Verdict(Status.FAILED, error=f"reply has no content (finishReason {reply.finish_reason})")
    return Verdict(Status.OK)


def _judge_json(reply: Reply, validator: Validator | None) -> Verdict:
    truncated = reply.finish_reason == "MAX_TOKENS"
    if not reply.text:
        if truncated:
            return Verdict(Status.TRUNCATED, error="no output before maxOutputTokens (thinking may use it up)")
        return Verdict(Status.FAILED, error=f"reply has no content (finishReason {reply.finish_reason})")
    try:
        value = orjson.loads(reply.text)
    except orjson.JSONDecodeError as exc:
        if truncated:
            return Verdict(Status.TRUNCATED, error="JSON output cut at maxOutputTokens")
        return Verdict(Status.INVALID_JSON, error=f"output is not valid JSON: {exc}")
    problem = validator.validate(value) if validator is not None else None
    if problem is not None:
        if truncated:
            return Verdict(Status.TRUNCATED, error=f"output cut at maxOutputTokens; {problem}")
        return Verdict(Status.SCHEMA_MISMATCH, error=f"output does not match the schema: {problem}")
    # A MAX_TOKENS reply whose JSON still parses and conforms is usable: the contract only calls it truncated
    # when the output is unusable.
    return Verdict(Status.OK, output=value, output_json=orjson.dumps(value).decode())
