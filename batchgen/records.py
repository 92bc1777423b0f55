"""The values that flow through a job, and the Protocols the runner depends on.

A `Prompt` comes from a source, is sent by a `Generate` carrier under a `Limiter`, and leaves as a `Result`
for a `Sink`. The runner knows nothing else: where rows come from, how a request travels (an online call or a
line in a batch file) and where results go are all behind these interfaces.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from batchgen.errors import BatchgenError


class Status(StrEnum):
    """A row's final status, most severe first (the order of precedence)."""

    FAILED = "failed"
    BLOCKED = "blocked"
    TRUNCATED = "truncated"
    INVALID_JSON = "invalid_json"
    SCHEMA_MISMATCH = "schema_mismatch"
    OK = "ok"


@dataclass(frozen=True, slots=True)
class Prompt:
    """One input row, ready to send: `contents` is the serialised JSON array of Gemini `Content`.

    `problem` is set when the row cannot be sent (malformed line, no prompt); it then becomes a `failed` result
    without any request, so no input row is ever silently dropped. `index` is the row's 0-based position in
    the input (file order; in a folder, across its files in name order).
    """

    id: str
    where: str
    contents: bytes
    keep: Mapping[str, Any] = field(default_factory=dict)
    problem: str | None = None
    index: int | None = None


Modalities = tuple[tuple[str, int], ...]
"""Token counts by modality (`TEXT`, `IMAGE`, `AUDIO`, `VIDEO`, `DOCUMENT`), in the order first reported."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts from `usageMetadata`; None where the API never reported the field.

    The `*_details` are the per-modality breakdowns (`promptTokensDetails`, `candidatesTokensDetails`,
    `cacheTokensDetails`, `toolUsePromptTokensDetails`); they need not add up to their count (an image answer
    reported IMAGE 1120 of 1392 candidates tokens).
    """

    prompt: int | None = None
    candidates: int | None = None
    thoughts: int | None = None
    cached: int | None = None
    tool_use: int | None = None
    total: int | None = None
    prompt_details: Modalities | None = None
    candidates_details: Modalities | None = None
    cache_details: Modalities | None = None
    tool_use_details: Modalities | None = None

    def __add__(self, other: Usage) -> Usage:
        # A row is billed for every response it received, so usage adds up across attempts and re-asks;
        # None + None stays None so "never reported" is not confused with 0. Spelled out field by field: this
        # runs twice per row (the row's tally and the run's), where a generator over getattr shows in the profile.
        return Usage(
            _plus(self.prompt, other.prompt),
            _plus(self.candidates, other.candidates),
            _plus(self.thoughts, other.thoughts),
            _plus(self.cached, other.cached),
            _plus(self.tool_use, other.tool_use),
            _plus(self.total, other.total),
            # Inline None checks: most breakdowns are absent on one side (the run's first response, a count
            # the model never reports), and a call per field costs as much as the sum.
            self.prompt_details
            if other.prompt_details is None
            else other.prompt_details
            if self.prompt_details is None
            else _plus_modalities(self.prompt_details, other.prompt_details),
            self.candidates_details
            if other.candidates_details is None
            else other.candidates_details
            if self.candidates_details is None
            else _plus_modalities(self.candidates_details, other.candidates_details),
            self.cache_details
            if other.cache_details is None
            else other.cache_details
            if self.cache_details is None
            else _plus_modalities(self.cache_details, other.cache_details),
            self.tool_use_details
            if other.tool_use_details is None
            else other.tool_use_details
            if self.tool_use_details is None
            else _plus_modalities(self.tool_use_details, other.tool_use_details),
        )

    @classmethod
    def of_counts(cls, counts: Mapping[str, int | None]) -> Usage:
        """The usage of the six counts only, by field name (`prompt`, ..., `total`; as `totals()` gives them)."""
        get = counts.get
        return cls(get("prompt"), get("candidates"), get("thoughts"), get("cached"), get("tool_use"), get("total"))

    def totals(self) -> dict[str, int]:
        """Every count by field name, 0 where never reported (for manifests and logs)."""
        return {
            "prompt": self.prompt or 0,
            "candidates": self.candidates or 0,
            "thoughts": self.thoughts or 0,
            "cached": self.cached or 0,
            "tool_use": self.tool_use or 0,
            "total": self.total or 0,
        }


def _plus(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b


def _plus_modalities(a: Modalities, b: Modalities) -> Modalities:
    """Two breakdowns summed per modality."""
    if len(a) == len(b) == 1 and a[0][0] == b[0][0]:  # the usual case: TEXT only, on both sides
        return ((a[0][0], a[0][1] + b[0][1]),)
    sums = dict(a)
    for modality, count in b:
        sums[modality] = sums.get(modality, 0) + count
    return tuple(sums.items())


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """A `functionCall` part of a reply: the function the model asks for and its arguments (an object)."""

    name: str | None
    args: Mapping[str, Any]
    id: str | None = None
    """The call's id, which a `functionResponse` answers by; sent by some models only (gemini-3.1)."""


@dataclass(slots=True)
class Result:
    """What one input row became: the results contract, one `Result` per `Prompt`."""

    id: str
    status: Status
    text: str | None = None
    output: Any = None
    output_json: str | None = None
    thoughts: str | None = None
    finish_reason: str | None = None
    block_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    model_version: str | None = None
    response_id: str | None = None
    attempts: int = 0
    responses: int = 0
    reasks: int = 0
    latency_ms: float | None = None
    error: str | None = None
    http_status: int | None = None
    function_calls: tuple[FunctionCall, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    keep: Mapping[str, Any] = field(default_factory=dict)
    # The row's 0-based position in the input (`Prompt.index`), so results can be put back in input order.
    row_index: int | None = None
    finish_message: str | None = None
    block_reason_message: str | None = None
    service_tier: str | None = None
    traffic_type: str | None = None
    tool_parts: tuple[Mapping[str, Any], ...] = ()
    error_details: str | None = None
    traffic: str | None = None
    """How the final request went: `batch` (the Batch API) or the service tier asked for online (`standard`,
    `flex`, `priority`); None for a row never sent."""


@dataclass(slots=True)
class RunStats:
    """Rows finished by status, requests sent, tokens billed, rows in flight; updated by the runner live.

    Requests and responses are counted as they happen, not when their row is written: a row cut off by a fatal
    answer or by the end of a stop's grace period is not written (the next run sends it again), but what it
    sent and was billed for happened all the same.
    """

    total_rows: int | None = None
    skipped_rows: int = 0
    counts: Counter[Status] = field(default_factory=Counter)
    usage: Usage = field(default_factory=Usage)
    attempts: int = 0
    responses: int = 0
    reasks: int = 0
    rate_limited: int = 0
    in_flight: int = 0
    started_at: float = field(default_factory=time.time)

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def sent(self) -> None:
        """One HTTP attempt went out."""
        self.attempts += 1

    def answered(self, usage: Usage) -> None:
        """One response came back, billed for `usage`."""
        self.responses += 1
        self.usage = self.usage + usage

    def record(self, result: Result) -> None:
        """A row finished and was written (its attempts and responses were counted as they happened)."""
        self.counts[result.status] += 1
        self.reasks += result.reasks


class Generate(Protocol):
    """Carries one request body to the model and returns the decoded `GenerateContentResponse`.

    Raises the `errors.ApiError` subclasses; a streamed call returns the events already merged.
    """

    async def __call__(self, body: bytes, /) -> Mapping[str, Any]: ...


class Limiter(Protocol):
    """Admits one HTTP attempt at a time under the job's rate limits."""

    async def acquire(self, tokens: int) -> None:
        """Wait until one request carrying about `tokens` input tokens may be sent."""

    def settle(self, estimated: int, actual: int | None) -> None:
        """Correct the token meter once the real `promptTokenCount` of an admitted request is known."""

    def rate_limited(self, quota_id: str | None, retry_after: float | None) -> None:
        """Tell the limiter that the server answered 429 for the named quota (or an unnamed one)."""


class Admission(Protocol):
    """Whether the run may take another row, decided before each one is taken (a cost cap, say)."""

    def refusal(self, in_flight: int) -> BatchgenError | None:
        """The reason to stop taking rows, with `in_flight` rows under way; None to go on."""

    def charge(self, result: Result) -> None:
        """Account for a finished row (every response it received)."""


class Sink(Protocol):
    """Receives finished rows; how and when they become durable is the sink's business."""

    async def write(self, result: Result) -> None: ...
