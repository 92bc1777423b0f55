"""Token and cost accounting over results folders: read the parts, price every row, add up by dimension.

Each row is priced with its own model's price, its own long-context tier (see `Price.is_long`) and the service
tier it was served at (`pricing.billed_tier`: batch, flex, priority or standard); the rows are then summed in
small groups (model, tiers, status, run, day), since a cost at fixed tiers is linear in the tokens. Each line
also carries what its rows would have cost at standard, so the report can say what batch and flex saved. Every
row counts: a row re-run by a later run was billed twice and appears under both runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batchgen.errors import InputError, OutputError
from batchgen.records import Status, Usage
from batchgen.report.pricing import TIERS, Cost, Price, PriceTable, billed_tier
from batchgen.results.columns import USAGE_COLUMNS
from batchgen.results.folder import RunRecord, read_manifest
from batchgen.results.read import read_results

# The contract columns the report reads; others (kept input columns, typed outputs) are never read, so folders
# of different jobs can be reported together.
REPORT_COLUMNS = (
    "id",
    "status",
    *(column for column, _ in USAGE_COLUMNS),
    "model",
    "attempts",
    "responses",
    "latency_ms",
    "run_id",
    "finished_at",
    # How each row was sent and the tier it was served at: what it is priced by (null in older folders).
    "traffic",
    "service_tier",
)
_TOKENS = {field: column for column, field in USAGE_COLUMNS}
_GROUP = ("model", "long", "status", "run_id", "day", "traffic", "service_tier")
UNKNOWN_DAY = "unknown"


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a breakdown: row count, token sums and cost of the rows sharing `key`."""

    key: tuple[str, ...]
    rows: int = 0
    prompt: int = 0
    cached: int = 0
    candidates: int = 0
    thoughts: int = 0
    tool_use: int = 0
    total: int = 0
    cost: Cost = field(default_factory=Cost)
    at_standard: Cost = field(default_factory=Cost)
    """What the same tokens cost at the standard tier (equal to `cost` for rows served at standard)."""

    @property
    def fresh_input(self) -> int:
        """Prompt tokens not served from the cache (promptTokenCount includes the cached ones)."""
        return self.prompt - self.cached

    def __add__(self, other: Line) -> Line:
        return Line(
            self.key,
            self.rows + other.rows,
            self.prompt + other.prompt,
            self.cached + other.cached,
            self.candidates + other.candidates,
            self.thoughts + other.thoughts,
            self.tool_use + other.tool_use,
            self.total + other.total,
            self.cost + other.cost,
            self.at_standard + other.at_standard,
        )

    @property
    def saving(self) -> float:
        """USD saved against the standard tier (negative when priority cost more)."""
        return self.at_standard.total - self.cost.total


@dataclass(frozen=True, slots=True)
class FolderRun:
    """A run recorded in a results folder's manifest."""

    folder: str
    run: RunRecord


@dataclass(frozen=True, slots=True)
class Report:
    """Totals and breakdowns of a set of results; breakdown keys are 1-tuples except `by_day_model`'s
    (day, model). `prices` maps each model name found in the results to the price applied to it.
    """

    totals: Line
    by_model: tuple[Line, ...]
    by_status: tuple[Line, ...]
    by_run: tuple[Line, ...]
    by_day: tuple[Line, ...]
    by_day_model: tuple[Line, ...]
    prices: Mapping[str, Price]
    runs: tuple[FolderRun, ...] = ()
    by_tier: tuple[Line, ...] = ()
    tiers: Mapping[str, int] = field(default_factory=dict)
    """Rows by the service tier their response reported (`service_tier`; rows that reported none left out)."""


def load_results(paths: Sequence[Path]) -> pa.Table:
    """The report's columns (`REPORT_COLUMNS`) of every part in the given results folders, concatenated."""
    return read_results(paths, REPORT_COLUMNS)


def load_runs(paths: Sequence[Path]) -> tuple[FolderRun, ...]:
    """The runs recorded in each folder's manifest (a folder without one contributes none)."""
    runs: list[FolderRun] = []
    for folder in map(Path, paths):
        try:
            manifest = read_manifest(folder)
        except OutputError as exc:
            raise InputError(exc.detail, file=exc.path) from exc
        if manifest is not None:
            runs.extend(FolderRun(str(folder), run) for run in manifest.runs)
    return tuple(runs)


def build_report(table: pa.Table, prices: PriceTable, *, runs: Sequence[FolderRun] = ()) -> Report:
    """Price every row of `table` (from `load_results`) and add it up by model, status, run, day and tier.

    Raises ConfigError when a model in the results has no price: the whole report fails rather than show a
    cost of 0.
    """
    tiers = _tiers(table)
    table = _normalise(table)
    used = {model: prices.price_for(model) for model in table["model"].unique().to_pylist()}
    groups = _grouped(table.append_column("long", _long_tier(table, used)))
    lines = [(key, _priced(key, sums, used)) for key, sums in groups]
    return Report(
        totals=_sum_by(lines, ())[0] if lines else Line(("total",)),
        by_model=_sum_by(lines, ("model",)),
        by_status=tuple(sorted(_sum_by(lines, ("status",)), key=_status_order)),
        by_run=_sum_by(lines, ("run_id",)),
        by_day=_sum_by(lines, ("day",)),
        by_day_model=_sum_by(lines, ("day", "model")),
        prices={model: used[model] for model in sorted(used)},
        runs=tuple(runs),
        by_tier=tuple(sorted(_sum_by(lines, ("tier",)), key=_tier_order)),
        tiers=tiers,
    )


def _tiers(table: pa.Table) -> dict[str, int]:
    if "service_tier" not in table.column_names:
        return {}
    counts = pc.value_counts(pc.drop_null(table["service_tier"])).to_pylist()
    return {entry["values"]: entry["counts"] for entry in sorted(counts, key=lambda entry: entry["values"])}


def _normalise(table: pa.Table) -> pa.Table:
    """Missing counts become 0 tokens, missing labels a visible placeholder, and each row gets its UTC day."""
    columns: dict[str, pa.ChunkedArray] = {}
    for name in ("model", "status", "run_id", "traffic", "service_tier"):
        columns[name] = pc.fill_null(table[name], "")
    for name in (*_TOKENS.values(), "responses"):
        columns[name] = pc.fill_null(table[name].cast(pa.int64()), 0)
    day = pc.cast(pc.cast(table["finished_at"], pa.date32()), pa.string())
    columns["day"] = pc.fill_null(day, UNKNOWN_DAY)
    return pa.table(columns)


def _long_tier(table: pa.Table, used: Mapping[str, Price]) -> pa.ChunkedArray:
    """Per row, whether it was billed at its model's long-context tier (`Price.is_long`, vectorised)."""
    models = pa.array(list(used), pa.string())
    thresholds = pa.array([price.long_context_threshold for price in used.values()], pa.int64())
    threshold = pc.take(thresholds, pc.index_in(table["model"], value_set=models))
    per_response = pc.multiply(threshold, pc.max_element_wise(table["responses"], 1))
    return pc.fill_null(pc.greater(table["prompt_token_count"], per_response), False)


def _grouped(table: pa.Table) -> Iterable[tuple[dict[str, Any], dict[str, int]]]:
    """(group key, sums) for each distinct (model, long-context tier, status, run, day, traffic, reported tier);
    the key also holds the service tier the group is billed at."""
    aggregated = table.group_by(list(_GROUP)).aggregate(
        [(column, "sum") for column in _TOKENS.values()] + [([], "count_all")]
    )
    for row in aggregated.to_pylist():
        key = {name: row[name] for name in _GROUP}
        key["tier"] = billed_tier(row["traffic"] or None, row["service_tier"] or None)
        sums = {name: row[f"{column}_sum"] for name, column in _TOKENS.items()}
        yield key, {**sums, "rows": row["count_all"]}


def _priced(key: Mapping[str, Any], sums: Mapping[str, int], used: Mapping[str, Price]) -> Line:
    usage = Usage.of_counts({name: sums[name] for name in _TOKENS})
    return Line(
        key=(),
        rows=sums["rows"],
        prompt=sums["prompt"],
        cached=sums["cached"],
        candidates=sums["candidates"],
        thoughts=sums["thoughts"],
        tool_use=sums["tool_use"],
        total=sums["total"],
        cost=used[key["model"]].rates(key["long"], key["tier"]).charge(usage),
        at_standard=used[key["model"]].rates(key["long"]).charge(usage),
    )


def _sum_by(lines: Iterable[tuple[Mapping[str, Any], Line]], dimensions: tuple[str, ...]) -> tuple[Line, ...]:
    """Lines summed per distinct value of `dimensions`, sorted by key; no dimensions gives one total line."""
    sums: dict[tuple[str, ...], Line] = {}
    for group, line in lines:
        key = tuple(str(group[name]) for name in dimensions) or ("total",)
        sums[key] = sums.get(key, Line(key)) + line
    return tuple(sums[key] for key in sorted(sums))


# Display order of statuses: usable rows first, then failures by growing severity (records.Status is listed
# most severe first); unknown values last.
_STATUS_ORDER = tuple(str(status) for status in reversed(Status))


def _tier_order(line: Line) -> tuple[int, str]:
    tier = line.key[0]
    return (TIERS.index(tier) if tier in TIERS else len(TIERS), tier)


def _status_order(line: Line) -> tuple[int, str]:
    status = line.key[0]
    return (_STATUS_ORDER.index(status) if status in _STATUS_ORDER else len(_STATUS_ORDER), status)
