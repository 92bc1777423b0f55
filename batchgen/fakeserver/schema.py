"""Compile `responseSchema` (Gemini's OpenAPI subset) and `responseJsonSchema` (JSON Schema) into generators.

`responseSchema` is checked as strictly as the API parses it: unknown keywords, a list-valued `type`, an
OBJECT without properties and `required` names that are not properties are 400s. Without `propertyOrdering`
its keys come out in alphabetical order, as the API does (litellm PR #9828 observed the alphabetising).

`responseJsonSchema` follows JSON Schema: `$ref` to local pointers (`#`, `#/$defs/...`, `#/definitions/...`)
including recursive ones, `$defs`, `type` lists, `const`, `enum`, `anyOf`/`oneOf`, `allOf` (merged shallowly:
properties and required are combined), `prefixItems`, `items`, `additionalProperties`, `propertyOrdering`,
bounds and `pattern`. Keys keep the schema's order. Keywords outside that list (`not`, `if`, `uniqueItems`,
`multipleOf`, `patternProperties`, ...) are ignored, so output may not satisfy them; a `oneOf` whose options
overlap can produce a value that matches more than one option.

Compiled schemas are cached by their serialised form, so a request with a known schema costs one dict lookup.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Literal

import orjson

from batchgen.fakeserver.dialects import JsonSchema, OpenApi, SchemaRejected
from batchgen.fakeserver.nodes import (
    Draw,
    EnumNode,
    Node,
    ObjectNode,
    SchemaTooDeep,
    resolve,
    wrong_value,
)
from batchgen.fakeserver.text import LEXICON

Dialect = Literal["openapi", "jsonschema"]
_TOO_COMPLEX = "The specified schema produces a constraint that has too many states for serving."


class CompiledSchema:
    """A schema ready to draw conforming values from, and to break on purpose."""

    __slots__ = ("root",)

    def __init__(self, root: Node) -> None:
        self.root = root

    def generate(self, rng: random.Random, words: tuple[str, ...]) -> Any:
        return self.root.gen(Draw(rng, words), 0)

    def enum_values(self) -> tuple[str, ...] | None:
        """The root's enum values as text, for `text/x.enum`; None if the root is not an enum."""
        node = resolve(self.root)
        if isinstance(node, EnumNode):
            return tuple(v if isinstance(v, str) else orjson.dumps(v).decode() for v in node.values)
        return None

    def violate(self, value: Any, rng: random.Random) -> tuple[bool, Any]:
        """(True, a variant of `value` the schema rejects), or (False, None) when the schema accepts anything.

        Picks among: drop a required property, put a wrong-typed value in a property, put an unlisted value in
        an enum property, or replace the whole document with a value of the wrong type.
        """
        node = resolve(self.root)
        breakers: list[Callable[[], Any]] = []
        if isinstance(node, ObjectNode) and isinstance(value, dict):
            breakers += _property_breakers(node, value)
        possible, wrong = wrong_value(node)
        if possible:
            breakers.append(lambda: wrong)
        if not breakers:
            return False, None
        return True, rng.choice(breakers)()


def _property_breakers(node: ObjectNode, value: dict[str, Any]) -> list[Callable[[], Any]]:
    def replaced(key: str, new: Any) -> Callable[[], Any]:
        return lambda: {**value, key: new}

    breakers: list[Callable[[], Any]] = []
    required = [key for key in value if key in node.required]
    if required:
        breakers.append(lambda: {k: v for k, v in value.items() if k != required[0]})
    for key, prop in node.props:
        if key not in value:
            continue
        possible, wrong = wrong_value(prop)
        if possible:
            breakers.append(replaced(key, wrong))
        if isinstance(resolve(prop), EnumNode):
            breakers.append(replaced(key, "not-a-listed-value"))
    return breakers


class SchemaCache:
    """Compiled schemas (or the 400 they earn) keyed by dialect, location and serialised schema."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._entries: dict[tuple[str, str, bytes], CompiledSchema | str] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, dialect: Dialect, schema: Any, where: str) -> CompiledSchema:
        """The compiled schema; raises SchemaRejected (a fresh one each time) if the API would refuse it."""
        key = (dialect, where, orjson.dumps(schema))
        entry = self._entries.get(key)
        if entry is None:
            entry = _compile(dialect, schema, where)
            if len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = entry
        if isinstance(entry, str):
            raise SchemaRejected(entry)
        return entry


def _compile(dialect: Dialect, schema: Any, where: str) -> CompiledSchema | str:
    try:
        root = OpenApi().node(schema, where) if dialect == "openapi" else JsonSchema(schema).node(schema, where)
        compiled = CompiledSchema(root)
        # One trial draw finds required recursion, which no finite document satisfies.
        compiled.generate(random.Random(0), LEXICON)
    except SchemaRejected as exc:
        return str(exc)
    except SchemaTooDeep:
        return _TOO_COMPLEX
    return compiled
