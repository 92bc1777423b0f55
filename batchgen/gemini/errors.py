"""HTTP error answers (google.rpc `{"error": ...}` bodies) mapped to the `batchgen.errors` tree the caller acts on."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from batchgen.errors import (
    ApiError,
    AuthError,
    QuotaExhausted,
    RateLimited,
    RequestRejected,
    ServerError,
)

_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def error_from_response(http_status: int, body: bytes, retry_after_header: str | None = None) -> ApiError:
    """Map an HTTP error answer (google.rpc `{"error": ...}` body) to the error the caller must act on."""
    error = _error_object(body)
    message = str(error.get("message") or f"HTTP {http_status}")
    status = error.get("status")
    raw_details = error.get("details")
    details: list[Any] = raw_details if isinstance(raw_details, list) else []
    reason = _detail(details, "ErrorInfo").get("reason")
    context: dict[str, Any] = {"http_status": http_status, "status": status, "reason": reason}
    if details:
        context["details"] = orjson.dumps(details).decode()
    if http_status in (401, 403) or reason == "API_KEY_INVALID":
        return AuthError(message, **context)
    if http_status == 429:
        quota_id = _quota_id(details)
        if quota_id and "PerDay" in quota_id:
            return QuotaExhausted(message, quota_id=quota_id, **context)
        delay = _retry_delay(details)
        if delay is None:
            delay = parse_retry_after(retry_after_header)
        return RateLimited(message, quota_id=quota_id, retry_after=delay, **context)
    if http_status in _RETRYABLE_STATUSES:
        return ServerError(message, retry_after=parse_retry_after(retry_after_header), **context)
    return RequestRejected(message, **context)


def _error_object(body: bytes) -> Mapping[str, Any]:
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"message": body[:200].decode("utf-8", "replace").strip() or None}
    if isinstance(decoded, list) and decoded:  # some proxies wrap the error in a one-element array
        decoded = decoded[0]
    error = decoded.get("error") if isinstance(decoded, Mapping) else None
    return error if isinstance(error, Mapping) else {}


def _detail(details: Sequence[Any], kind: str) -> Mapping[str, Any]:
    for detail in details:
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith(f"google.rpc.{kind}"):
            return detail
    return {}


def _quota_id(details: Sequence[Any]) -> str | None:
    violations = _detail(details, "QuotaFailure").get("violations") or []
    for violation in violations:
        if isinstance(violation, Mapping) and violation.get("quotaId"):
            return str(violation["quotaId"])
    return None


def _retry_delay(details: Sequence[Any]) -> float | None:
    delay = _detail(details, "RetryInfo").get("retryDelay")
    match = _DURATION.match(delay) if isinstance(delay, str) else None
    return float(match.group(1)) if match else None


def parse_retry_after(value: str | None) -> float | None:
    """A `Retry-After` header (delta seconds or HTTP date) in seconds; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
