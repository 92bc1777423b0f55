"""Token and cost accounting over results folders: read the parts, price every row, add up by dimension.

Each row is priced with its own model's price and its own long-context tier (see `pricing.Price.is_long`);
the rows are then summed in small groups (model, tier, status, run, day), since a cost at a fixed tier is
linear in the tokens. Every row counts: a row re-run by a later run was billed twice and appears under both
runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from batchgen.errors import ConfigError, InputError
from batchgen.records import Status
from batchgen.report.pricing import Cost, Price, PriceTable, charge

# The contract columns the report reads, with their contract types; other columns (kept input columns, typed
# outputs) are never read, so folders of different jobs can be reported together.
RESULT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("status", pa.string()),
        ("prompt_token_count", pa.int64()),
        ("candidates_token_count", pa.int64()),
        ("thoughts_token_count", pa.int64()),
        ("cached_content_token_count", pa.int64()),
        ("tool_use_prompt_token_count", pa.int64()),
        ("total_token_count", pa.int64()),
        ("model", pa.string()),
        ("attempts", pa.int32()),
        ("responses", pa.int32()),
        ("latency_ms", pa.float64()),
        ("run_id", pa.string()),
        ("finished_at", pa.timestamp("ms", tz="UTC")),
    ]
)

# Token columns, in the order `pricing.charge` takes them after the total.
_TOKENS = {
    "prompt": "prompt_token_count",
    "cached": "cached_content_token_count",
    "candidates": "candidates_token_count",
    "thoughts": "thoughts_token_count",
    "tool_use": "tool_use_prompt_token_count",
    "total": "total_token_count",
}
_GROUP = ("model", "long", "status", "run_id", "day")
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
        )


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as `_manifest.json` records it; fields the manifest lacks are None."""

    run_id: str
    folder: str
    started_at: str | None = None
    ended_at: str | None = None
    model: str | None = None
    exit_code: int | None = None


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
    runs: tuple[RunInfo, ...] = ()
    factor: float = 1.0


def load_results(paths: Sequence[Path]) -> pa.Table:
    """The report's columns (RESULT_SCHEMA) of every part file in the given results folders, concatenated.

    Files whose names start with `_` or `.` are not data. Raises InputError naming a folder that is missing,
    holds no part files, or whose parts cannot be read; ConfigError when `paths` is empty.
    """
    if not paths:
        raise ConfigError("no results folder given")
    return pa.concat_tables(_load_folder(Path(path)) for path in paths)


def _load_folder(folder: Path) -> pa.Table:
    # Imported here, not at the top: pyarrow.dataset pulls in pandas when it is installed, which would add
    # about 0.4 s to the start-up of every `batchgen run` (the CLI imports this module) for nothing.
    import pyarrow.dataset as ds

    if not folder.is_dir():
        raise InputError("no such results folder", file=str(folder))
    parts = sorted(path for path in folder.glob("*.parquet") if not path.name.startswith(("_", ".")) and path.is_file())
    if not parts:
        raise InputError("no part-*.parquet files here: not a batchgen results folder", file=str(folder))
    try:
        dataset = ds.dataset(parts, format="parquet")
        missing = [name for name in RESULT_SCHEMA.names if name not in dataset.schema.names]
        if missing:
            raise InputError(f"not a batchgen results folder: no column {', '.join(missing)}", file=str(folder))
        return dataset.to_table(columns=RESULT_SCHEMA.names).cast(RESULT_SCHEMA)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read the part files: {exc}", file=str(folder)) from exc


def load_runs(paths: Sequence[Path]) -> tuple[RunInfo, ...]:
    """The runs recorded in each folder's `_manifest.json` (a folder without one contributes none).

    Raises InputError naming a manifest that is not JSON of the contract's shape.
    """
    runs: list[RunInfo] = []
    for folder in map(Path, paths):
        manifest = folder / "_manifest.json"
        if manifest.is_file():
            runs.extend(_read_manifest(manifest, str(folder)))
    return tuple(runs)


def _read_manifest(manifest: Path, folder: str) -> list[RunInfo]:
    try:
        data = orjson.loads(manifest.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InputError(f"cannot read the manifest: {exc}", file=str(manifest)) from exc
    runs = data.get("runs", []) if isinstance(data, dict) else None
    if not isinstance(runs, list) or not all(isinstance(run, dict) and "run_id" in run for run in runs):
        raise InputError("not a batchgen manifest: `runs` must be a list of objects with a run_id", file=str(manifest))
    return [_run_info(run, folder) for run in runs]


def _run_info(run: Mapping[str, Any], folder: str) -> RunInfo:
    def text(key: str) -> str | None:
        value = run.get(key)
        return None if value is None else str(value)

    exit_code = run.get("exit_code")
    return RunInfo(
        run_id=str(run["run_id"]),
        folder=folder,
        started_at=text("started_at"),
        ended_at=text("ended_at"),
        model=text("model"),
        exit_code=exit_code if isinstance(exit_code, int) else None,
    )


def build_report(table: pa.Table, prices: PriceTable, *, runs: Sequence[RunInfo] = (), factor: float = 1.0) -> Report:
    """Price every row of `table` (from `load_results`) and add it up by model, status, run and day.

    `factor` scales every cost (0.5 for results of the Batch API). Raises ConfigError when a model in the
    results has no price: the whole report fails rather than show a cost of 0.
    """
    table = _normalise(table)
    used = {model: prices.price_for(model) for model in table["model"].unique().to_pylist()}
    groups = _grouped(table.append_column("long", _long_tier(table, used)))
    lines = [(key, _priced(key, sums, used, factor)) for key, sums in groups]
    return Report(
        totals=_sum_by(lines, ())[0] if lines else Line(("total",)),
        by_model=_sum_by(lines, ("model",)),
        by_status=tuple(sorted(_sum_by(lines, ("status",)), key=_status_order)),
        by_run=_sum_by(lines, ("run_id",)),
        by_day=_sum_by(lines, ("day",)),
        by_day_model=_sum_by(lines, ("day", "model")),
        prices={model: used[model] for model in sorted(used)},
        runs=tuple(runs),
        factor=factor,
    )


def _normalise(table: pa.Table) -> pa.Table:
    """Missing counts become 0 tokens, missing labels a visible placeholder, and each row gets its UTC day."""
    columns: dict[str, pa.ChunkedArray] = {}
    for name in ("model", "status", "run_id"):
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
    """(group key, sums) for each distinct (model, tier, status, run, day)."""
    aggregated = table.group_by(list(_GROUP)).aggregate(
        [(column, "sum") for column in _TOKENS.values()] + [([], "count_all")]
    )
    for row in aggregated.to_pylist():
        key = {name: row[name] for name in _GROUP}
        sums = {name: row[f"{column}_sum"] for name, column in _TOKENS.items()}
        yield key, {**sums, "rows": row["count_all"]}


def _priced(key: Mapping[str, Any], sums: Mapping[str, int], used: Mapping[str, Price], factor: float) -> Line:
    rates = used[key["model"]].rates(key["long"])
    tokens = [sums[name] for name in ("prompt", "cached", "candidates", "thoughts", "tool_use")]
    return Line(
        key=(),
        rows=sums["rows"],
        prompt=sums["prompt"],
        cached=sums["cached"],
        candidates=sums["candidates"],
        thoughts=sums["thoughts"],
        tool_use=sums["tool_use"],
        total=sums["total"],
        cost=charge(rates, *tokens, factor=factor),
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


def _status_order(line: Line) -> tuple[int, str]:
    status = line.key[0]
    return (_STATUS_ORDER.index(status) if status in _STATUS_ORDER else len(_STATUS_ORDER), status)
