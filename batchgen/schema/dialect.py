"""What the two schema dialects share: their names, where a problem is (a JSON pointer), short messages."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

SchemaPath = tuple[str | int, ...]

# Relative `$id`s and `$ref`s resolve against this; `.invalid` never resolves, and nothing is fetched anyway.
BASE_URI = "https://batchgen.invalid/response-schema.json"
_MESSAGE_LIMIT = 200


class Dialect(StrEnum):
    """Which schema language a job uses; the value is its key in `generationConfig`."""

    OPENAPI = "responseSchema"
    JSON_SCHEMA = "responseJsonSchema"


def pointer(path: Sequence[str | int]) -> str:
    """RFC 6901 JSON pointer for a path of keys and indexes."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def shorten(message: str) -> str:
    # Messages quote the offending value, which can be a whole model output.
    return message if len(message) <= _MESSAGE_LIMIT else message[: _MESSAGE_LIMIT - 3] + "..."


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
