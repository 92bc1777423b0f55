"""What tokens cost: the price table (shipped, plus a user's override) and the billing arithmetic.

Billing follows `usageMetadata` (see the Gemini API reference, section 3): `promptTokenCount` already
includes the cached tokens, so fresh input is prompt - cached; tool-use prompt tokens are billed as input;
thinking tokens are billed as output, with the candidates. A model the table does not know is an error, never
a cost of 0.

Service tiers scale every rate of a model: the Batch API and Flex cost half of standard, Priority more (the
table's `[tiers]`). A row is billed at the tier it was served at (`billed_tier`).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from batchgen.errors import ConfigError
from batchgen.records import Usage

PER_MILLION = 1_000_000

# What may follow a table name in a result's model name for the price still to apply: version parts only.
# A suffix such as "-lite", "-image" or "-tts" names another product with other prices.
_VERSION_PART = re.compile(r"preview|exp|latest|\d+")

# The service tiers a row can be billed at; standard is the table's own rates, the others scale them.
STANDARD = "standard"
TIERS = (STANDARD, "batch", "flex", "priority")
# How other spellings of a tier read: Vertex's usageMetadata.trafficType names (ON_DEMAND_FLEX...), which
# the Gemini API is documented not to send, but a proxy in front of Vertex might.
_TIER_ALIASES = {"on_demand": STANDARD, "on_demand_flex": "flex", "on_demand_priority": "priority"}

_RATE_KEYS = ("input", "output", "cached_input")
_LONG_KEYS = ("input_long", "output_long", "cached_input_long")
_ENTRY_KEYS = frozenset((*_RATE_KEYS, *_LONG_KEYS, "long_context_threshold", "as_of", "source"))


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per 1M tokens in one tier: fresh input (+ tool-use prompt), cache reads, output (+ thinking)."""

    input: float
    output: float
    cached_input: float

    def scaled(self, factor: float) -> Rates:
        """These rates times `factor` (a service tier's multiplier)."""
        if factor == 1.0:
            return self
        return Rates(self.input * factor, self.output * factor, self.cached_input * factor)

    def charge(self, usage: Usage) -> Cost:
        """The cost of `usage` billed at these rates; a count never reported counts as 0."""
        fresh = (usage.prompt or 0) - (usage.cached or 0)
        return Cost(
            input=(fresh + (usage.tool_use or 0)) * self.input / PER_MILLION,
            cached=(usage.cached or 0) * self.cached_input / PER_MILLION,
            output=((usage.candidates or 0) + (usage.thoughts or 0)) * self.output / PER_MILLION,
        )


@dataclass(frozen=True, slots=True)
class Cost:
    """USD, split as billed: fresh input (and tool-use prompt), cache reads, output (+ thinking)."""

    input: float = 0.0
    cached: float = 0.0
    output: float = 0.0

    @property
    def total(self) -> float:
        return self.input + self.cached + self.output

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.input + other.input, self.cached + other.cached, self.output + other.output)


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices; `long` applies to requests whose prompt exceeds `long_context_threshold` tokens.

    `tiers` holds the multiplier of each service tier but standard (batch, flex, priority), applied to every
    rate; a tier it lacks cannot be priced.
    """

    model: str
    standard: Rates
    long: Rates | None = None
    long_context_threshold: int | None = None
    as_of: date | None = None
    source: str = ""
    tiers: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if (self.long is None) != (self.long_context_threshold is None):
            raise ValueError(f"{self.model}: long-context rates and threshold go together")

    def is_long(self, prompt: int, responses: int) -> bool:
        """Whether a row's responses were billed at the long tier, judged by their mean prompt size.

        Rows hold sums over every response received, so the mean prompt per response stands in for each
        response's own prompt (re-asks of one row send nearly the same prompt). A row with tokens but no
        counted response is taken as one response.
        """
        threshold = self.long_context_threshold
        return threshold is not None and prompt > threshold * max(responses, 1)

    def rates(self, long: bool, tier: str = STANDARD) -> Rates:
        """The rates of the long tier when `long` (and the model has one), else the standard ones, at `tier`."""
        base = self.long if long and self.long is not None else self.standard
        return base.scaled(self.multiplier(tier))

    def multiplier(self, tier: str) -> float:
        """What `tier` costs relative to standard; a ConfigError for a tier the price file does not price."""
        if tier == STANDARD:
            return 1.0
        try:
            return self.tiers[tier]
        except KeyError:
            raise ConfigError(
                f"no multiplier for service tier {tier!r}; add it under [tiers] in a price file"
            ) from None

    def cost(self, usage: Usage, responses: int, tier: str = STANDARD) -> Cost:
        """The cost of one results row, whose token counts are sums over its `responses` billed responses,
        served at `tier`."""
        return self.rates(self.is_long(usage.prompt or 0, responses), tier).charge(usage)


def billed_tier(traffic: str | None, reported: str | None = None) -> str:
    """The tier a row is billed at: `batch` for a Batch API row (its own price, whatever tier a line might
    report), else the tier the API reported serving it at (`usageMetadata.serviceTier` or the
    `x-gemini-service-tier` header), else the tier asked for (`traffic`); standard for rows that say neither
    (results written before tiers were recorded). A reported value this table does not know is not trusted.
    """
    if traffic == "batch":
        return "batch"
    return known_tier(reported) or known_tier(traffic) or STANDARD


def known_tier(name: str | None) -> str | None:
    """`name` as one of `TIERS` (any case; Vertex's trafficType spellings too); None when it is none of them."""
    if not name:
        return None
    tier = _TIER_ALIASES.get(name.lower(), name.lower())
    return tier if tier in TIERS else None


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices by model name; `files` are the TOML files they were read from, shipped table first."""

    prices: Mapping[str, Price]
    files: tuple[str, ...] = ()

    @classmethod
    def load(cls, user_file: Path | None = None) -> PriceTable:
        """The shipped table, with `user_file`'s entries (and `[tiers]` multipliers) merged over it key by key.

        Raises ConfigError naming the file and key of any problem.
        """
        shipped = resources.files("batchgen") / "data" / "prices.toml"
        origin = "batchgen/data/prices.toml"
        raw = _read_toml(shipped.read_bytes(), origin)
        entries = _entries(raw, origin)
        tiers = _tiers(raw, origin)
        files = [origin]
        if user_file is not None:
            user_origin = str(user_file)
            try:
                data = user_file.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read price file: {exc.strerror}", file=user_origin) from exc
            user = _read_toml(data, user_origin)
            for model, (fields, _) in _entries(user, user_origin).items():
                base = entries.get(model, ({}, user_origin))[0]
                entries[model] = ({**base, **fields}, user_origin)
            tiers.update(_tiers(user, user_origin))
            files.append(user_origin)
        multipliers = MappingProxyType(tiers)
        prices = {model: _price(model, fields, where, multipliers) for model, (fields, where) in entries.items()}
        return cls(MappingProxyType(prices), tuple(files))

    def find(self, model: str) -> Price | None:
        """The price of `model` (see `price_for`), or None when the table has none."""
        try:
            return self.price_for(model)
        except ConfigError:
            return None

    def price_for(self, model: str) -> Price:
        """The price of `model`: exact name first (without any "models/" prefix), then the longest table name
        it extends with version parts only (gemini-2.5-flash-preview-09-2025 -> gemini-2.5-flash).

        Raises ConfigError when no entry applies: an unknown model is never priced at 0.
        """
        name = model.removeprefix("models/")
        if name in self.prices:
            return self.prices[name]
        extended = [known for known in self.prices if _is_version_of(name, known)]
        if extended:
            return self.prices[max(extended, key=len)]
        known = ", ".join(sorted(self.prices))
        raise ConfigError(
            f"no price for model {model!r}; add [models.{_quote(name)}] with input, output and cached_input "
            f"(USD per 1M tokens) to a price file and pass it with --prices (known: {known})",
            file=" + ".join(self.files) or None,
        )


def _is_version_of(name: str, known: str) -> bool:
    if not name.startswith(known + "-"):
        return False
    return all(_VERSION_PART.fullmatch(part) for part in name[len(known) + 1 :].split("-"))


def _quote(name: str) -> str:
    return f'"{name}"'


def _read_toml(data: bytes, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"not a valid TOML file: {exc}", file=file) from exc


def _entries(raw: Mapping[str, Any], file: str) -> dict[str, tuple[dict[str, Any], str]]:
    """Each model's raw fields, checked for unknown keys and types, with the file they came from."""
    for key in raw:
        if key not in ("models", "tiers"):
            raise ConfigError("unknown key (expected [models.NAME] tables and [tiers])", file=file, key=key)
    models = raw.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError("must be a table of [models.NAME] entries", file=file, key="models")
    entries: dict[str, tuple[dict[str, Any], str]] = {}
    for model, fields in models.items():
        where = f"models.{_quote(model)}"
        if not isinstance(fields, dict):
            raise ConfigError("must be a table", file=file, key=where)
        for key, value in fields.items():
            _check_field(value, file=file, key=key, where=where)
        entries[model] = (dict(fields), file)
    return entries


def _tiers(raw: Mapping[str, Any], file: str) -> dict[str, float]:
    """The `[tiers]` multipliers of a price file (batch, flex, priority: each relative to standard)."""
    tiers = raw.get("tiers", {})
    if not isinstance(tiers, dict):
        raise ConfigError("must be a table of service tier multipliers", file=file, key="tiers")
    for tier, value in tiers.items():
        if tier not in TIERS[1:]:
            raise ConfigError(f"unknown service tier (expected {', '.join(TIERS[1:])})", file=file, key=f"tiers.{tier}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value < math.inf):
            raise ConfigError(
                "must be a non-negative number (times the standard price)", file=file, key=f"tiers.{tier}"
            )
    return {tier: float(value) for tier, value in tiers.items()}


def _check_field(value: Any, *, file: str, key: str, where: str) -> None:
    path = f"{where}.{key}"
    if key not in _ENTRY_KEYS:
        expected = ", ".join(sorted(_ENTRY_KEYS))
        raise ConfigError(f"unknown key (expected one of {expected})", file=file, key=path)
    if key == "as_of":
        if not isinstance(value, date):
            raise ConfigError("must be a date (YYYY-MM-DD, unquoted)", file=file, key=path)
    elif key == "source":
        if not isinstance(value, str):
            raise ConfigError("must be a string", file=file, key=path)
    elif key == "long_context_threshold":
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError("must be a positive whole number of prompt tokens", file=file, key=path)
    elif isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value < math.inf):
        raise ConfigError("must be a non-negative number (USD per 1M tokens)", file=file, key=path)


def _price(model: str, fields: Mapping[str, Any], file: str, tiers: Mapping[str, float]) -> Price:
    where = f"models.{_quote(model)}"
    for key in _RATE_KEYS:
        if key not in fields:
            raise ConfigError("missing (USD per 1M tokens)", file=file, key=f"{where}.{key}")
    long_given = [key for key in (*_LONG_KEYS, "long_context_threshold") if key in fields]
    if long_given and len(long_given) != len(_LONG_KEYS) + 1:
        missing = sorted({*_LONG_KEYS, "long_context_threshold"} - set(long_given))
        raise ConfigError(f"a long-context tier also needs {', '.join(missing)}", file=file, key=where)
    return Price(
        model=model,
        standard=Rates(*(float(fields[key]) for key in _RATE_KEYS)),
        long=Rates(*(float(fields[key]) for key in _LONG_KEYS)) if long_given else None,
        long_context_threshold=fields.get("long_context_threshold"),
        as_of=fields.get("as_of"),
        source=fields.get("source", ""),
        tiers=tiers,
    )
