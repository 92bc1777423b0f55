"""What the Files and Batch APIs' resources share: ids, times, int64 fields, list pages and status codes.

Shapes follow live captures quoted in the module docstrings that use them: ids are lowercase letters and
digits (`files/p1mds9fl15bs`, `batches/o08hk76gv328ihxcssjsgwt3g6omtfysxi46`), times are RFC 3339 in UTC with
nanoseconds (`2026-01-06T11:09:11.943530657Z`), and int64 fields are JSON strings (proto JSON's rule).
"""

from __future__ import annotations

import base64
import binascii
import random
import string
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from batchgen.fakeserver.errors import RpcError, invalid_argument

_ALPHABET = string.ascii_lowercase + string.digits
# ListFiles: "If unspecified, defaults to 10. Maximum `page_size` is 100" (file_service.proto); the Batch API
# documents no numbers, so it gets the same.
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
# The google.rpc.Code numbers, for bodies that carry a Status as proto JSON (code is the number, not HTTP's).
RPC_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}

T = TypeVar("T")
Clock = Callable[[], int]
"""Wall-clock time in nanoseconds since the epoch, like `time.time_ns`."""


def new_id(rng: random.Random, length: int) -> str:
    """A resource id of lowercase letters and digits."""
    return "".join(rng.choice(_ALPHABET) for _ in range(length))


def timestamp(ns: int) -> str:
    """A google.protobuf.Timestamp as Google writes it: UTC, nine fractional digits, a Z."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def int64(value: int) -> str:
    """An int64 field as proto JSON writes it: a string."""
    return str(value)


def rpc_status(error: RpcError) -> dict[str, object]:
    """A google.rpc.Status as proto JSON: the gRPC code number and the message (no HTTP status)."""
    return {"code": RPC_CODES.get(error.status, RPC_CODES["UNKNOWN"]), "message": error.message}


def not_found(message: str = "Requested entity was not found.") -> RpcError:
    return RpcError(404, "NOT_FOUND", message)


def failed_precondition(message: str) -> RpcError:
    return RpcError(400, "FAILED_PRECONDITION", message)


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One list call's `pageSize` and `pageToken`, checked: the page starts after sequence number `after`."""

    size: int
    after: int | None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> PageRequest:
        raw = query.get("pageSize", query.get("page_size", ""))
        try:
            size = int(raw) if raw else 0
        except ValueError as exc:
            raise invalid_argument(f"Invalid value at 'page_size' (TYPE_INT32), \"{raw}\"") from exc
        if size < 0:
            raise invalid_argument("page_size must not be negative.")
        token = query.get("pageToken", query.get("page_token", ""))
        return cls(min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE), _read_token(token) if token else None)


def page(items: Sequence[T], seq: Callable[[T], int], request: PageRequest) -> tuple[list[T], str | None]:
    """The page of `items` (newest first, by their sequence numbers) and the token of the next one.

    The token names the last sequence number returned, so deleting items between calls skips nothing.
    """
    ordered = sorted(items, key=seq, reverse=True)
    if request.after is not None:
        ordered = [item for item in ordered if seq(item) < request.after]
    chosen = ordered[: request.size]
    more = len(ordered) > request.size
    return chosen, _write_token(seq(chosen[-1])) if more else None


def _write_token(after: int) -> str:
    return base64.urlsafe_b64encode(f"after:{after}".encode()).decode()


def _read_token(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        label, _, number = text.partition(":")
        if label != "after":
            raise ValueError(text)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise invalid_argument("Invalid page token.") from exc
