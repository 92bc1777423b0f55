"""Error answers in the google.rpc shape the Gemini API uses: `{"error": {code, message, status, details}}`.

Each helper returns an `RpcError`, an exception the routes raise and render; the bodies copy the live API's
wording where it is known (quoted in the project's gemini-api reference note).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

_TYPE = "type.googleapis.com/google.rpc."
_SERVICE = "generativelanguage.googleapis.com"
RATE_LIMIT_DOCS = "https://ai.google.dev/gemini-api/docs/rate-limits"

RPM_QUOTA_ID = "GenerateRequestsPerMinutePerProjectPerModel"
TPM_QUOTA_ID = "GenerateContentInputTokensPerModelPerMinute"
RPD_QUOTA_ID = "GenerateRequestsPerDayPerProjectPerModel"
_QUOTA_METRICS = {
    RPM_QUOTA_ID: f"{_SERVICE}/generate_requests_per_model",
    TPM_QUOTA_ID: f"{_SERVICE}/generate_content_input_token_count",
    RPD_QUOTA_ID: f"{_SERVICE}/generate_requests_per_model_per_day",
}


class RpcError(Exception):
    """An error answer: HTTP status plus the google.rpc Status body."""

    def __init__(self, http_status: int, status: str, message: str, details: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(f"{http_status} {status}: {message}")
        self.http_status = http_status
        self.status = status
        self.message = message
        self.details = tuple(details)

    def payload(self) -> dict[str, Any]:
        """The `{"error": ...}` object, as sent in a body or in the middle of a stream."""
        error: dict[str, Any] = {"code": self.http_status, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = list(self.details)
        return {"error": error}

    def body(self) -> bytes:
        """The serialised body; Google pretty-prints error bodies, so this does too."""
        return orjson.dumps(self.payload(), option=orjson.OPT_INDENT_2)


def duration(seconds: float) -> str:
    """A google.protobuf.Duration string: "22s", or "1.5s" with at most millisecond precision.

    Rounds up so a client that waits exactly this long finds the window free.
    """
    millis = max(1, math.ceil(seconds * 1000 - 1e-6))
    whole, frac = divmod(millis, 1000)
    return f"{whole}s" if frac == 0 else f"{whole}.{frac:03d}".rstrip("0") + "s"


def invalid_argument(message: str) -> RpcError:
    return RpcError(400, "INVALID_ARGUMENT", message)


def field_violation(path: str, message: str) -> RpcError:
    """A 400 naming the offending field, in the API's "* GenerateContentRequest.<path>: <message>" form."""
    return invalid_argument(f"* GenerateContentRequest.{path}: {message}\n")


def unknown_field(name: str, where: str = "") -> RpcError:
    at = f" at '{where}'" if where else ""
    return invalid_argument(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


def bad_enum(where: str, type_name: str, value: object) -> RpcError:
    return invalid_argument(
        f"Invalid value at '{where}' (type.googleapis.com/google.ai.generativelanguage.v1beta.{type_name}), "
        f"{orjson.dumps(value).decode()}"
    )


def permission_denied() -> RpcError:
    return RpcError(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
    )


def api_key_invalid() -> RpcError:
    message = "API key not valid. Please pass a valid API key."
    return RpcError(
        400,
        "INVALID_ARGUMENT",
        message,
        [
            {
                "@type": _TYPE + "ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": _SERVICE},
            },
            {"@type": _TYPE + "LocalizedMessage", "locale": "en-US", "message": message},
        ],
    )


def model_not_found(model: str, method: str) -> RpcError:
    return RpcError(
        404,
        "NOT_FOUND",
        f"models/{model} is not found for API version v1beta, or is not supported for {method}. "
        "Call ListModels to see the list of available models and their supported methods.",
    )


def method_not_found(path: str) -> RpcError:
    return RpcError(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")


def internal() -> RpcError:
    return RpcError(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    )


def unavailable() -> RpcError:
    return RpcError(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


def _help() -> dict[str, Any]:
    return {
        "@type": _TYPE + "Help",
        "links": [{"description": "Learn more about Gemini API quotas", "url": RATE_LIMIT_DOCS}],
    }


def _retry_info(seconds: float) -> dict[str, Any]:
    return {"@type": _TYPE + "RetryInfo", "retryDelay": duration(seconds)}


def shared_capacity(retry_after: float | None) -> RpcError:
    """A transient 429 not tied to the caller's quota; only a Help link unless a delay is given."""
    details = [_help()] if retry_after is None else [_help(), _retry_info(retry_after)]
    return RpcError(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", details)


def quota_exceeded(quota_id: str, model: str, limit: int, retry_after: float) -> RpcError:
    """429 for an exceeded quota, with the QuotaFailure naming it, Help and RetryInfo, like the live API."""
    metric = _QUOTA_METRICS[quota_id]
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more information "
        f"on this error, head to: {RATE_LIMIT_DOCS}.\n"
        f"* Quota exceeded for metric: {metric}, limit: {limit}, model: {model}\n"
        f"Please retry in {duration(retry_after)}."
    )
    violation = {
        "quotaMetric": metric,
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": model},
        "quotaValue": str(limit),
    }
    details = [
        {"@type": _TYPE + "QuotaFailure", "violations": [violation]},
        _help(),
        _retry_info(retry_after),
    ]
    return RpcError(429, "RESOURCE_EXHAUSTED", message, details)
