"""Plausible prose built from a prompt's own words: answers, thought summaries, phrases for JSON strings.

Everything is drawn from the caller's random generator, so the same request always reads the same.
"""

from __future__ import annotations

import random
import re

# Only the start of a long prompt is scanned: keywords are decoration, and a request must stay cheap.
_SCAN_CHARS = 2000
_MAX_KEYWORDS = 8
_WORD = re.compile(r"[^\W\d_][\w'-]{3,}")
_DIRECTIVE = re.compile(r"\[\[fake:[^\]]*\]\]")
_STOPWORDS = frozenset(
    [
        "about",
        "above",
        "after",
        "again",
        "also",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "could",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "from",
        "further",
        "have",
        "having",
        "here",
        "into",
        "itself",
        "just",
        "more",
        "most",
        "much",
        "only",
        "other",
        "over",
        "same",
        "should",
        "some",
        "such",
        "than",
        "that",
        "their",
        "theirs",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "under",
        "until",
        "very",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "whom",
        "will",
        "with",
        "would",
        "your",
        "yours",
        "please",
        "give",
        "list",
        "write",
        "tell",
        "explain",
        "answer",
        "using",
    ]
)
LEXICON = (
    "analysis",
    "balance",
    "context",
    "design",
    "evidence",
    "feature",
    "growth",
    "history",
    "impact",
    "method",
    "network",
    "option",
    "pattern",
    "quality",
    "record",
    "signal",
    "system",
    "trend",
    "value",
    "window",
)
_OPENERS = (
    "In short, {a} depends on {b}.",
    "The key point about {a} is how it shapes {b}.",
    "{A} and {b} are closely related.",
    "Most accounts of {a} start from {b}.",
    "A useful way to think about {a} is through {b}.",
)
_BODIES = (
    "When {a} changes, {b} usually follows within a short time.",
    "Careful studies of {a} point to {b} as the main factor.",
    "There is no single rule for {a}, but {b} is a reliable guide.",
    "Practitioners often measure {a} before deciding on {b}.",
    "The relationship between {a} and {b} is stronger than it first appears.",
    "Looking at {a} over several years shows a steady shift toward {b}.",
    "It helps to separate {a} from {b} before drawing conclusions.",
)
_CLOSERS = (
    "Overall, {a} is best understood together with {b}.",
    "In practice, start with {a} and revisit {b} later.",
    "That is why {a} matters for anyone working on {b}.",
)


def strip_directives(text: str) -> str:
    """The prompt without its `[[fake:...]]` directives, which are for the server, not the model."""
    return _DIRECTIVE.sub("", text) if "[[fake:" in text else text


def keywords(prompt: str) -> tuple[str, ...]:
    """Up to 8 distinct content words of the prompt, in order of appearance; the lexicon when it has none."""
    found: dict[str, None] = {}
    for match in _WORD.finditer(strip_directives(prompt[:_SCAN_CHARS])):
        word = match.group().lower().strip("'-")
        if word not in _STOPWORDS:
            found[word] = None
            if len(found) == _MAX_KEYWORDS:
                break
    return tuple(found) if len(found) >= 2 else (*found, *LEXICON)


def _pair(rng: random.Random, words: tuple[str, ...]) -> tuple[str, str]:
    # Two different words; cheaper than rng.sample, which matters at benchmark request rates.
    first = rng.randrange(len(words))
    second = (first + 1 + rng.randrange(len(words) - 1)) % len(words)
    return words[first], words[second]


def _fill(template: str, rng: random.Random, words: tuple[str, ...]) -> str:
    a, b = _pair(rng, words)
    return template.format(a=a, b=b, A=a.capitalize())


def answer(rng: random.Random, words: tuple[str, ...]) -> str:
    """A short paragraph (3 to 6 sentences) about the given words."""
    sentences = [_fill(rng.choice(_OPENERS), rng, words)]
    # Consecutive body templates from a random start: distinct, and cheaper than rng.sample.
    start = rng.randrange(len(_BODIES))
    sentences += [_fill(_BODIES[(start + i) % len(_BODIES)], rng, words) for i in range(1 + rng.randrange(4))]
    sentences.append(_fill(rng.choice(_CLOSERS), rng, words))
    return " ".join(sentences)


def thought_summary(rng: random.Random, words: tuple[str, ...]) -> str:
    """A thought summary in the style Gemini returns for `includeThoughts`: a bold title, then a sentence."""
    a, b = _pair(rng, words)
    return (
        f"**Considering {a.capitalize()} and {b.capitalize()}**\n\n"
        f"I'm working out how {a} relates to {b}, then drafting a short, direct answer."
    )


def phrase(rng: random.Random, words: tuple[str, ...], count: int) -> str:
    """`count` words drawn from `words`, joined by spaces."""
    return " ".join(rng.choice(words) for _ in range(count))
