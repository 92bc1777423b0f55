"""`batchgen estimate`: what a job will cost and how long it will take, before paying for it.

Rows come from a pass over the input, minus the ids the results folder already holds (what a run would send).
Input tokens are the local estimate over every such row (the rule the limiter paces by), or that estimate
scaled by the ratio `:countTokens` finds on a random sample of them. Output tokens cannot be read off the
input: a sample run of N rows, for real but into a temporary folder (never the job's output), measures them,
together with responses, attempts and latency per row. The cost follows the price table (every response bills
its prompt again, so input is scaled by responses per row); the duration is set by the tightest of
concurrency / latency, requests per minute and input tokens per minute.
"""

from __future__ import annotations

import io
import math
import random
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from batchgen.api import RunOptions, execute, prepare_source
from batchgen.console.logs import counts_text
from batchgen.console.progress import duration
from batchgen.errors import ApiError, ConfigError
from batchgen.gemini.request import RequestTemplate
from batchgen.job import Job
from batchgen.online.client import Endpoint, GeminiClient
from batchgen.records import Prompt, Status
from batchgen.report.breakdown import build_report, load_results
from batchgen.report.pricing import Cost, Price, PriceTable, cost
from batchgen.report.text import price_summary, usd
from batchgen.results import resume
from batchgen.secret import ApiKey

# `:countTokens` calls in flight at once: they have their own quota, and a sample is small.
COUNT_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class EstimateOptions:
    """What the estimate may spend to be more exact: sample rows run for real, rows sent to `:countTokens`."""

    sample_rows: int = 0
    count_tokens_rows: int = 0
    prices: Path | None = None
    seed: int = 0

    @property
    def needs_api(self) -> bool:
        return self.sample_rows > 0 or self.count_tokens_rows > 0


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
    def cost(self) -> Cost | None:
        """Projected cost; without a sample it covers the input only."""
        if self.price is None:
            return None
        billed_input = round(self.input.total * self.responses_per_row)
        responses = round(self.to_send * self.responses_per_row)
        return cost(self.price, billed_input, 0, self.output_tokens or 0, 0, 0, responses)

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


async def estimate(job: Job, key: ApiKey | None, options: EstimateOptions) -> Estimate:
    """Estimate `job`; `key` is needed (and the API called) only for a sample run or `:countTokens`."""
    if options.needs_api and key is None:
        raise ConfigError("a sample run or --count-tokens needs an API key (or --local-server)")
    prices = PriceTable.load(options.prices)
    try:
        price: Price | None = prices.price_for(job.model)
    except ConfigError:
        price = None
    source, duplicates, rows = await prepare_source(job, RunOptions())
    done = await anyio.to_thread.run_sync(lambda: resume.done_ids(job.output.path, retry_failed=True))
    template = RequestTemplate(job.request)
    local, picked = await _local_pass(
        source.prompts(skip=done.final, duplicates=duplicates), template, options.count_tokens_rows, options.seed
    )
    tokens = InputTokens(local, "local estimate (4 characters per token, as the limiter paces)")
    if picked and key is not None:
        tokens = await _counted(job, key, template, picked, local)
    sample = await _sample_run(job, key, options) if options.sample_rows > 0 and key is not None else None
    return Estimate(job=job, rows=rows, done=len(done.final), input=tokens, sample=sample, price=price)


async def _local_pass(
    prompts: AsyncIterator[Prompt], template: RequestTemplate, keep: int, seed: int
) -> tuple[int, list[Prompt]]:
    """The local token estimate summed over every sendable prompt, and a uniform sample of `keep` of them."""
    rng = random.Random(seed)
    total = 0
    seen = 0
    picked: list[Prompt] = []
    async for prompt in prompts:
        if prompt.problem is not None:
            continue
        total += template.estimate_tokens(prompt.contents)
        seen += 1
        # Reservoir sampling: each prompt ends in the sample with probability keep / seen, memory stays `keep`.
        if len(picked) < keep:
            picked.append(prompt)
        elif keep and (slot := rng.randrange(seen)) < keep:
            picked[slot] = prompt
    return total, picked


async def _counted(job: Job, key: ApiKey, template: RequestTemplate, picked: list[Prompt], local: int) -> InputTokens:
    endpoint = Endpoint(base_url=job.base_url, model=job.model, auth=job.auth, timeout_s=job.limits.timeout_s)
    counted = [0] * len(picked)
    gate = anyio.CapacityLimiter(COUNT_CONCURRENCY)
    async with GeminiClient(endpoint, key, connections=COUNT_CONCURRENCY) as client:

        async def count(index: int, prompt: Prompt) -> None:
            async with gate:
                counted[index] = await client.count_tokens(template.render(prompt.contents))

        async with anyio.create_task_group() as group:
            for index, prompt in enumerate(picked):
                group.start_soon(count, index, prompt)
    estimated = sum(template.estimate_tokens(prompt.contents) for prompt in picked)
    ratio = sum(counted) / estimated if estimated else 1.0
    return InputTokens(
        round(local * ratio),
        f"local estimate x {ratio:.3f}, the ratio :countTokens found on {len(picked)} sampled rows",
    )


async def _sample_run(job: Job, key: ApiKey | None, options: EstimateOptions) -> Sample:
    assert key is not None
    with tempfile.TemporaryDirectory(prefix="batchgen-sample-") as folder:
        sample_job = job.with_overrides(output={"path": Path(folder)})
        outcome = await execute(sample_job, key, RunOptions(limit=options.sample_rows, prices=options.prices))
        if isinstance(outcome.stopped_by, ApiError):  # a bad key or model: no estimate is worth showing
            raise outcome.stopped_by
        if not outcome.stats.done:
            return Sample(0, {}, 0, 0, 0, 0, None, None)
        table = await anyio.to_thread.run_sync(load_results, [Path(folder)])
    try:
        priced: float | None = build_report(table, PriceTable.load(options.prices)).totals.cost.total
    except ConfigError:
        priced = None
    stats = outcome.stats
    usage = stats.usage
    latency = pc.mean(table["latency_ms"]).as_py()
    return Sample(
        rows=stats.done,
        counts=dict(stats.counts),
        prompt_tokens=usage.prompt or 0,
        output_tokens=(usage.candidates or 0) + (usage.thoughts or 0),
        responses=stats.responses,
        attempts=stats.attempts,
        latency_s=None if latency is None else latency / 1000,
        cost_usd=priced,
    )


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
    lines = [("cost", f"{usd(projected.total)} ({split}) at {price_summary(result.price)} per 1M tokens")]
    cap = result.job.limits.max_cost_usd
    if cap is not None and result.to_send:
        per_row = projected.total / result.to_send
        if projected.total > cap and per_row > 0:
            lines.append(("cost cap", f"{usd(cap)}: a run would stop after about {cap / per_row:,.0f} rows"))
        else:
            lines.append(("cost cap", f"{usd(cap)}: not reached"))
    return lines


def _duration_text(result: Estimate) -> str:
    pace = result.pace()
    seconds = result.duration_s
    if pace is None or seconds is None:
        return "unknown: no rate limit is set and no sample measured the latency"
    text = f"about {duration(seconds)} at {pace[0]:,.2f} rows/s, limited by {pace[1]}"
    if result.days > 1:
        text += f"; requests_per_day allows it over {result.days} days"
    return text
