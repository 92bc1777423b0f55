"""Which fault a generate request gets: what its prompt directs, or a deterministic draw.

A request is identified by a hash of its model and body bytes; the server counts attempts per hash (a retry
sends the same bytes), and every draw is a pure function of seed, request hash and attempt number, so a run
replays identically.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from batchgen.fakeserver.config import FAULT_NAMES, ServerConfig

_DIRECTIVE = re.compile(r"\[\[fake:([^\]*]*)(?:\*(\d+))?\]\]")
_STREAM_ONLY = frozenset({"sse_cut", "sse_error"})
_JSON_ONLY = frozenset({"invalid_json", "schema_violation"})
_MASK = (1 << 64) - 1
# Attempt counters kept at most; the oldest are forgotten first (a benchmark may send millions of requests).
_MAX_TRACKED = 1_000_000


@dataclass(frozen=True, slots=True)
class Directive:
    """`[[fake:NAME]]` (every attempt, `attempts` None) or `[[fake:NAME*K]]` (the next K attempts)."""

    name: str
    attempts: int | None


def parse_directives(text: str) -> tuple[Directive, ...]:
    """The directives in a prompt, in order; raises ValueError for an unknown fault name."""
    if "[[fake:" not in text:
        return ()
    directives = []
    for match in _DIRECTIVE.finditer(text):
        name, count = match.group(1), match.group(2)
        if name not in FAULT_NAMES:
            raise ValueError(f"fake server: unknown directive [[fake:{name}]]; known: {', '.join(FAULT_NAMES)}")
        directives.append(Directive(name, None if count is None else int(count)))
    return tuple(directives)


def directed_fault(directives: tuple[Directive, ...], attempt: int) -> str | None:
    """The fault for 1-based `attempt`: directives apply one after another, each for its K attempts."""
    remaining = attempt
    for directive in directives:
        if directive.attempts is None or remaining <= directive.attempts:
            return directive.name
        remaining -= directive.attempts
    return None


def request_key(model: str, body: bytes) -> int:
    """A 64-bit identity of one request: retries of the same call share it."""
    digest = hashlib.blake2b(model.encode(), digest_size=8)
    digest.update(b"\0")
    digest.update(body)
    return int.from_bytes(digest.digest(), "little")


def _mix(value: int) -> int:
    # splitmix64 finaliser: spreads nearby inputs (attempt 1, 2, ...) over the whole 64-bit range.
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def unit(*parts: int) -> float:
    """A number in [0, 1) that depends only on `parts`."""
    state = 0
    for part in parts:
        state = _mix(state ^ (part & _MASK))
    return state / 2.0**64


def _weighted(weights: Mapping[str, float], allowed: frozenset[str] | None, draw: float) -> str | None:
    names = [n for n, w in weights.items() if w > 0 and (allowed is None or n in allowed)]
    total = sum(weights[n] for n in names)
    point = draw * total
    for name in names:
        point -= weights[name]
        if point < 0:
            return name
    return names[-1] if names else None


class FaultPlanner:
    """Counts attempts per request and picks each attempt's fault."""

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self._attempts: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"<FaultPlanner fail_rate={self._config.fail_rate} tracked={len(self._attempts)}>"

    def next_attempt(self, key: int) -> int:
        """Record one more attempt of request `key` and return its 1-based number."""
        attempt = self._attempts.pop(key, 0) + 1
        if len(self._attempts) >= _MAX_TRACKED:
            del self._attempts[next(iter(self._attempts))]
        # Re-inserted so the dict's order is least recently seen first.
        self._attempts[key] = attempt
        return attempt

    def choose(
        self, key: int, attempt: int, directives: tuple[Directive, ...], *, stream: bool, json_mode: bool
    ) -> str | None:
        """The fault for this attempt, or None. A prompt with directives gets exactly what they say."""
        if directives:
            return directed_fault(directives, attempt)
        config = self._config
        if config.fail_rate and unit(config.seed, key, attempt, 1) < config.fail_rate:
            allowed = None if stream else frozenset(config.fault_weights) - _STREAM_ONLY
            fault = _weighted(config.fault_weights, allowed, unit(config.seed, key, attempt, 2))
            if fault is not None:
                return fault
        if config.violate_rate and unit(config.seed, key, attempt, 3) < config.violate_rate:
            allowed = None if json_mode else frozenset(config.violation_weights) - _JSON_ONLY
            return _weighted(config.violation_weights, allowed, unit(config.seed, key, attempt, 4))
        return None
