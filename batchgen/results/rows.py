"""A row's `Result`, built from what its requests got: the last step every carrier shares.

A carrier (the online runner, the Batch API carrier) keeps a `Tally` per row across its attempts, re-asks and
resubmissions. When the row is settled it becomes one `Result` here: `answered` from its final reply and the
verdict on it, `failed` from the error that ended it, `unsendable` from a problem with its input. Built in one
place, a row reads the same whichever way it travelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from batchgen.errors import ApiError
from batchgen.gemini.response import Reply
from batchgen.records import Prompt, Result, Status, Usage
from batchgen.results.verdict import Verdict

log = logging.getLogger("batchgen.rows")


@dataclass(slots=True)
class Tally:
    """What one row has cost so far: requests sent, responses billed (and their usage), re-asks made.

    `first_sent` is a clock reading of the first send, on whatever clock the carrier measures latency by.
    """

    attempts: int = 0
    responses: int = 0
    usage: Usage = field(default_factory=Usage)
    reasks: int = 0
    first_sent: float | None = None

    def sent(self, now: float) -> None:
        """One request went out at `now`."""
        self.attempts += 1
        if self.first_sent is None:
            self.first_sent = now

    def answered(self, usage: Usage) -> None:
        """One response came back, billed for `usage`."""
        self.responses += 1
        self.usage = self.usage + usage

    def latency_ms(self, now: float) -> float | None:
        """From the first send to `now`, on the same clock; None when nothing was sent."""
        return None if self.first_sent is None else (now - self.first_sent) * 1000.0


def answered(prompt: Prompt, tally: Tally, reply: Reply, verdict: Verdict, *, now: float, traffic: str) -> Result:
    """The row's result from its final reply, judged `verdict`."""
    return Result(
        id=prompt.id,
        status=verdict.status,
        text=reply.text,
        output=verdict.output,
        output_json=verdict.output_json,
        thoughts=reply.thoughts,
        finish_reason=reply.finish_reason,
        block_reason=reply.block_reason,
        usage=tally.usage,
        model_version=reply.model_version,
        response_id=reply.response_id,
        attempts=tally.attempts,
        responses=tally.responses,
        reasks=tally.reasks,
        latency_ms=tally.latency_ms(now),
        error=verdict.error,
        function_calls=reply.function_calls,
        metadata=reply.metadata,
        keep=prompt.keep,
        row_index=prompt.index,
        finish_message=reply.finish_message,
        block_reason_message=reply.block_reason_message,
        service_tier=reply.service_tier,
        traffic_type=reply.traffic_type,
        tool_parts=reply.tool_parts,
        traffic=traffic,
    )


def failed(prompt: Prompt, tally: Tally, error: ApiError | str, *, now: float, traffic: str) -> Result:
    """The row's result when no usable reply came: the API error that ended it (its kind, the attempts it took,
    what the API said, its HTTP status and details), or why in words."""
    if isinstance(error, ApiError):
        tries = f" after {tally.attempts} attempt(s)" if tally.attempts > 1 else ""
        text, http_status, details = f"{type(error).__name__}{tries}: {error}", error.http_status, error.details
    else:
        text, http_status, details = error, None, None
    return Result(
        id=prompt.id,
        status=Status.FAILED,
        usage=tally.usage,
        attempts=tally.attempts,
        responses=tally.responses,
        reasks=tally.reasks,
        latency_ms=tally.latency_ms(now),
        error=text,
        http_status=http_status,
        keep=prompt.keep,
        row_index=prompt.index,
        error_details=details,
        traffic=traffic,
    )


def unsendable(prompt: Prompt, problem: str) -> Result:
    """The row's result when it could not be sent at all (bad input line, no prompt, too large)."""
    return Result(
        prompt.id, Status.FAILED, error=f"{prompt.where}: {problem}", keep=prompt.keep, row_index=prompt.index
    )


def log_problem(result: Result) -> None:
    """A warning for a row that did not end `ok`, with its figures as event fields."""
    http = f" (HTTP {result.http_status})" if result.http_status is not None else ""
    log.warning(
        "row %s %s%s: %s",
        result.id,
        result.status.value,
        http,
        result.error,
        extra={
            "event": "row_error",
            "id": result.id,
            "status": result.status.value,
            "http_status": result.http_status,
            "error": result.error,
            "attempts": result.attempts,
            "reasks": result.reasks,
        },
    )
