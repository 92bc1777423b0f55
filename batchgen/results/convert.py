"""Lenient readers of wire values, shared by the reply-metadata converters.

A reply is judged and paid for before its metadata is converted, so a malformed entry must not fail the row:
it becomes null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson


def each(items: Any, convert: Callable[[Mapping[str, Any]], dict[str, Any]]) -> list[dict[str, Any]] | None:
    """`convert` applied to each object of a list; None when `items` is not a list."""
    if not isinstance(items, list):
        return None
    return [convert(item) for item in items if isinstance(item, Mapping)]


def number(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (booleans included)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def json_text(value: Any) -> str | None:
    """Free-form JSON (call arguments, a tool's response) as compact JSON text; None when absent."""
    return None if value is None else orjson.dumps(value).decode()
