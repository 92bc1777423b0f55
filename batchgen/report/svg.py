"""Bar charts as inline SVG text, drawn from plain numbers: nothing to fetch, no script, prints as it shows.

Text inherits the page's font through CSS (`svg text`), so the charts match the page they are inlined in.
Every bar carries a `<title>`, which browsers show as a tooltip with the exact figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

Formatter = Callable[[float], str]

WIDTH = 560
PLOT_HEIGHT = 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 76, 12, 20, 44
_LABEL_SPACE = 78  # horizontal pixels one category label needs to stay readable
_ROW = 30  # height of one horizontal bar's row
_AXIS = "#888888"
_GRID = "#e4e4e4"


@dataclass(frozen=True, slots=True)
class Series:
    """One stacked layer: a value per category, drawn in `colour`."""

    name: str
    values: tuple[float, ...]
    colour: str


def nice_step(span: float, parts: int = 5, *, whole: bool = False) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) that cuts `span` into about `parts` pieces;
    `whole` keeps it a whole number (for counts), at least 1.
    """
    if span <= 0:
        return 1.0
    raw = span / parts
    magnitude = 10.0 ** math.floor(math.log10(raw))
    multipliers = (1.0, 2.0, 5.0, 10.0) if whole else (1.0, 2.0, 2.5, 5.0, 10.0)
    step = next(m * magnitude for m in multipliers if m * magnitude >= raw * (1 - 1e-9))
    return max(step, 1.0) if whole else step


def stacked_bars(label: str, categories: Sequence[str], series: Sequence[Series], fmt: Formatter) -> str:
    """Vertical bars, one per category, each stacked from `series` in order (first at the bottom)."""
    totals = [sum(layer.values[i] for layer in series) for i in range(len(categories))]
    frame = _Frame(len(categories), max(totals, default=0.0), fmt)
    parts = frame.axes(categories)
    for i, category in enumerate(categories):
        base = 0.0
        for layer in series:
            value = layer.values[i]
            if value > 0:
                parts.append(frame.bar(i, base, value, layer.colour, f"{category}, {layer.name}: {fmt(value)}"))
                base += value
        parts.append(frame.top_label(i, totals[i]))
    return _svg(label, WIDTH, _TOP + PLOT_HEIGHT + _BOTTOM, parts)


def bars(label: str, categories: Sequence[str], values: Sequence[int], colour: str, fmt: Formatter) -> str:
    """Vertical bars of one colour counting something per category (a histogram when categories are bins)."""
    frame = _Frame(len(categories), max(values, default=0), fmt, whole=True)
    parts = frame.axes(categories)
    for i, (category, value) in enumerate(zip(categories, values, strict=True)):
        if value > 0:
            parts.append(frame.bar(i, 0.0, value, colour, f"{category}: {fmt(value)}"))
    return _svg(label, WIDTH, _TOP + PLOT_HEIGHT + _BOTTOM, parts)


def horizontal_bars(
    label: str, categories: Sequence[str], values: Sequence[float], colours: Sequence[str], fmt: Formatter
) -> str:
    """One labelled horizontal bar per category, with its figure written after the bar."""
    left, right = 130, 150
    scale = (WIDTH - left - right) / max(max(values, default=0.0), 1e-300)
    parts = []
    for i, (category, value, colour) in enumerate(zip(categories, values, colours, strict=True)):
        y = _TOP + i * _ROW
        length = value * scale
        parts.append(f'<text x="{left - 8}" y="{y + _ROW / 2 + 4:.1f}" text-anchor="end">{escape(category)}</text>')
        parts.append(_rect(left, y + 4, length, _ROW - 8, colour, f"{category}: {fmt(value)}"))
        parts.append(f'<text x="{left + length + 6:.1f}" y="{y + _ROW / 2 + 4:.1f}">{escape(fmt(value))}</text>')
    return _svg(label, WIDTH, _TOP * 2 + max(len(categories), 1) * _ROW, parts)


class _Frame:
    """The plot area of a vertical bar chart: category bands along x, a value scale with round ticks on y."""

    def __init__(self, count: int, top: float, fmt: Formatter, *, whole: bool = False) -> None:
        self.count = max(count, 1)
        self.step = nice_step(top, whole=whole)
        self.top = self.step * max(math.ceil(top / self.step - 1e-9), 1)
        self.band = (WIDTH - _LEFT - _RIGHT) / self.count
        self.fmt = fmt

    def y(self, value: float) -> float:
        return _TOP + PLOT_HEIGHT * (1 - value / self.top)

    def axes(self, categories: Sequence[str]) -> list[str]:
        parts = []
        ticks = round(self.top / self.step)
        for k in range(ticks + 1):
            value = k * self.step
            y = self.y(value)
            parts.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{WIDTH - _RIGHT}" y2="{y:.1f}" stroke="{_GRID}"/>')
            parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(self.fmt(value))}</text>')
        # Thin the labels out when the bands are too narrow for all of them.
        every = math.ceil(_LABEL_SPACE / self.band) if self.band < _LABEL_SPACE else 1
        baseline = _TOP + PLOT_HEIGHT
        for i, category in enumerate(categories):
            if i % every == 0:
                x = _LEFT + (i + 0.5) * self.band
                parts.append(f'<text x="{x:.1f}" y="{baseline + 18}" text-anchor="middle">{escape(category)}</text>')
        parts.append(f'<line x1="{_LEFT}" y1="{baseline}" x2="{WIDTH - _RIGHT}" y2="{baseline}" stroke="{_AXIS}"/>')
        return parts

    def bar(self, index: int, base: float, value: float, colour: str, tooltip: str) -> str:
        gap = min(self.band * 0.15, 12)
        x = _LEFT + index * self.band + gap
        y = self.y(base + value)
        return _rect(x, y, self.band - 2 * gap, self.y(base) - y, colour, tooltip)

    def top_label(self, index: int, value: float) -> str:
        """The bar's figure above it, when the band is wide enough to hold it."""
        if value <= 0 or self.band < _LABEL_SPACE:
            return ""
        x, y = _LEFT + (index + 0.5) * self.band, self.y(value) - 5
        return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle">{escape(self.fmt(value))}</text>'


def _rect(x: float, y: float, width: float, height: float, colour: str, tooltip: str) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width, 0):.1f}" height="{max(height, 0):.1f}" '
        f'fill="{colour}"><title>{escape(tooltip)}</title></rect>'
    )


def _svg(label: str, width: int, height: int, parts: Sequence[str]) -> str:
    body = "\n".join(part for part in parts if part)
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label)}" shape-rendering="crispEdges">\n{body}\n</svg>'
    )
