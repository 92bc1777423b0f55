"""Strings that match a schema's `pattern`: a small regex parser that compiles to a string generator.

Supported: literals and escaped literals, `.`, classes (`[a-z0-9_]`, negated `[^...]`, `\\d \\w \\s` and their
negations, inside or outside a class), groups (`(...)`, `(?:...)`, `(?P<name>...)`, `(?<name>...)`),
alternation `|`, the quantifiers `? * + {n} {n,} {n,m} {,m}` (a trailing lazy `?` or possessive `+` is
accepted and changes nothing) and the anchors `^ $ \\A \\Z \\z`, which are ignored because the generated
string is the whole match. Unbounded quantifiers repeat at most 4 times more than their minimum.

Not supported (raises PatternError): backreferences, lookaround, inline flags, `\\b`, and Unicode classes such
as `\\p{L}`. Generated characters are printable ASCII, so a pattern that can only match other characters
(e.g. `[^ -~]`) cannot be generated either.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

# The alphabet for `.` and negated classes: printable ASCII without control characters.
_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))
_DIGITS = frozenset(string.digits)
_WORD = frozenset(string.ascii_letters + string.digits + "_")
_SPACE = frozenset(" ")
_CLASS_ESCAPES = {
    "d": _DIGITS,
    "D": _PRINTABLE - _DIGITS,
    "w": _WORD,
    "W": _PRINTABLE - _WORD,
    "s": _SPACE,
    "S": _PRINTABLE - _SPACE,
}
_LITERAL_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "0": "\0"}
_ANCHOR_ESCAPES = frozenset("AZz")
_UNBOUNDED_EXTRA = 4

Gen = Callable[[random.Random], str]


class PatternError(ValueError):
    """The pattern uses a construct this generator does not support."""


def compile_pattern(pattern: str) -> Gen:
    """A function that draws a string matching `pattern` from the given random generator."""
    parser = _Parser(pattern)
    gen = parser.alternation()
    if parser.pos != len(pattern):
        raise PatternError(f"unbalanced ')' at {parser.pos} in pattern {pattern!r}")
    return gen


def _literal(text: str) -> Gen:
    return lambda rng: text


def _charset(chars: frozenset[str]) -> Gen:
    if not chars:
        raise PatternError("a character class matches no printable ASCII character")
    choices = sorted(chars)
    return lambda rng: rng.choice(choices)


def _sequence(items: list[Gen]) -> Gen:
    if len(items) == 1:
        return items[0]
    return lambda rng: "".join(item(rng) for item in items)


def _alternatives(options: list[Gen]) -> Gen:
    if len(options) == 1:
        return options[0]
    return lambda rng: rng.choice(options)(rng)


def _repeat(item: Gen, low: int, high: int) -> Gen:
    return lambda rng: "".join(item(rng) for _ in range(rng.randint(low, high)))


class _Parser:
    """Recursive descent over the pattern: alternation > sequence > quantified atom."""

    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        if not char:
            raise PatternError(f"pattern ends too early: {self.text!r}")
        self.pos += 1
        return char

    def alternation(self) -> Gen:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return _alternatives(options)

    def sequence(self) -> Gen:
        items: list[Gen] = []
        while self.peek() not in ("", "|", ")"):
            atom = self.atom()
            if atom is not None:
                items.append(self.quantified(atom))
        return _sequence(items) if items else _literal("")

    def atom(self) -> Gen | None:
        char = self.take()
        if char in "^$":
            return None
        if char == ".":
            return _charset(_PRINTABLE)
        if char == "(":
            return self.group()
        if char == "[":
            return _charset(self.char_class())
        if char == "\\":
            return self.escape()
        if char in "*+?":
            raise PatternError(f"nothing to repeat at {self.pos - 1} in pattern {self.text!r}")
        return _literal(char)

    def group(self) -> Gen:
        if self.peek() == "?":
            self.pos += 1
            kind = self.take()
            if (kind == "P" and self.peek() == "<") or (kind == "<" and self.peek() not in "=!"):
                self.pos = self.text.index(">", self.pos) + 1
            elif kind != ":":
                raise PatternError(f"lookaround and inline flags are not supported: {self.text!r}")
        inner = self.alternation()
        if self.take() != ")":
            raise PatternError(f"missing ')' in pattern {self.text!r}")
        return inner

    def escape(self) -> Gen | None:
        char = self.take()
        if char in _CLASS_ESCAPES:
            return _charset(_CLASS_ESCAPES[char])
        if char in _ANCHOR_ESCAPES:
            return None
        if char.isalnum() and char not in _LITERAL_ESCAPES:
            raise PatternError(f"escape \\{char} is not supported in pattern {self.text!r}")
        return _literal(_LITERAL_ESCAPES.get(char, char))

    def char_class(self) -> frozenset[str]:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        chars: set[str] = set()
        first = True
        while first or self.peek() != "]":
            first = False
            low = self.class_member()
            if isinstance(low, frozenset):
                chars |= low
            elif self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                high = self.class_member()
                if isinstance(high, frozenset) or ord(high) < ord(low):
                    raise PatternError(f"bad range in class in pattern {self.text!r}")
                chars.update(chr(c) for c in range(ord(low), ord(high) + 1))
            else:
                chars.add(low)
        self.pos += 1
        return frozenset(_PRINTABLE - chars) if negated else frozenset(chars & _PRINTABLE)

    def class_member(self) -> str | frozenset[str]:
        char = self.take()
        if char != "\\":
            return char
        escaped = self.take()
        if escaped in _CLASS_ESCAPES:
            return _CLASS_ESCAPES[escaped]
        if escaped.isalnum() and escaped not in _LITERAL_ESCAPES:
            raise PatternError(f"escape \\{escaped} is not supported in pattern {self.text!r}")
        return _LITERAL_ESCAPES.get(escaped, escaped)

    def quantified(self, atom: Gen) -> Gen:
        bounds = self.quantifier()
        if bounds is None:
            return atom
        if self.peek() in ("?", "+"):
            self.pos += 1
        return _repeat(atom, *bounds)

    def quantifier(self) -> tuple[int, int] | None:
        char = self.peek()
        simple = {"?": (0, 1), "*": (0, _UNBOUNDED_EXTRA), "+": (1, 1 + _UNBOUNDED_EXTRA)}
        if char in simple:
            self.pos += 1
            return simple[char]
        if char != "{":
            return None
        end = self.text.find("}", self.pos)
        body = self.text[self.pos + 1 : end] if end > 0 else ""
        low_text, comma, high_text = body.partition(",")
        if end < 0 or not (low_text.isdigit() or (comma and not low_text)) or (high_text and not high_text.isdigit()):
            # Python treats a "{" that is not a valid quantifier as a literal; atom() will take it.
            return None
        self.pos = end + 1
        low = int(low_text or 0)
        high = int(high_text) if high_text else (low + _UNBOUNDED_EXTRA if comma else low)
        if high < low:
            raise PatternError(f"bad repeat bounds {{{body}}} in pattern {self.text!r}")
        return low, high
