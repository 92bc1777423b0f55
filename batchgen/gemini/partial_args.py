"""Function calls whose arguments a stream sends in pieces (`partialArgs`), put back together."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any


class StreamedCalls:
    """Function calls whose arguments stream in pieces (Vertex `streamFunctionCallArguments`), put together.

    A call opens with `{"name", "willContinue": true}`; parts `{"partialArgs": [{jsonPath, stringValue |
    numberValue | boolValue | nullValue, willContinue}], "willContinue"}` fill in its arguments (a string
    arrives in pieces, appended); it closes at a part without willContinue or at an empty `functionCall: {}`,
    and the final empty one may be missing (tests/recorded/gemini-3/vertex-stream-partial-args*.json).
    """

    def __init__(self, parts: list[dict[str, Any]]) -> None:
        self._parts = parts
        self._open: dict[str, Any] | None = None

    def take(self, call: Mapping[str, Any]) -> bool:
        """Fold `call` into the call being streamed; False when it is a whole call of its own."""
        streaming = call.get("willContinue") or "partialArgs" in call or not call
        if not streaming:
            self._open = None
            return False  # a complete call, the usual case
        if "name" in call:
            self._open = {key: call[key] for key in ("name", "id") if key in call}
            self._open["args"] = dict(call.get("args") or {})
            self._parts.append({"functionCall": self._open})
        pieces = call.get("partialArgs")
        if self._open is not None and isinstance(pieces, list):
            for piece in pieces:
                if isinstance(piece, Mapping):
                    _set_arg(self._open["args"], piece)
        if not call.get("willContinue"):
            self._open = None
        return True


_PATH_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\['([^']*)'\]")


def _set_arg(args: dict[str, Any], piece: Mapping[str, Any]) -> None:
    steps: list[str | int] = [
        int(index) if index else (name or quoted)
        for name, index, quoted in _PATH_STEP.findall(str(piece.get("jsonPath", "")).removeprefix("$"))
    ]
    if not steps:
        return
    node: Any = args
    for step, following in itertools.pairwise(steps):
        node = _child(node, step, [] if isinstance(following, int) else {})
    last = steps[-1]
    if "stringValue" in piece:
        before = _get(node, last)
        value: Any = (before if isinstance(before, str) else "") + str(piece["stringValue"])
    elif "numberValue" in piece:
        value = piece["numberValue"]
    elif "boolValue" in piece:
        value = piece["boolValue"]
    else:
        value = None
    _child(node, last, value, replace=True)


def _get(node: Any, step: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(step)
    return node[step] if isinstance(step, int) and step < len(node) else None


def _child(node: Any, step: str | int, value: Any, *, replace: bool = False) -> Any:
    """node[step], set to `value` when missing (or always, with `replace`); lists grow with nulls to reach it."""
    if isinstance(node, list) and isinstance(step, int):
        node.extend([None] * (step + 1 - len(node)))
        if replace or node[step] is None:
            node[step] = value
        return node[step]
    if isinstance(node, dict):
        if replace or step not in node:
            node[step] = value
        return node[step]
    return value  # a path through a scalar: the piece is dropped rather than break the whole reply
