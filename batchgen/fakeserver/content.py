"""What the fake model answers: text, JSON that fits the schema, an enum value or a function call.

All of it is drawn from one random generator seeded by the request, so the same request gets the same
answer. Output faults (blocked, safety, max_tokens, invalid_json, schema_violation) are applied here, and so
are the real limits that shape an answer: stop sequences and maxOutputTokens, which thinking uses up first.
"""

from __future__ import annotations

import base64
import random
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from batchgen.fakeserver.faults import unit
from batchgen.fakeserver.request import GenerateRequest
from batchgen.fakeserver.text import answer, keywords, phrase, thought_summary
from batchgen.fakeserver.tokens import CHARS_PER_TOKEN, Usage, count_text

_CITATION_ODDS = 0.125
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_NOT_IN_ENUM = "not-a-listed-value"


@dataclass(frozen=True, slots=True)
class Answer:
    """One candidate: its text (or function call), why it stopped, and its metadata."""

    text: str
    function_call: dict[str, Any] | None
    finish_reason: str
    thought: str
    grounding: dict[str, Any] | None = None
    citations: dict[str, Any] | None = None
    avg_logprobs: float = 0.0

    @property
    def tokens(self) -> int:
        if self.function_call is not None:
            return count_text(orjson.dumps(self.function_call).decode())
        return count_text(self.text)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The whole answer to a request; no answers means the prompt was blocked."""

    answers: tuple[Answer, ...]
    usage: Usage
    signature: str | None = None

    @property
    def blocked(self) -> bool:
        return not self.answers


def answer_rng(seed: int, key: int) -> random.Random:
    """The generator a request's answer is drawn from, given the server's seed and the request's hash: the
    same request gets the same answer whether it comes online or as a batch line."""
    return random.Random(int(unit(seed, key) * 2**63))


def compose(request: GenerateRequest, rng: random.Random, fault: str | None) -> Outcome:
    """The answer to `request`, with output fault `fault` applied (transport faults are not handled here)."""
    if fault == "blocked":
        return Outcome((), Usage(prompt=request.prompt_tokens, cached=request.cached_tokens))
    words = keywords(request.prompt)
    thoughts = request.thinking.draw_tokens(rng)
    if request.max_output_tokens is not None:
        thoughts = min(thoughts, request.max_output_tokens)
    summary = thought_summary(rng, words) if request.thinking.include_thoughts else ""
    # A summary longer than the thinking it summarises (a tiny budget) is left out rather than over-billed.
    thought = summary if thoughts >= count_text(summary) > 0 else ""
    room = None if request.max_output_tokens is None else max(0, request.max_output_tokens - thoughts)
    answers = tuple(_answer(request, rng, words, fault, room, thought) for _ in range(request.candidate_count))
    usage = Usage(
        prompt=request.prompt_tokens,
        candidates=sum(a.tokens for a in answers),
        thoughts=thoughts,
        cached=request.cached_tokens,
        tool_use=rng.randint(50, 400) if request.google_search else 0,
    )
    signature = base64.b64encode(rng.randbytes(48)).decode() if request.thinking.signatures else None
    return Outcome(answers, usage, signature)


def _answer(
    request: GenerateRequest,
    rng: random.Random,
    words: tuple[str, ...],
    fault: str | None,
    room: int | None,
    thought: str,
) -> Answer:
    logprobs = round(-rng.uniform(0.02, 0.6), 6)
    call = _function_call(request, rng, words)
    if call is not None:
        return Answer("", call, "STOP", thought, avg_logprobs=logprobs)
    if fault == "safety":
        return Answer("", None, "SAFETY", "", avg_logprobs=logprobs)
    text = _cut_at_stop(_body(request, rng, words, fault), request.stop_sequences)
    finish = "STOP"
    if fault == "max_tokens":
        text, finish = text[: len(text) // 2], "MAX_TOKENS"
    elif room is not None and count_text(text) > room:
        text, finish = text[: room * CHARS_PER_TOKEN], "MAX_TOKENS"
    grounding = _grounding(rng, words, text) if request.google_search and text else None
    citations = _citations(rng, words, text) if text and rng.random() < _CITATION_ODDS else None
    return Answer(text, None, finish, thought, grounding, citations, logprobs)


def _function_call(request: GenerateRequest, rng: random.Random, words: tuple[str, ...]) -> dict[str, Any] | None:
    """A call when mode is ANY, or when the prompt names a declared function (and mode is not NONE)."""
    if not request.functions or request.function_mode == "NONE":
        return None
    allowed = [f for f in request.functions if not request.allowed_functions or f.name in request.allowed_functions]
    named = [f for f in allowed if f.name in request.prompt]
    if named:
        chosen = named[0]
    elif request.function_mode == "ANY" and allowed:
        chosen = rng.choice(allowed)
    else:
        return None
    args = chosen.parameters.generate(rng, words) if chosen.parameters else {}
    return {"name": chosen.name, "args": args if isinstance(args, dict) else {}}


def _body(request: GenerateRequest, rng: random.Random, words: tuple[str, ...], fault: str | None) -> str:
    broken = fault in ("invalid_json", "schema_violation")
    if request.mime_type == "text/x.enum" and request.schema is not None:
        values = request.schema.enum_values() or ("",)
        return _NOT_IN_ENUM if broken else rng.choice(values)
    if not request.json_mode and not broken:
        return answer(rng, words)
    value = request.schema.generate(rng, words) if request.schema else _free_json(rng, words)
    if fault == "schema_violation" and request.schema is not None:
        possible, violating = request.schema.violate(value, rng)
        if possible:
            return orjson.dumps(violating).decode()
    if broken:
        # Python-style quoting after a chatty lead-in: unparseable whatever the document's shape.
        return "Here is the JSON you asked for: " + orjson.dumps(value).decode().replace('"', "'")
    return orjson.dumps(value).decode()


def _free_json(rng: random.Random, words: tuple[str, ...]) -> dict[str, Any]:
    """JSON mode without a schema: a small object about the prompt."""
    return {
        "answer": answer(rng, words).split(". ")[0],
        "keywords": rng.sample(words, min(3, len(words))),
        "confidence": round(rng.uniform(0.5, 0.99), 2),
    }


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """The text up to the first stop sequence, which is not included (the API's rule)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def _redirect(rng: random.Random) -> str:
    token = base64.urlsafe_b64encode(rng.randbytes(30)).decode().rstrip("=")
    return f"https://vertexaisearch.cloud.google.com/grounding-api-redirect/{token}"


def _segment(start: int, end: int, text: str) -> dict[str, Any]:
    # Offsets are in UTF-8 bytes; a zero start is left out, as proto JSON leaves out default values.
    segment: dict[str, Any] = {"startIndex": start} if start else {}
    segment.update(endIndex=end, text=text)
    return segment


def _grounding(rng: random.Random, words: tuple[str, ...], text: str) -> dict[str, Any]:
    sites = rng.sample(words, min(len(words), rng.randint(2, 3)))
    chunks = [{"web": {"uri": _redirect(rng), "title": f"{site}.com"}} for site in sites]
    supports = []
    for match in list(_SENTENCE.finditer(text))[:3]:
        sentence = match.group().strip()
        if not sentence:
            continue
        start = len(text[: match.start() + match.group().index(sentence)].encode())
        supports.append(
            {
                "segment": _segment(start, start + len(sentence.encode()), sentence),
                "groundingChunkIndices": [rng.randrange(len(chunks))],
                "confidenceScores": [round(rng.uniform(0.6, 0.99), 4)],
            }
        )
    query = " ".join(words[:3])
    return {
        "webSearchQueries": [query],
        "groundingChunks": chunks,
        "groundingSupports": supports,
        "searchEntryPoint": {
            "renderedContent": f'<style>.container{{display:flex}}</style><div class="container">'
            f'<a class="chip" href="{_redirect(rng)}">{query}</a></div>'
        },
    }


def _citations(rng: random.Random, words: tuple[str, ...], text: str) -> dict[str, Any]:
    size = len(text.encode())
    start = rng.randrange(0, max(1, size // 2))
    end = min(size, start + rng.randint(20, 120))
    source = _segment(start, end, "")
    del source["text"]
    source["uri"] = f"https://example.org/{quote(phrase(rng, words, 1))}"
    if rng.random() < 0.5:
        source["license"] = "CC-BY-4.0"
    return {"citationSources": [source]}
