"""What a run has spent, row by row, and the cost cap that stops it before it would spend more.

Every finished row is priced as it is written, by the same arithmetic as `batchgen report` (`Price.cost` on
the row's token sums), so the running cost on screen and in the logs is the figure the report will show for
the run. With a cap (`[limits] max_cost_usd`, `--max-cost`), the run takes no more rows as soon as starting
one more would pass the cap: what is spent, plus the rows in flight and that one more at the average cost of a
row so far. The rows in flight still finish and are written, so the run ends close to the cap, not above it by
a run's worth of concurrency, and a rerun sends only the rows never sent. The cap is per run: each
`batchgen run` may spend up to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batchgen.errors import BudgetExhausted, ConfigError
from batchgen.records import Result
from batchgen.report.pricing import Cost, Price, PriceTable, billed_tier


@dataclass(slots=True)
class Budget:
    """The priced total of a run's finished rows and, optionally, the most the run may spend (USD).

    Implements `records.Admission`: the runner asks it before taking each row.
    """

    price: Price
    cap_usd: float | None = None
    spent: Cost = field(default_factory=Cost)
    rows: int = 0

    def __repr__(self) -> str:
        cap = "none" if self.cap_usd is None else f"${self.cap_usd:,.4f}"
        return f"Budget(spent=${self.spent.total:,.6f}, rows={self.rows}, cap={cap})"

    def charge(self, result: Result) -> None:
        """Add one finished row (every response it received is billed, failed rows included), at its tier."""
        self.spent += self.price.cost(result.usage, result.responses, billed_tier(result.traffic))
        self.rows += 1

    @property
    def average_usd(self) -> float:
        """The mean cost of a finished row so far (0 before any)."""
        return self.spent.total / self.rows if self.rows else 0.0

    def projected_usd(self, in_flight: int) -> float:
        """What the run will have cost once `in_flight` more rows finish at the average cost."""
        return self.spent.total + in_flight * self.average_usd

    def refusal(self, in_flight: int) -> BudgetExhausted | None:
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
