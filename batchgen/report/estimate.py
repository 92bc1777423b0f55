"""`batchgen estimate`: what a job will cost and how long it will take, projected from what was measured.

`batchgen.api.estimate_job` measures; this module projects and renders. Rows are the input minus the ids the
results folder already holds (what a run would send). Input tokens are the local estimate over every such row
(the rule the limiter paces by), or that estimate scaled by the ratio `:countTokens` finds on a random sample.
Output tokens cannot be read off the input: a sample run of N rows, for real but into a temporary folder,
measures them, with responses, attempts and latency per row. The cost follows the price table (every response
bills its prompt again, so input is scaled by responses per row); the duration is set by the tightest of
concurrency / latency, requests per minute and input tokens per minute. The cost is given at the tier the job
runs at (the Batch API in batch mode, else the request's serviceTier) and compared across standard, Flex and
batch; a batch job's duration is the Batch API's turnaround, which no limit here sets.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from batchgen.console.format import counts_text, duration, usd
from batchgen.job import Job
from batchgen.records import Status, Usage
from batchgen.report.pricing import STANDARD, Cost, Price
from batchgen.report.text import price_summary


@dataclass(frozen=True, slots=True)
class InputTokens:
    """Input tokens of the rows to send, and how they were found."""

    total: int
    method: str


@dataclass(frozen=True, slots=True)
class Sample:
    """What a sample run of `rows` rows measured (its results folder read like `batchgen report` reads one)."""

    rows: int
    counts: dict[Status, int]
    prompt_tokens: int
    output_tokens: int
    responses: int
    attempts: int
    latency_s: float | None
    cost_usd: float | None

    def per_row(self, value: float) -> float:
        return value / self.rows if self.rows else 0.0


@dataclass(frozen=True, slots=True)
class Estimate:
    """The projection for one job; figures the inputs cannot give are None."""

    job: Job
    rows: int
    done: int
    input: InputTokens
    sample: Sample | None
    price: Price | None

    @property
    def to_send(self) -> int:
        return max(0, self.rows - self.done)

    @property
    def responses_per_row(self) -> float:
        """Billed responses per row: 1, or what the sample saw (re-asks bill the prompt again)."""
        return self.sample.per_row(self.sample.responses) if self.sample and self.sample.responses else 1.0

    @property
    def requests_per_row(self) -> float:
        """HTTP attempts per row: 1, or what the sample saw (retries and re-asks)."""
        return self.sample.per_row(self.sample.attempts) if self.sample and self.sample.attempts else 1.0

    @property
    def output_tokens(self) -> int | None:
        """Output (candidates + thinking) tokens of every row to send, projected from the sample."""
        if self.sample is None or not self.sample.rows:
            return None
        return round(self.sample.per_row(self.sample.output_tokens) * self.to_send)

    @property
    def tier(self) -> str:
        """The service tier the job's rows are billed at: batch in batch mode, else the request's tier."""
        return "batch" if self.job.mode == "batch" else self.job.service_tier

    @property
    def cost(self) -> Cost | None:
        """Projected cost at the job's tier; without a sample it covers the input only."""
        return self.cost_at(self.tier)

    def cost_at(self, tier: str) -> Cost | None:
        """Projected cost if every row were served at `tier`."""
        if self.price is None:
            return None
        billed = Usage(prompt=round(self.input.total * self.responses_per_row), candidates=self.output_tokens or 0)
        return self.price.cost(billed, round(self.to_send * self.responses_per_row), tier)

    def pace(self) -> tuple[float, str] | None:
        """Rows per second and what sets it (the tightest limit); None when nothing bounds it."""
        limits = self.job.limits
        bounds: list[tuple[float, str]] = []
        if self.sample and self.sample.latency_s:
            bounds.append((limits.concurrency / self.sample.latency_s, f"concurrency ({limits.concurrency})"))
        if limits.requests_per_minute:
            rpm = limits.requests_per_minute
            bounds.append((rpm / 60 / self.requests_per_row, f"requests_per_minute ({rpm:g})"))
        if limits.tokens_per_minute and self.input.total and self.to_send:
            per_request = self.input.total / self.to_send
            tpm = limits.tokens_per_minute
            bounds.append((tpm / 60 / per_request / self.requests_per_row, f"tokens_per_minute ({tpm:g})"))
        return min(bounds) if bounds else None

    @property
    def duration_s(self) -> float | None:
        pace = self.pace()
        return None if pace is None or pace[0] <= 0 else self.to_send / pace[0]

    @property
    def days(self) -> int:
        """Days of requests_per_day quota the requests need (1 when there is no daily limit)."""
        per_day = self.job.limits.requests_per_day
        return max(1, math.ceil(self.to_send * self.requests_per_row / per_day)) if per_day else 1


def render(result: Estimate) -> str:
    """The estimate as a small table for a terminal or a log."""
    table = Table(title=f"Estimate for {result.job.file} ({result.job.model})", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in _lines(result):
        table.add_row(name, value)
    console = Console(file=io.StringIO(), width=160, color_system=None, force_terminal=False)
    console.print(table)
    output = console.file
    assert isinstance(output, io.StringIO)
    return "".join(line.rstrip() + "\n" for line in output.getvalue().splitlines())


def _lines(result: Estimate) -> list[tuple[str, str]]:
    lines = [
        ("rows", f"{result.rows:,} in the input, {result.done:,} already in the results, {result.to_send:,} to send"),
        ("input tokens", f"{result.input.total:,}: {result.input.method}"),
    ]
    lines.extend(_sample_lines(result))
    lines.extend(_cost_lines(result))
    lines.append(("duration", _duration_text(result)))
    return lines


def _sample_lines(result: Estimate) -> list[tuple[str, str]]:
    sample = result.sample
    if result.to_send == 0:
        return [("output tokens", "none: nothing is left to send (so no sample was run)")]
    if sample is None:
        return [("output tokens", "unknown: pass --sample N to run N rows for real and measure them")]
    per_row: Callable[[float], float] = sample.per_row
    latency = "" if sample.latency_s is None else f", {sample.latency_s:.2f} s latency"
    spent = "" if sample.cost_usd is None else f", cost {usd(sample.cost_usd)}"
    output = result.output_tokens
    return [
        (
            "sample run",
            f"{sample.rows:,} rows ({counts_text(sample.counts)}): per row {per_row(sample.prompt_tokens):,.0f} "
            f"prompt and {per_row(sample.output_tokens):,.0f} output tokens, {per_row(sample.responses):.2f} "
            f"responses, {per_row(sample.attempts):.2f} attempts{latency}{spent}",
        ),
        ("output tokens", "unknown: the sample got no rows" if output is None else f"{output:,} (from the sample)"),
    ]


def _cost_lines(result: Estimate) -> list[tuple[str, str]]:
    projected = result.cost
    if projected is None or result.price is None:
        return [("cost", f"unknown: no price for {result.job.model} (pass --prices FILE)")]
    split = (
        f"input {usd(projected.input)}, output {usd(projected.output)}"
        if result.output_tokens is not None
        else "input only, output unknown"
    )
    tier = "" if result.tier == STANDARD else f" x {result.price.multiplier(result.tier):g} ({result.tier})"
    lines = [("cost", f"{usd(projected.total)} ({split}) at {price_summary(result.price)} per 1M tokens{tier}")]
    lines.append(("by tier", _tiers_text(result)))
    cap = result.job.limits.max_cost_usd
    if cap is not None and result.to_send:
        per_row = projected.total / result.to_send
        if projected.total > cap and per_row > 0:
            lines.append(("cost cap", f"{usd(cap)}: a run would stop after about {cap / per_row:,.0f} rows"))
        else:
            lines.append(("cost cap", f"{usd(cap)}: not reached"))
    return lines


def _tiers_text(result: Estimate) -> str:
    """The job's cost online (standard), on Flex and through the Batch API, side by side."""
    choices = (("online", STANDARD, "answers in seconds"), ("flex", "flex", "minutes each"), ("batch", "batch", ""))
    texts = []
    for label, tier, speed in choices:
        cost = result.cost_at(tier)
        assert cost is not None  # a price exists, or no cost line is shown
        texts.append(f"{label} {usd(cost.total)}" + (f" ({speed})" if speed else ""))
    return ", ".join(texts) + "; batch answers within 24 h (the Batch API's target), usually much sooner"


def _duration_text(result: Estimate) -> str:
    if result.job.mode == "batch":
        deadline = result.job.batch.deadline
        after = f"; rows not answered {deadline} after a job starts go {result.job.batch.fallback}" if deadline else ""
        return f"the Batch API's turnaround: up to 24 h, usually much sooner{after}"
    pace = result.pace()
    seconds = result.duration_s
    if pace is None or seconds is None:
        return "unknown: no rate limit is set and no sample measured the latency"
    text = f"about {duration(seconds)} at {pace[0]:,.2f} rows/s, limited by {pace[1]}"
    if result.days > 1:
        text += f"; requests_per_day allows it over {result.days} days"
    return text
