"""Token arithmetic: counts from text length, and the `usageMetadata` object built from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4
# The usageMetadata integer fields, in the order the API writes them; the ledger sums exactly these.
USAGE_FIELDS = (
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
    "toolUsePromptTokenCount",
    "totalTokenCount",
)


def count_chars(chars: int) -> int:
    """Tokens for `chars` characters of text: about 4 characters a token, never below 1."""
    return max(1, -(-chars // CHARS_PER_TOKEN))


def count_text(text: str) -> int:
    """Tokens for a piece of output text; empty text costs nothing."""
    return count_chars(len(text)) if text else 0


@dataclass(frozen=True, slots=True)
class Usage:
    """One response's token counts. `prompt` already includes `cached`, as in the API."""

    prompt: int
    candidates: int = 0
    thoughts: int = 0
    cached: int = 0
    tool_use: int = 0

    @property
    def total(self) -> int:
        # Cached tokens are part of `prompt`, so they are not added again (reference note, section 3).
        return self.prompt + self.candidates + self.thoughts + self.tool_use

    def to_json(self) -> dict[str, Any]:
        """The usageMetadata object; zero counts are left out, as the API leaves out unset proto fields."""
        usage: dict[str, Any] = {"promptTokenCount": self.prompt}
        if self.candidates:
            usage["candidatesTokenCount"] = self.candidates
        if self.thoughts:
            usage["thoughtsTokenCount"] = self.thoughts
        if self.cached:
            usage["cachedContentTokenCount"] = self.cached
        if self.tool_use:
            usage["toolUsePromptTokenCount"] = self.tool_use
        usage["totalTokenCount"] = self.total
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.prompt}]
        if self.cached:
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.cached}]
        return usage

    def partial_json(self, candidates: int | None) -> dict[str, Any]:
        """The usage of an early stream event: prompt only, or with the candidates (and thoughts) so far."""
        if candidates is None:
            return {"promptTokenCount": self.prompt, "totalTokenCount": self.prompt}
        usage: dict[str, Any] = {"promptTokenCount": self.prompt}
        if candidates:
            usage["candidatesTokenCount"] = candidates
        if self.thoughts:
            usage["thoughtsTokenCount"] = self.thoughts
        usage["totalTokenCount"] = self.prompt + candidates + self.thoughts
        return usage
