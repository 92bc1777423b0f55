"""Generators of JSON values, one node per schema construct; a compiled schema is a tree of these.

Each node draws a value that conforms to its construct, and names the JSON types it can produce so a value of
another type can be swapped in when a schema violation is wanted. Nesting deeper than `SOFT_DEPTH` keeps only
what is required (optional properties, extra items and nullable values are dropped), which is how recursive
schemas terminate; deeper than `HARD_DEPTH` means the recursion is required and cannot terminate.
"""

from __future__ import annotations

import abc
import base64
import math
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batchgen.fakeserver.patterns import Gen
from batchgen.fakeserver.text import phrase

SOFT_DEPTH = 6
HARD_DEPTH = 48
JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "null", "array", "object"})
_OPTIONAL_ODDS = 0.75
_NULL_ODDS = 0.15
# Arrays without maxItems get at most this many items beyond minItems, so documents stay small.
_EXTRA_ITEMS = 3
_DEFAULT_SPAN = 100


class SchemaTooDeep(Exception):
    """A required recursion never ends, so no finite document conforms."""


@dataclass(slots=True)
class Draw:
    """What a generator draws from: the request's random generator and its prompt's words."""

    rng: random.Random
    words: tuple[str, ...]


class Node(abc.ABC):
    """One schema construct."""

    __slots__ = ()

    @abc.abstractmethod
    def gen(self, draw: Draw, depth: int) -> Any:
        """A value conforming to this construct."""

    @abc.abstractmethod
    def types(self, seen: frozenset[str]) -> frozenset[str]:
        """The JSON types this construct can produce (`seen` guards against reference cycles)."""


class AnyNode(Node):
    """No constraint (JSON Schema `true` or `{}`): a short string."""

    __slots__ = ()

    def gen(self, draw: Draw, depth: int) -> Any:
        return phrase(draw.rng, draw.words, 2)

    def types(self, seen: frozenset[str]) -> frozenset[str]:
        return JSON_TYPES


def json_type(value: Any) -> str:
    """The JSON type name of a parsed JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class ConstNode(Node):
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def gen(self, draw: Draw, depth: int) -> Any:
        return self.value

    def types(self, seen: frozenset[str]) -> frozenset[str]:
        return frozenset({json_type(self.value)})


class EnumNode(Node):
    __slots__ = ("values",)

    def __init__(self, values: Sequence[Any]) -> None:
        self.values = tuple(values)

    def gen(self, draw: Draw, depth: int) -> Any:
        return draw.rng.choice(self.values)

    def types(self, seen: frozenset[str]) -> frozenset[str]:
        return frozenset(json_type(v) for v in self.values)


def _ascii_word(draw: Draw) -> str:
    word = "".join(c for c in draw.rng.choice(draw.words) if c.isascii() and c.isalnum())
    return word.lower() or "item"


def _date(draw: Draw) -> str:
    rng = draw.rng
    return f"{rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _time(draw: Draw) -> str:
    rng = draw.rng
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"


_FORMATS: Mapping[str, Callable[[Draw], str]] = {
    "date": _date,
    "date-time": lambda d: f"{_date(d)}T{_time(d)}",
    "time": _time,
    "email": lambda d: f"{_ascii_word(d)}@example.com",
    "uuid": lambda d: str(uuid.UUID(int=d.rng.getrandbits(128), version=4)),
    "uri": lambda d: f"https://example.com/{_ascii_word(d)}",
    "hostname": lambda d: f"{_ascii_word(d)}.example.com",
    "ipv4": lambda d: ".".join(str(d.rng.randint(1, 254)) for _ in range(4)),
    "byte": lambda d: base64.b64encode(d.rng.randbytes(d.rng.randint(3, 12))).decode(),
}


class StringNode(Node):
    __slots__ = ("fmt", "max_len", "min_len", "pattern")

    def __init__(self, min_len: int, max_len: int | None, pattern: Gen | None, fmt: str | None) -> None:
        self.min_len = min_len
        self.max_len = max_len
        self.pattern = pattern
        self.fmt = fmt if fmt in _FORMATS else None

    def fits(self, text: str) -> bool:
        return self.min_len <= len(text) and (self.max_len is None or len(text) <= self.max_len)

    def gen(self, draw: Draw, depth: int) -> Any:
        if self.pattern is not None:
            # A pattern wins over the length bounds when a few draws cannot satisfy both.
            text = self.pattern(draw.rng)
            for _ in range(8):
                if self.fits(text):
                    break
                text = self.pattern(draw.rng)
            return text
        if self.fmt is not None:
            text = _FORMATS[self.fmt](draw)
            if self.fits(text):
                return text
        text = phrase(draw.rng, draw.words, draw.rng.randint(1, 4))
        while len(text) < self.min_len:
            text += " " + draw.rng.choice(draw.words)
        return text if self.max_len is None else text[: self.max_len]

    def types(self, seen: frozenset[str]) -> frozenset[str]:
        return frozenset({"string"})


class IntegerNode(Node):
    __slots__ = ("high", "low")

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high

    def gen(self, draw: Draw, depth: int) -> Any:
        return draw.rng.randint(self.low, self.high)

    def types(self, seen: frozenset[str]) -> frozenset[str]:
        return frozenset({"integer"})


class NumberNode(Node):
    __slots__ = ("high", "low", "open_high", "open_low")

    def __init__(self, low: float, high: float, open_low: bool, open_high: bool) -> None:
        self.low = low
        self.high = high
        self.open_low = open_low
        self.open_high = open_high

    def inside(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def gen(self, draw: Draw, depth: int) -> Any:
        value = draw.rng.uniform(self.low, self.high)
        rounded = round(value, 2)
        # Two decimals read naturally; fall back to the exact draw (or the midpoint) at a tight bound.
        if self.inside(rounded):
            return rounded
        return value if self.inside(value) else (self.low + self.high) / 2

    def types(self, seen: frozenset[str]) -> frozenset[str]:
        return frozenset({"number"})


def integer_bounds(low: float | None, high: float | None, open_low: bool, open_high: bool) -> tuple[int, int]:
    """Inclusive integer bounds from schema bounds; a missing side is 100 away from the other (or 0..100)."""
    lo = None if low is None else (math.floor(low) + 1 if open_low else math.ceil(low))
    hi = None if high is None else (math.ceil(high) - 1 if open_high else math.floor(high))
    if lo is None:
        return (0, _DEFAULT_SPAN) if hi is None else (hi - _DEFAULT_SPAN, hi)
    return lo, lo + _DEFAULT_SPAN if hi is None else hi


def number_bounds(low: float | None, high: float | None) -> tuple[float, float]:
    """Number bounds with the same defaults as `integer_bounds`."""
    if low is None:
        return (0.0, float(_DEFAULT_SPAN)) if high is None else (high - _DEFAULT_SPAN, high)
    return low, low + _DEFAULT_SPAN if high is None else high


class BooleanNode(Node):
    __slots__ = ()

    def gen(self, draw: Draw, depth: int) -> Any:
        return draw.rng.random() < 0.5

    def types(self, seen: frozenset[str]) -> frozenset[str]:
        return frozenset({"boolean"})


class NullNode(Node):
    __slots__ = ()

    def gen(self, draw: Draw, depth: int) -> Any:
        return None

    def types(self, seen: frozenset[str]) -> frozenset[str]:
        return frozenset({"null"})


class NullableNode(Node):
    """OpenAPI `nullable: true`: sometimes null, always null once deep."""

    __slots__ = ("inner",)

    def __init__(self, inner: Node) -> None:
        self.inner = inner

    def gen(self, draw: Draw, depth: int) -> Any:
        if depth > SOFT_DEPTH or draw.rng.random() < _NULL_ODDS:
            return None
        return self.inner.gen(draw, depth)

    def types(self, seen: frozenset[str]) -> frozenset[str]:
        return self.inner.types(seen) | {"null"}


class ArrayNode(Node):
    __slots__ = ("items", "max_items", "min_items", "prefix")

    def __init__(self, items: Node | None, prefix: Sequence[Node], min_items: int, max_items: int | None) -> None:
        # `items` None means no items beyond `prefix` are allowed (JSON Schema `items: false`).
        self.items = items
        self.prefix = tuple(prefix)
        self.min_items = min_items
        self.max_items = max_items

    def gen(self, draw: Draw, depth: int) -> Any:
        high = self.min_items + _EXTRA_ITEMS
        if self.max_items is not None:
            high = min(high, self.max_items)
        # Near the root an array is not left empty unless it must be, as a model would fill it.
        low = max(self.min_items, 1) if depth <= 1 and high >= 1 else self.min_items
        count = self.min_items if depth > SOFT_DEPTH else draw.rng.randint(low, max(high, low))
        values = [node.gen(draw, depth + 1) for node in self.prefix[:count]]
        if self.items is not None:
            values += [self.items.gen(draw, depth + 1) for _ in range(count - len(values))]
        return values

    def types(self, seen: frozenset[str]) -> frozenset[str]:
        return frozenset({"array"})


class ObjectNode(Node):
    __slots__ = ("extra", "max_props", "min_props", "props", "required")

    def __init__(
        self,
        props: Sequence[tuple[str, Node]],
        required: Sequence[str],
        extra: Node | None,
        min_props: int = 0,
        max_props: int | None = None,
    ) -> None:
        # `props` is in output order; `extra` generates values for keys outside `props`, used only when the
        # schema names no properties (a map such as additionalProperties: {type: integer}).
        known = {name for name, _ in props}
        self.props = tuple(props) + tuple((name, AnyNode()) for name in required if name not in known)
        self.required = frozenset(required)
        self.extra = extra
        self.min_props = min_props
        self.max_props = max_props

    def gen(self, draw: Draw, depth: int) -> Any:
        rng = draw.rng
        optional = [name for name, _ in self.props if name not in self.required]
        chosen = [] if depth > SOFT_DEPTH else [name for name in optional if rng.random() < _OPTIONAL_ODDS]
        missing = self.min_props - len(self.required) - len(chosen)
        if missing > 0:
            chosen += [name for name in optional if name not in chosen][:missing]
        if self.max_props is not None:
            chosen = chosen[: max(0, self.max_props - len(self.required))]
        keep = self.required.union(chosen)
        out = {name: node.gen(draw, depth + 1) for name, node in self.props if name in keep}
        if not self.props and (self.extra is not None or self.min_props):
            self._add_extra(out, draw, depth)
        return out

    def _add_extra(self, out: dict[str, Any], draw: Draw, depth: int) -> None:
        node = self.extra or AnyNode()
        high = max(self.min_props, 3 if self.max_props is None else min(3, self.max_props))
        count = self.min_props if depth > SOFT_DEPTH else draw.rng.randint(self.min_props, high)
        for index in range(count):
            out[f"{draw.rng.choice(draw.words)}_{index}"] = node.gen(draw, depth + 1)

    def types(self, seen: frozenset[str]) -> frozenset[str]:
        return frozenset({"object"})


class UnionNode(Node):
    """anyOf / oneOf / a list of types: one option, chosen per value; once deep, the first leaf option."""

    __slots__ = ("options",)

    def __init__(self, options: Sequence[Node]) -> None:
        self.options = tuple(options)

    def gen(self, draw: Draw, depth: int) -> Any:
        if depth > SOFT_DEPTH:
            leaves = [o for o in self.options if not isinstance(o, (RefNode, ObjectNode, ArrayNode))]
            return (leaves or list(self.options))[0].gen(draw, depth)
        return draw.rng.choice(self.options).gen(draw, depth)

    def types(self, seen: frozenset[str]) -> frozenset[str]:
        return frozenset().union(*(o.types(seen) for o in self.options))


class RefNode(Node):
    """A `$ref`, looked up when drawn so that references may form cycles."""

    __slots__ = ("ref", "table")

    def __init__(self, ref: str, table: Mapping[str, Node]) -> None:
        self.ref = ref
        self.table = table

    def target(self) -> Node:
        return self.table[self.ref]

    def gen(self, draw: Draw, depth: int) -> Any:
        target = resolve(self)
        # Every unending recursion passes through a reference: a cycle of bare references, or nesting that
        # never reaches an optional step.
        if depth > HARD_DEPTH or isinstance(target, RefNode):
            raise SchemaTooDeep(self.ref)
        return target.gen(draw, depth)

    def types(self, seen: frozenset[str]) -> frozenset[str]:
        return frozenset() if self.ref in seen else self.target().types(seen | {self.ref})


def resolve(node: Node) -> Node:
    """The node behind any chain of references."""
    seen: set[str] = set()
    while isinstance(node, RefNode) and node.ref not in seen:
        seen.add(node.ref)
        node = node.target()
    return node


# Replacement values for a "wrong type" violation, tried in order: the first whose types the node lacks.
_WRONG_VALUES: tuple[tuple[frozenset[str], Any], ...] = (
    (frozenset({"number", "integer"}), 12345),
    (frozenset({"string"}), "unexpected text"),
    (frozenset({"object"}), {"unexpected": True}),
    (frozenset({"array"}), [0]),
    (frozenset({"boolean"}), True),
)


def wrong_value(node: Node) -> tuple[bool, Any]:
    """(True, a value of a type `node` cannot produce), or (False, None) when it accepts every type."""
    produced = node.types(frozenset())
    for types, value in _WRONG_VALUES:
        if not types & produced:
            return True, value
    return False, None
