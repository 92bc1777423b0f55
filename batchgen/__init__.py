"""batchgen: run large batches of Gemini generateContent calls reliably, fast and cheaply."""

from __future__ import annotations

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
from batchgen.records import Generate, Limiter, Prompt, Result, Sink, Status, Usage

__all__ = [
    "ApiError",
    "AuthError",
    "BatchgenError",
    "BudgetExhausted",
    "ConfigError",
    "FatalApiError",
    "Generate",
    "InputError",
    "JobRejected",
    "Limiter",
    "MalformedResponse",
    "OutputError",
    "Prompt",
    "QuotaExhausted",
    "RateLimited",
    "RequestRejected",
    "Result",
    "RetryableError",
    "SchemaError",
    "ServerError",
    "Sink",
    "Status",
    "TransportError",
    "Usage",
]
