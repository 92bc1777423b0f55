"""Request bodies: a job's request serialised once, each row's `contents` spliced in, its input tokens estimated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

# Gemini's tokenizer averages about four characters per token on English text; the limiter corrects its
# estimate with the real promptTokenCount, so this only has to be close, not exact.
CHARS_PER_TOKEN = 4

_PROMPTED_FIELDS = ("systemInstruction", "tools", "toolConfig")

# `serviceTier` values of a request: the SDK sends them lower case, the Flex docs' REST example "FLEX".
SERVICE_TIERS = ("standard", "flex", "priority")


def user_contents(text: str, media: Sequence[Mapping[str, Any]] = ()) -> bytes:
    """The `contents` array for a single-turn prompt: media parts (inlineData / fileData) first, then the text."""
    return orjson.dumps([{"role": "user", "parts": [*media, {"text": text}]}])


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    """A job's request body serialised once; each row only splices in its `contents`.

    `request` holds every top-level field but `contents` (systemInstruction, generationConfig, tools, ...).
    """

    request: Mapping[str, Any]
    _tail: bytes = field(init=False, repr=False)
    _overhead_tokens: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rest = orjson.dumps(dict(self.request))
        # b'{...}' -> b',...}' so that render() is two concatenations, not a JSON encode per row.
        object.__setattr__(self, "_tail", b"}" if rest == b"{}" else b"," + rest[1:])
        # Only text the model reads counts as prompt: the system instruction and tool declarations. The
        # generationConfig (a response schema can be kilobytes of JSON) is not counted, as far as observed;
        # either way the limiter corrects each estimate with the real promptTokenCount.
        prompted = orjson.dumps({k: v for k, v in self.request.items() if k in _PROMPTED_FIELDS})
        object.__setattr__(self, "_overhead_tokens", len(prompted) // CHARS_PER_TOKEN)

    def render(self, contents: bytes) -> bytes:
        """The full request body for one row."""
        return b'{"contents":' + contents + self._tail

    def estimate_tokens(self, contents: bytes) -> int:
        """Input tokens this row's request is expected to cost (schema and system prompt included)."""
        return max(1, len(contents) // CHARS_PER_TOKEN + self._overhead_tokens)

    @property
    def service_tier(self) -> str:
        """The service tier the request asks for (`serviceTier`, any case): standard when absent or unspecified."""
        tier = str(self.request.get("serviceTier") or "standard").lower()
        return "standard" if tier == "unspecified" else tier

    def with_service_tier(self, tier: str) -> RequestTemplate:
        """A copy that asks for service tier `tier` (`standard` leaves the field out, as the default)."""
        request = {key: value for key, value in self.request.items() if key != "serviceTier"}
        return RequestTemplate(request if tier == "standard" else {**request, "serviceTier": tier})

    def with_generation_config(self, **fields: Any) -> RequestTemplate:
        """A copy whose generationConfig has `fields` set (used to raise maxOutputTokens on a re-ask)."""
        config = {**self.request.get("generationConfig", {}), **fields}
        return RequestTemplate({**self.request, "generationConfig": config})
