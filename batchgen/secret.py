"""The API key as a value that cannot leak by accident: its repr and str are redacted."""

from __future__ import annotations

REDACTED = "***"


class ApiKey:
    """Holds the key; only `reveal()` (called when building the auth header) returns it.

    `source` says where the key came from (`environment variable GEMINI_API_KEY`), for an error that refuses
    it; it is never the key itself.
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, *, source: str | None = None) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the key replaced, for messages that may echo it (URLs, bodies)."""
        return text.replace(self._value, REDACTED) if self._value else text

    def __repr__(self) -> str:
        return f"ApiKey({REDACTED})"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("an ApiKey is never serialised")
