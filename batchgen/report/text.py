"""A `Report` as text: a terminal table (rich), CSV, JSON or Markdown.

Every format carries the same figures: per breakdown line the rows, token sums and the cost split into fresh
input (with tool-use prompt), cache reads and output (with thinking). Machine formats (CSV, JSON) keep full
precision; human formats round dollars for reading.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from typing import Any, Literal

import orjson
from rich.console import Console
from rich.table import Table

from batchgen.console.format import usd
from batchgen.report.breakdown import FolderRun, Line, Report
from batchgen.report.pricing import Price, Rates, known_tier

Format = Literal["table", "csv", "json", "markdown"]
FORMATS: tuple[Format, ...] = ("table", "csv", "json", "markdown")

# (machine name, heading, value): the figures of a line, in display order; `_usd` names are dollars.
COLUMNS: tuple[tuple[str, str, Callable[[Line], int | float]], ...] = (
    ("rows", "rows", lambda line: line.rows),
    ("prompt_tokens", "prompt", lambda line: line.prompt),
    ("cached_tokens", "cached", lambda line: line.cached),
    ("fresh_input_tokens", "fresh input", lambda line: line.fresh_input),
    ("candidates_tokens", "candidates", lambda line: line.candidates),
    ("thoughts_tokens", "thoughts", lambda line: line.thoughts),
    ("tool_use_tokens", "tool use", lambda line: line.tool_use),
    ("total_tokens", "total tokens", lambda line: line.total),
    ("cost_input_usd", "input $", lambda line: line.cost.input),
    ("cost_cached_usd", "cached $", lambda line: line.cost.cached),
    ("cost_output_usd", "output $", lambda line: line.cost.output),
    ("cost_usd", "cost $", lambda line: line.cost.total),
    ("cost_at_standard_usd", "at standard $", lambda line: line.at_standard.total),
)


def sections(report: Report) -> tuple[tuple[str, str, tuple[Line, ...]], ...]:
    """(machine name, key heading, lines) of each one-dimensional breakdown, totals first."""
    return (
        ("total", "", (report.totals,)),
        ("model", "model", report.by_model),
        ("status", "status", report.by_status),
        ("run_id", "run", report.by_run),
        ("day", "day (UTC)", report.by_day),
        ("tier", "tier", report.by_tier),
    )


def line_fields(line: Line) -> dict[str, int | float]:
    """A line's figures under their machine names; dollars to 1e-12, which drops float noise but no cent."""
    return {name: round(value(line), 12) for name, _, value in COLUMNS}


def render(report: Report, fmt: Format, *, width: int | None = None) -> str:
    """The report as text in format `fmt` (one of FORMATS); a table fits in `width` columns (a terminal's),
    or is as wide as its figures need when None (a file)."""
    renderers: Mapping[str, Callable[[Report], str]] = {
        "table": lambda report: _table(report, width),
        "csv": _csv,
        "json": _json,
        "markdown": _markdown,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown report format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return renderers[fmt](report)


def display(name: str, value: int | float) -> str:
    """A figure for reading: dollars via `usd`, counts with thousands separators."""
    return usd(value) if name.endswith("_usd") else f"{value:,}"


def price_fields(price: Price) -> dict[str, Any]:
    """A price as JSON-ready fields, in the price file's terms."""
    fields: dict[str, Any] = {
        "input": price.standard.input,
        "output": price.standard.output,
        "cached_input": price.standard.cached_input,
        "tiers": dict(price.tiers),
    }
    if price.long is not None:
        fields |= {
            "long_context_threshold": price.long_context_threshold,
            "input_long": price.long.input,
            "output_long": price.long.output,
            "cached_input_long": price.long.cached_input,
        }
    return fields | {"as_of": price.as_of.isoformat() if price.as_of else None, "source": price.source}


def price_summary(price: Price) -> str:
    """One line of USD per 1M tokens: input / cached input / output, and the long tier when there is one."""
    text = _rates_text(price.standard)
    if price.long is not None:
        text += f"; above {price.long_context_threshold:,}: {_rates_text(price.long)}"
    return text


def _rates_text(rates: Rates) -> str:
    return " / ".join(_rate(value) for value in (rates.input, rates.cached_input, rates.output))


def _rate(value: float) -> str:
    cents = f"{value:.2f}"
    return f"${cents}" if float(cents) == value else f"${value:g}"


def notes(report: Report) -> list[str]:
    """What a reader must know to trust the figures."""
    lines = [
        "Fresh input = prompt - cached (promptTokenCount includes cached tokens); tool-use prompt tokens are "
        "billed as input, thinking tokens as output.",
        "Prices are USD per 1M tokens (input / cached input / output); the long tier applies per response.",
    ]
    totals = report.totals
    if totals.saving:
        tiers = ", ".join(
            f"{line.key[0]} rows at {_multiplier(report, line.key[0])}" for line in report.by_tier if line.saving
        )
        word = "saved" if totals.saving > 0 else "cost"
        lines.append(
            f"Service tiers: {tiers} of the standard price: {usd(totals.cost.total)} here, "
            f"{usd(totals.at_standard.total)} at standard, {word} {usd(abs(totals.saving))} "
            f"({abs(totals.saving) / totals.at_standard.total:.0%})."
        )
    unknown = {tier: rows for tier, rows in report.tiers.items() if known_tier(tier) is None}
    if unknown:
        served = ", ".join(f"{rows:,} reported {tier!r}" for tier, rows in unknown.items())
        lines.append(
            f"Rows whose responses named a service tier the price table does not know ({served}, in "
            "usageMetadata.serviceTier) are priced at the tier they asked for."
        )
    if not report.totals.rows:
        lines.append(
            "No rows yet: a run writes its first part after [output] flush_seconds (default 2 s) or flush_rows rows."
        )
    return lines


def _multiplier(report: Report, tier: str) -> str:
    factors = {price.multiplier(tier) for price in report.prices.values()}
    return f"{factors.pop():g}x" if len(factors) == 1 else "the table's multiplier"


# Without a terminal, tables are as wide as their figures need: a file is not wrapped.
_UNBOUNDED = 1000
# The figures a narrow table splits into: tokens, then dollars (with the rows on both).
_TOKEN_FIGURES = tuple(name for name, _, _ in COLUMNS if not name.endswith("_usd"))
_COST_FIGURES = ("rows", *(name for name, _, _ in COLUMNS if name.endswith("_usd")))


def _table(report: Report, width: int | None) -> str:
    console = Console(file=io.StringIO(), width=width or _UNBOUNDED, color_system=None, force_terminal=False)
    for name, heading, lines in sections(report):
        title = "Total" if name == "total" else f"By {heading}"
        whole = _figures_table(title, heading, lines, tuple(name for name, _, _ in COLUMNS))
        if console.measure(whole, options=console.options.update_width(_UNBOUNDED)).maximum <= console.width:
            console.print(whole)
            continue
        # Too wide for the terminal: tokens and dollars as two tables rather than every cell wrapped.
        console.print(_figures_table(f"{title}: tokens", heading, lines, _TOKEN_FIGURES))
        console.print(_figures_table(f"{title}: cost", heading, lines, _COST_FIGURES))
    if report.runs:
        console.print(_runs_table(report.runs))
    console.print(_prices_table(report.prices))
    for note in notes(report):
        console.print(note, soft_wrap=width is None)
    output = console.file
    assert isinstance(output, io.StringIO)
    # rich pads titles to the table's width; trailing blanks are noise in a file or a diff.
    return "".join(line.rstrip() + "\n" for line in output.getvalue().splitlines())


def _figures_table(title: str, heading: str, lines: tuple[Line, ...], figures: tuple[str, ...]) -> Table:
    table = Table(title=title, title_justify="left")
    if heading:
        table.add_column(heading)
    for name, column_heading, _ in COLUMNS:
        if name in figures:
            table.add_column(column_heading, justify="right")
    for line in lines:
        values = [display(key, value) for key, value in line_fields(line).items() if key in figures]
        table.add_row(*([" / ".join(line.key)] if heading else []), *values)
    return table


def _runs_table(runs: tuple[FolderRun, ...]) -> Table:
    table = Table(title="Runs (from _manifest.json)", title_justify="left")
    for heading in ("run", "folder", "model", "started", "ended", "exit code"):
        table.add_column(heading)
    for entry in runs:
        run = entry.run
        cells = (run.run_id, entry.folder, run.model, run.started_at, run.ended_at, run.exit_code)
        table.add_row(*("" if cell is None else str(cell) for cell in cells))
    return table


def _prices_table(prices: Mapping[str, Price]) -> Table:
    table = Table(title="Prices applied", title_justify="left")
    for heading in ("model", "priced as", "USD per 1M tokens", "as of", "source"):
        table.add_column(heading)
    for model, price in prices.items():
        as_of = price.as_of.isoformat() if price.as_of else ""
        table.add_row(model, price.model, price_summary(price), as_of, price.source)
    return table


def _csv(report: Report) -> str:
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(["breakdown", "key", *(name for name, _, _ in COLUMNS)])
    for name, _, lines in sections(report):
        for line in lines:
            writer.writerow([name, " / ".join(line.key), *map(_plain, line_fields(line).values())])
    return output.getvalue()


def _plain(value: int | float) -> str:
    """A number in plain decimal notation (no 4.5e-05), which every spreadsheet reads the same way."""
    return str(value) if isinstance(value, int) else f"{value:.12f}".rstrip("0").rstrip(".")


def _json(report: Report) -> str:
    def keyed(dimensions: tuple[str, ...], lines: tuple[Line, ...]) -> list[dict[str, Any]]:
        return [dict(zip(dimensions, line.key, strict=True)) | line_fields(line) for line in lines]

    document = {
        "totals": line_fields(report.totals),
        "by_model": keyed(("model",), report.by_model),
        "by_status": keyed(("status",), report.by_status),
        "by_run": keyed(("run_id",), report.by_run),
        "by_day": keyed(("day",), report.by_day),
        "by_day_model": keyed(("day", "model"), report.by_day_model),
        "by_tier": keyed(("tier",), report.by_tier),
        "runs": [_run_fields(run) for run in report.runs],
        "service_tiers": dict(report.tiers),
        "prices": {model: {"priced_as": price.model} | price_fields(price) for model, price in report.prices.items()},
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


def _run_fields(entry: FolderRun) -> dict[str, Any]:
    run = entry.run
    return {
        "run_id": run.run_id,
        "folder": entry.folder,
        "model": run.model,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "exit_code": run.exit_code,
    }


def _markdown(report: Report) -> str:
    blocks = ["# batchgen report"]
    for name, heading, lines in sections(report):
        headings = [heading] if heading else []
        rows = [
            [" / ".join(line.key)] * bool(heading) + [display(key, v) for key, v in line_fields(line).items()]
            for line in lines
        ]
        title = "Total" if name == "total" else f"By {heading}"
        blocks.append(f"## {title}\n\n" + _md_table([*headings, *(h for _, h, _ in COLUMNS)], rows, len(headings)))
    if report.runs:
        rows = [
            ["" if cell is None else str(cell) for cell in (r.run_id, r.model, r.started_at, r.ended_at, r.exit_code)]
            for r in (entry.run for entry in report.runs)
        ]
        blocks.append("## Runs\n\n" + _md_table(["run", "model", "started", "ended", "exit code"], rows, 5))
    rows = [[model, price.model, price_summary(price)] for model, price in report.prices.items()]
    blocks.append("## Prices applied\n\n" + _md_table(["model", "priced as", "USD per 1M tokens"], rows, 3))
    blocks.append("\n".join(f"- {note}" for note in notes(report)))
    return "\n\n".join(blocks) + "\n"


def _md_table(headings: list[str], rows: list[list[str]], text_columns: int) -> str:
    """A pipe table; the first `text_columns` columns align left, the figures right."""

    def cells(values: list[str]) -> str:
        return "| " + " | ".join(value.replace("|", "\\|") for value in values) + " |"

    rule = ["---"] * text_columns + ["---:"] * (len(headings) - text_columns)
    return "\n".join([cells(headings), "| " + " | ".join(rule) + " |", *(cells(row) for row in rows)])
