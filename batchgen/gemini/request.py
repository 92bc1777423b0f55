"""Request bodies: a job's request serialised once, each row's `contents` spliced in, its input tokens estimated."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

# Gemini's tokenizer averages about four characters per token on English text; the limiter corrects its
# estimate with the real promptTokenCount, so this only has to be close, not exact.
CHARS_PER_TOKEN = 4

_PROMPTED_FIELDS = ("systemInstruction", "tools", "toolConfig")

# `serviceTier` values of a request: the SDK sends them lower case, the Flex docs' REST example "FLEX".
SERVICE_TIERS = ("standard", "flex", "priority")

# The field names of a GenerateContentRequest a job may set, and of the objects inside it that are checked
# (v1beta REST, shared/reference/gemini-api.md section 1). The API answers an unknown name with a 400 on every
# row ("Unknown name ... Cannot find field"); checked before sending, a typo is one error naming its key.
REQUEST_FIELDS = frozenset(
    {
        "systemInstruction",
        "generationConfig",
        "safetySettings",
        "tools",
        "toolConfig",
        "cachedContent",
        "serviceTier",
        "labels",
    }
)
GENERATION_CONFIG_FIELDS = frozenset(
    {
        "candidateCount",
        "stopSequences",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "responseModalities",
        "thinkingConfig",
        "mediaResolution",
        "speechConfig",
        "imageConfig",
        "enableEnhancedCivicAnswers",
    }
)
THINKING_CONFIG_FIELDS = frozenset({"includeThoughts", "thinkingBudget", "thinkingLevel"})
TOOL_FIELDS = frozenset(
    {
        "functionDeclarations",
        "googleSearchRetrieval",
        "codeExecution",
        "googleSearch",
        "computerUse",
        "urlContext",
        "fileSearch",
        "googleMaps",
    }
)
TOOL_CONFIG_FIELDS = frozenset({"functionCallingConfig", "retrievalConfig"})
SAFETY_SETTING_FIELDS = frozenset({"category", "threshold"})


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """A request field the API would refuse: its dotted key (`generationConfig.temprature`) and why."""

    key: str
    message: str


def request_problems(request: Mapping[str, Any]) -> list[FieldProblem]:
    """Every unknown field name in a job's request (top level, generationConfig, thinkingConfig, tools,
    toolConfig, safetySettings), each with the name it most likely meant."""
    return list(_problems(request))


def _problems(request: Mapping[str, Any]) -> Iterator[FieldProblem]:
    if "contents" in request:
        yield FieldProblem("contents", "comes from each input row, not from [request] (see [input])")
    yield from _unknown(request, REQUEST_FIELDS, "", skip=frozenset({"contents"}))
    config = request.get("generationConfig")
    if isinstance(config, Mapping):
        yield from _unknown(config, GENERATION_CONFIG_FIELDS, "generationConfig.")
        thinking = config.get("thinkingConfig")
        if isinstance(thinking, Mapping):
            yield from _unknown(thinking, THINKING_CONFIG_FIELDS, "generationConfig.thinkingConfig.")
    tool_config = request.get("toolConfig")
    if isinstance(tool_config, Mapping):
        yield from _unknown(tool_config, TOOL_CONFIG_FIELDS, "toolConfig.")
    for name, known in (("tools", TOOL_FIELDS), ("safetySettings", SAFETY_SETTING_FIELDS)):
        entries = request.get(name)
        if isinstance(entries, Sequence) and not isinstance(entries, str):
            for index, entry in enumerate(entries):
                if isinstance(entry, Mapping):
                    yield from _unknown(entry, known, f"{name}[{index}].")


def _unknown(
    given: Mapping[str, Any], known: frozenset[str], prefix: str, skip: frozenset[str] = frozenset()
) -> Iterator[FieldProblem]:
    for name in given:
        if name in known or name in skip:
            continue
        yield FieldProblem(f"{prefix}{name}", f"unknown field{_suggestion(str(name), known)}")


def _suggestion(name: str, known: frozenset[str]) -> str:
    """` (did you mean 'temperature'?)`, or the fields there are when nothing is close."""
    camel = re.sub(r"_([a-z])", lambda match: match.group(1).upper(), name)
    if camel != name and camel in known:
        return f" (the API's names are camelCase: {camel!r})"
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of {', '.join(sorted(known))})"


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
