"""What a run has spent, row by row, and the cost cap that stops it before it would spend more.

Every finished row is priced as it is written, by the same arithmetic as `batchgen report` (`pricing.cost`
on the row's token sums), so the running cost on screen and in the logs is the figure the report will show for
the run. With a cap (`[limits] max_cost_usd`, `--max-cost`), the run stops taking rows as soon as starting one
more row would pass the cap: what is spent, plus the rows in flight and that one more at the average cost of a
row so far. The rows in flight still finish and are written, so the run ends close to the cap, not above it by
a run's worth of concurrency, and a rerun sends only the rows never sent. The cap is per run: each
`batchgen run` may spend up to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from batchgen.errors import BatchgenError, BudgetExhausted, ConfigError
from batchgen.records import Result, RunStats, Sink
from batchgen.report.pricing import Cost, Price, PriceTable, cost


class Stoppable(Protocol):
    """The part of a runner the cap needs: rows in flight, and a way to stop (`runner.Runner`)."""

    @property
    def stats(self) -> RunStats: ...

    @property
    def stopping(self) -> bool: ...

    def stop(self, reason: BatchgenError | None = None) -> None: ...


@dataclass(slots=True)
class Budget:
    """The priced total of a run's finished rows and, optionally, the most the run may spend (USD)."""

    price: Price
    cap_usd: float | None = None
    spent: Cost = field(default_factory=Cost)
    rows: int = 0

    def charge(self, result: Result) -> Cost:
        """Add one finished row (every response it received is billed, failed rows included)."""
        usage = result.usage
        row_cost = cost(
            self.price,
            usage.prompt,
            usage.cached,
            usage.candidates,
            usage.thoughts,
            usage.tool_use,
            result.responses,
        )
        self.spent += row_cost
        self.rows += 1
        return row_cost

    @property
    def average_usd(self) -> float:
        """The mean cost of a finished row so far (0 before any)."""
        return self.spent.total / self.rows if self.rows else 0.0

    def projected_usd(self, in_flight: int) -> float:
        """What the run will have cost once `in_flight` more rows finish at the average cost."""
        return self.spent.total + in_flight * self.average_usd

    def exceeded(self, in_flight: int) -> BudgetExhausted | None:
        """The error to stop with when starting one more row beside `in_flight` would pass the cap."""
        if self.cap_usd is None or self.projected_usd(in_flight + 1) <= self.cap_usd:
            return None
        return BudgetExhausted(
            cap_usd=self.cap_usd, spent_usd=self.spent.total, projected_usd=self.projected_usd(in_flight)
        )


def budget_for(model: str, prices: PriceTable, cap_usd: float | None, *, job_file: str | None = None) -> Budget | None:
    """The budget of a run of `model`; None when the model has no price and there is no cap to enforce.

    Raises ConfigError when a cap is set and the model has no price: an unpriced cap would be a cap of $0 or
    no cap at all, and neither is what the job asked for.
    """
    try:
        price = prices.price_for(model)
    except ConfigError as exc:
        if cap_usd is None:
            return None
        raise ConfigError(
            f"a cost cap needs a price for the model: {exc}", file=job_file, key="limits.max_cost_usd"
        ) from exc
    return Budget(price, cap_usd)


class BudgetedSink:
    """A `records.Sink` that writes through to `sink`, then charges the row and stops `run` at the cap."""

    def __init__(self, sink: Sink, budget: Budget, run: Stoppable) -> None:
        self._sink = sink
        self.budget = budget
        self._run = run

    def __repr__(self) -> str:
        cap = "none" if self.budget.cap_usd is None else f"${self.budget.cap_usd:,.4f}"
        return f"BudgetedSink(spent=${self.budget.spent.total:,.6f}, rows={self.budget.rows}, cap={cap})"

    async def write(self, result: Result) -> None:
        # Written first: a paid-for row is kept whatever the budget says.
        await self._sink.write(result)
        self.budget.charge(result)
        if not self._run.stopping:
            error = self.budget.exceeded(self._run.stats.in_flight)
            if error is not None:
                self._run.stop(error)
