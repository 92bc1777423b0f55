"""The report as one self-contained HTML page: inline CSS and inline SVG charts, nothing fetched, no script.

The page opens offline from a file, mails as an attachment and prints: tokens and cost by day stacked by
model, the status breakdown, latency and attempts histograms, then the same tables as the text formats.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from batchgen.console.format import usd
from batchgen.errors import OutputError
from batchgen.report.breakdown import Line, Report
from batchgen.report.svg import Series, bars, horizontal_bars, nice_step, stacked_bars
from batchgen.report.text import COLUMNS, display, line_fields, notes, price_summary, sections

# Colour-blind-friendly categorical palette (Tableau 10), cycled when there are more models.
MODEL_COLOURS = (
    "#4e79a7", "#f28e2b", "#76b7b2", "#edc948", "#b07aa1",
    "#ff9da7", "#9c755f", "#bab0ac", "#59a14f", "#e15759",
)  # fmt: skip
STATUS_COLOURS = {
    "ok": "#3a9d5d",
    "schema_mismatch": "#d46a9f",
    "invalid_json": "#e07b39",
    "truncated": "#e0a526",
    "blocked": "#8e6bbf",
    "failed": "#d64545",
}
OTHER_STATUS_COLOUR = "#9a9a9a"
LATENCY_COLOUR = "#2a9d8f"
ATTEMPTS_COLOUR = "#7a5195"
HISTOGRAM_BINS = 20
MAX_ATTEMPTS_BAR = 20  # attempts above this share one "more" bar

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 24px auto; max-width: 1180px; padding: 0 16px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #666; margin: 0 0 16px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { flex: 1 1 120px; border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; }
.card b { display: block; font-size: 22px; font-variant-numeric: tabular-nums; }
.card span { color: #666; font-size: 12px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 8px 20px; }
figure { margin: 0; } figcaption { font-weight: 600; margin: 16px 0 4px; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; font-size: 12px; margin: 2px 0 0 76px; }
.legend i { display: inline-block; width: 11px; height: 11px; margin-right: 5px; vertical-align: -1px; }
svg.chart { max-width: 100%; height: auto; }
svg text { font-size: 11px; fill: #444; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 12.5px; }
th, td { padding: 3px 7px; border-bottom: 1px solid #e6e6e6; white-space: nowrap; }
th { text-align: left; background: #f5f5f5; } td.n, th.n { text-align: right; }
tr.total td { font-weight: 600; border-top: 2px solid #ccc; }
ul.notes { color: #555; font-size: 13px; }
"""


def render_html(report: Report, table: pa.Table) -> str:
    """The page for `report`; `table` (from `load_results`) supplies the per-row latency and attempts."""
    body = [
        "<h1>batchgen report</h1>",
        f'<p class="sub">{_subtitle(report)}</p>',
        _cards(report),
        "<h2>By model</h2>",
        _line_table("model", (*report.by_model, report.totals)),
        '<div class="charts">',
        *_charts(report, table),
        "</div>",
        *(f"<h2>By {heading}</h2>\n{_line_table(heading, lines)}" for name, heading, lines in sections(report)[2:]),
        *_runs(report),
        "<h2>Prices applied</h2>",
        _prices(report),
        '<ul class="notes">' + "".join(f"<li>{escape(note)}</li>" for note in notes(report)) + "</ul>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>batchgen report: {escape(usd(report.totals.cost.total))}</title>\n<style>{_CSS}</style>\n"
        "</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def write_html(path: Path, report: Report, table: pa.Table) -> None:
    """Write `render_html` to `path`; raises OutputError when the file cannot be written."""
    try:
        path.write_text(render_html(report, table), encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write the HTML report: {exc.strerror}", path=str(path)) from exc


def latency_histogram(latency: pa.ChunkedArray) -> tuple[list[str], list[int]]:
    """(bin labels, row counts) over latency_ms: round-width bins up to the 99th percentile, then one bin for
    the slow tail, so a few stragglers do not squash every other bar into one.
    """
    values = pc.drop_null(latency)
    if len(values) == 0:
        return [], []
    highest = pc.max(values).as_py()
    top = pc.quantile(values, q=0.99, interpolation="higher")[0].as_py() or highest or 1.0
    step = nice_step(top, HISTOGRAM_BINS)
    count = int(top // step) + 1  # the bin holding `top` is a regular one: [top, top+step) is not a tail
    index = pc.max_element_wise(pc.floor(pc.divide(values, step)).cast(pa.int64()), 0)
    counts = _counts(pc.min_element_wise(index, count))
    labels = [_duration(k * step, step) for k in range(count)]
    if counts.get(count):
        labels.append("≥ " + _duration(count * step, step))
    return labels, [counts.get(k, 0) for k in range(len(labels))]


def attempts_histogram(attempts: pa.ChunkedArray) -> tuple[list[str], list[int]]:
    """(labels, row counts) per number of HTTP attempts, from the fewest seen; many more share one bar."""
    values = pc.drop_null(attempts).cast(pa.int64())
    if len(values) == 0:
        return [], []
    lowest, highest = pc.min(values).as_py(), pc.max(values).as_py()
    counts = _counts(pc.min_element_wise(values, MAX_ATTEMPTS_BAR + 1))
    last = min(highest, MAX_ATTEMPTS_BAR + 1)
    labels = [str(k) if k <= MAX_ATTEMPTS_BAR else f"> {MAX_ATTEMPTS_BAR}" for k in range(lowest, last + 1)]
    return labels, [counts.get(k, 0) for k in range(lowest, last + 1)]


def _counts(values: pa.Array | pa.ChunkedArray) -> dict[int, int]:
    return {entry["values"]: entry["counts"] for entry in pc.value_counts(values).to_pylist()}


def _duration(ms: float, step: float) -> str:
    """A bin edge in ms, or in seconds when the bins are a second wide or more."""
    return f"{ms / 1000:g} s" if step >= 1000 else f"{ms:g} ms"


def _tokens(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:g}"


def _dollars(value: float) -> str:
    """Short dollars for axes: no trailing zeros, but never rounded to $0 when not zero."""
    return "$0" if value == 0 else f"${value:,.6f}".rstrip("0").rstrip(".")


def _headline_dollars(value: float) -> str:
    """Cents once a figure reaches $100 (the tables keep the micro-dollars), else `usd`."""
    return f"${value:,.2f}" if value >= 100 else usd(value)


def _subtitle(report: Report) -> str:
    days = [line.key[0] for line in report.by_day]
    span = f"{days[0]} to {days[-1]} (UTC)" if days else "no rows"
    runs = f"{len(report.by_run)} run{'s' * (len(report.by_run) != 1)}"
    models = ", ".join(line.key[0] for line in report.by_model) or "no model"
    return escape(f"{report.totals.rows:,} rows, {runs}, {span}; {models}")


def _cards(report: Report) -> str:
    totals = report.totals
    ok = next((line.rows for line in report.by_status if line.key == ("ok",)), 0)
    output = totals.candidates + totals.thoughts
    cards = [
        (_headline_dollars(totals.cost.total), "total cost (USD)"),
        (f"{totals.rows:,}", "rows"),
        (f"{ok / totals.rows:.1%}" if totals.rows else "n/a", "rows ok"),
        (_tokens(totals.total), "tokens"),
        (f"{totals.thoughts / output:.0%}" if output else "n/a", "of output is thinking"),
        (f"{totals.cached / totals.prompt:.0%}" if totals.prompt else "n/a", "of prompt from cache"),
    ]
    items = "".join(f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for v, k in cards)
    return f'<div class="cards">{items}</div>'


def _charts(report: Report, table: pa.Table) -> list[str]:
    days = [line.key[0] for line in report.by_day]
    models = [line.key[0] for line in report.by_model]
    cells = {line.key: line for line in report.by_day_model}

    def layers(value: str) -> list[Series]:
        return [
            Series(model, tuple(_figure(cells.get((day, model)), value) for day in days), _colour(i))
            for i, model in enumerate(models)
        ]

    legend = '<div class="legend">' + "".join(
        f'<span><i style="background:{_colour(i)}"></i>{escape(model)}</span>' for i, model in enumerate(models)
    )
    legend += "</div>"
    statuses = [line.key[0] for line in report.by_status]
    counts = [float(line.rows) for line in report.by_status]
    total_rows = max(report.totals.rows, 1)
    latency = latency_histogram(table["latency_ms"])
    attempts = attempts_histogram(table["attempts"])
    return [
        _figure_html("Tokens by day (UTC) and model", stacked_bars("tokens", days, layers("total"), _tokens), legend),
        _figure_html("Cost by day (UTC) and model", stacked_bars("cost", days, layers("cost"), _dollars), legend),
        _figure_html(
            "Rows by status",
            horizontal_bars(
                "status",
                statuses,
                counts,
                [STATUS_COLOURS.get(status, OTHER_STATUS_COLOUR) for status in statuses],
                lambda v: f"{v:,.0f} ({v / total_rows:.1%})",
            ),
        ),
        _figure_html(
            "Rows by latency (first send to final response)",
            bars("latency", latency[0], latency[1], LATENCY_COLOUR, lambda v: f"{v:,.0f}"),
        ),
        _figure_html(
            "Rows by HTTP attempts",
            bars("attempts", attempts[0], attempts[1], ATTEMPTS_COLOUR, lambda v: f"{v:,.0f}"),
        ),
    ]


def _figure(line: Line | None, value: str) -> float:
    if line is None:
        return 0.0
    return line.cost.total if value == "cost" else float(line.total)


def _colour(index: int) -> str:
    return MODEL_COLOURS[index % len(MODEL_COLOURS)]


def _figure_html(caption: str, svg: str, after: str = "") -> str:
    return f"<figure><figcaption>{escape(caption)}</figcaption>\n{svg}\n{after}</figure>"


def _line_table(heading: str, lines: Sequence[Line]) -> str:
    head = f"<th>{escape(heading)}</th>" + "".join(f'<th class="n">{escape(h)}</th>' for _, h, _ in COLUMNS)
    rows = []
    for line in lines:
        total = line.key == ("total",)
        cells = "".join(f'<td class="n">{escape(display(k, v))}</td>' for k, v in line_fields(line).items())
        label = "total" if total else " / ".join(line.key)
        rows.append(f"<tr{' class=total' * total}><td>{escape(label)}</td>{cells}</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>'


def _runs(report: Report) -> list[str]:
    if not report.runs:
        return []
    head = "".join(f"<th>{h}</th>" for h in ("run", "folder", "model", "started", "ended", "exit code"))
    rows = []
    for entry in report.runs:
        run = entry.run
        cells = (run.run_id, entry.folder, run.model, run.started_at, run.ended_at, run.exit_code)
        rows.append("<tr>" + "".join(f"<td>{escape('' if c is None else str(c))}</td>" for c in cells) + "</tr>")
    return [
        "<h2>Runs (from _manifest.json)</h2>",
        f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>',
    ]


def _prices(report: Report) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("model", "priced as", "USD per 1M tokens", "as of", "source"))
    rows = []
    for model, price in report.prices.items():
        as_of = price.as_of.isoformat() if price.as_of else ""
        cells = (model, price.model, price_summary(price), as_of, price.source)
        rows.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>'
