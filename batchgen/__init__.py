"""batchgen: run large batches of Gemini generateContent calls reliably, fast and cheaply.

The pieces a program needs to run a job itself (the CLI is `batchgen.cli`): load a `Job`, read prompts with an
`InputSource`, carry them with a `GeminiClient` under a `RateLimiter`, drive them with a `Runner` into a
`ParquetSink`, wrapped in a `BudgetedSink` to price each row and enforce a cost cap. Every error is a
`BatchgenError`; see `batchgen.errors` for the tree.
"""

from __future__ import annotations

from batchgen.api import LiveRun, RunOptions, RunOutcome, execute
from batchgen.errors import (
    ApiError,
    AuthError,
    BatchgenError,
    BudgetExhausted,
    ConfigError,
    FatalApiError,
    InputError,
    JobRejected,
    MalformedResponse,
    OutputError,
    QuotaExhausted,
    RateLimited,
    RequestRejected,
    RetryableError,
    SchemaError,
    ServerError,
    TransportError,
)
from batchgen.gemini.request import RequestTemplate
from batchgen.gemini.response import Reply
from batchgen.input.prompts import PromptBuilder
from batchgen.input.reader import InputSource
from batchgen.job import Job, load_job
from batchgen.online.client import Endpoint, GeminiClient
from batchgen.online.limiter.rate import Limits, RateLimiter
from batchgen.online.retry import Retrier, RetryPolicy
from batchgen.online.runner import Runner, RunPolicy
from batchgen.records import Generate, Limiter, Prompt, Result, Sink, Status, Usage
from batchgen.report.budget import Budget, BudgetedSink
from batchgen.results.sink import Layout, ParquetSink
from batchgen.schema.response import ResponseSchema
from batchgen.secret import ApiKey

__all__ = [
    "ApiError",
    "ApiKey",
    "AuthError",
    "BatchgenError",
    "Budget",
    "BudgetExhausted",
    "BudgetedSink",
    "ConfigError",
    "Endpoint",
    "FatalApiError",
    "GeminiClient",
    "Generate",
    "InputError",
    "InputSource",
    "Job",
    "JobRejected",
    "Layout",
    "Limiter",
    "Limits",
    "LiveRun",
    "MalformedResponse",
    "OutputError",
    "ParquetSink",
    "Prompt",
    "PromptBuilder",
    "QuotaExhausted",
    "RateLimited",
    "RateLimiter",
    "Reply",
    "RequestRejected",
    "RequestTemplate",
    "ResponseSchema",
    "Result",
    "Retrier",
    "RetryPolicy",
    "RetryableError",
    "RunOptions",
    "RunOutcome",
    "RunPolicy",
    "Runner",
    "SchemaError",
    "ServerError",
    "Sink",
    "Status",
    "TransportError",
    "Usage",
    "execute",
    "load_job",
]
