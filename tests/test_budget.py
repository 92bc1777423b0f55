"""The cost cap: rows priced as they are written, the run stopped before it would pass the cap (exit 4), and
a rerun that resumes; a cap on a model without a price is refused at start."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as ds
import pytest
from conftest import job_copy, response
from servers import server_process, server_stats
from test_runner import ListSink, make_runner, prompts

from batchgen.cli import main
from batchgen.errors import BudgetExhausted, ConfigError
from batchgen.records import Result, Status, Usage
from batchgen.report.breakdown import build_report, load_results
from batchgen.report.budget import Budget, budget_for
from batchgen.report.pricing import PriceTable

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "jobs" / "demo.toml"
PRICES = PriceTable.load()
FLASH = PRICES.price_for("gemini-2.5-flash")  # $0.30 input, $0.03 cached input, $2.50 output per 1M tokens
KEY = "budget-test-key-7a21"


def row(prompt: int = 1000, cached: int = 200, candidates: int = 300, thoughts: int = 100) -> Result:
    usage = Usage(prompt=prompt, cached=cached, candidates=candidates, thoughts=thoughts, tool_use=0)
    return Result(id="r", status=Status.OK, usage=usage, attempts=1, responses=1)


def test_a_row_costs_what_the_report_charges() -> None:
    """800 fresh input at $0.30, 200 cached at $0.03, 300 + 100 output at $2.50 per 1M tokens."""
    budget = Budget(FLASH)
    budget.charge(row())
    assert budget.spent.total == pytest.approx((800 * 0.30 + 200 * 0.03 + 400 * 2.50) / 1e6)
    assert budget.rows == 1


@pytest.mark.parametrize(("traffic", "share"), [("batch", 0.5), ("flex", 0.5), ("standard", 1.0), (None, 1.0)])
def test_a_row_is_charged_at_the_tier_it_was_sent_at(traffic: str | None, share: float) -> None:
    """Batch and flex rows cost half, as the report prices them; rows without a tier are standard."""
    budget = Budget(FLASH)
    result = row()
    result.traffic = traffic
    budget.charge(result)
    assert budget.spent.total == pytest.approx(share * (800 * 0.30 + 200 * 0.03 + 400 * 2.50) / 1e6)


def test_the_cap_counts_rows_in_flight_and_the_next_row_at_the_average_cost() -> None:
    budget = Budget(FLASH, cap_usd=0.01)
    for _ in range(4):
        budget.charge(row())  # 4 x $0.001246
    assert budget.projected_usd(3) == pytest.approx(7 * 0.001246)
    assert budget.refusal(3) is None  # 8 rows' worth: $0.009968 <= $0.01
    error = budget.refusal(4)  # 9 rows' worth would pass it
    assert isinstance(error, BudgetExhausted)
    assert error.cap_usd == 0.01 and error.spent_usd == pytest.approx(4 * 0.001246)
    assert error.projected_usd == pytest.approx(8 * 0.001246)
    assert "the cap is per run: rerun to resume" in str(error)


def test_without_a_cap_nothing_is_ever_exceeded() -> None:
    budget = Budget(FLASH)
    budget.charge(row(prompt=10**9))
    assert budget.refusal(1000) is None


@pytest.mark.anyio
async def test_the_runner_takes_no_row_once_the_budget_refuses_and_writes_every_row_it_paid_for() -> None:
    """The cap is an admission decision: rows are taken while one more fits, each finished row is written and
    charged, and the run stops with BudgetExhausted (without cancelling rows already sent)."""
    sent: list[bytes] = []

    async def generate(body: bytes) -> Mapping[str, Any]:
        sent.append(body)
        return response('{"label": "x"}', usage={"promptTokenCount": 1000, "candidatesTokenCount": 400})

    budget = Budget(FLASH, cap_usd=0.0035)  # about three rows of $0.0013
    runner = make_runner(generate, concurrency=1, admission=budget)
    sink = ListSink()
    await runner.run(prompts(*(f"row {i}" for i in range(10))), sink)
    assert isinstance(runner.stopped_by, BudgetExhausted)
    assert len(sink.results) == len(sent) == budget.rows
    assert 1 <= budget.rows < 10 and budget.spent.total <= 0.0035 + 0.0014


def test_a_cap_on_a_model_without_a_price_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"limits\.max_cost_usd") as caught:
        budget_for("gemini-9-ultra", PRICES, 5.0, job_file="jobs/x.toml")
    assert "jobs/x.toml" in str(caught.value) and "no price for model 'gemini-9-ultra'" in str(caught.value)
    assert budget_for("gemini-9-ultra", PRICES, None) is None
    assert budget_for("gemini-2.5-flash", PRICES, None) == Budget(FLASH)


def cost_of(folder: Path) -> float:
    return build_report(load_results([folder]), PRICES).totals.cost.total


def test_a_run_stops_at_the_cap_with_exit_4_and_a_rerun_with_a_higher_cap_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cap is set to about 60 rows' worth of the demo job: the run stops with exit 4 near the cap and not
    above it by more than a row, every row it paid for is written, and the server was asked for exactly the
    rows written. The message says what is true: a plain rerun resumes (and may spend up to the cap again),
    and a rerun with a higher cap sends only the rest (240 requests in all) and exits 0."""
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with server_process("--api-key", KEY) as url:
        probe = tmp_path / "probe"
        # The probe and the final rerun pace at ten times the demo's rate: only the capped run's pace matters.
        fast = ["--quiet", "--rpm", "60000"]
        assert main(["run", str(DEMO), "--base-url", url, "--output", str(probe), "--limit", "20", *fast]) == 0
        per_row = cost_of(probe) / 20
        requests_before = server_stats(url)["requests"]
        out = tmp_path / "capped"
        cap = 60 * per_row
        base = ["run", str(DEMO), "--base-url", url, "--output", str(out), "--quiet"]
        assert main([*base, "--max-cost", f"{cap:.12f}"]) == 4
        written = ds.dataset(out, format="parquet").count_rows()
        assert 1 <= written < 240
        assert server_stats(url)["requests"] - requests_before == written
        assert cost_of(out) <= cap + 2 * per_row
        err = capsys.readouterr().err
        assert "cost cap" in err and "the cap is per run: rerun to resume" in err
        manifest = orjson.loads((out / "_manifest.json").read_bytes())
        assert manifest["runs"][-1]["stopped_by"].startswith("BudgetExhausted")
        assert manifest["runs"][-1]["exit_code"] == 4

        assert main([*base, "--max-cost", f"{cap:.12f}"]) == 4  # the same command resumes, to the cap again
        assert written < ds.dataset(out, format="parquet").count_rows() < 240

        assert main([*base, "--max-cost", "100", *fast]) == 0
        assert server_stats(url)["requests"] - requests_before == 240
    table = ds.dataset(out, format="parquet").to_table(columns=["id"])
    assert sorted(table.column("id").to_pylist()) == [f"r{i:04d}" for i in range(240)]


def test_the_cap_from_the_job_file_works_like_the_flag(tmp_path: Path) -> None:
    job = job_copy(tmp_path, DEMO, max_cost_usd=1e-7)
    out = tmp_path / "o"
    assert main(["run", str(job), "--local-server", "--output", str(out), "--quiet"]) == 4
    assert 1 <= ds.dataset(out, format="parquet").count_rows() < 240


def test_a_cap_for_a_model_without_a_price_exits_2_before_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    code = main(
        ["run", str(DEMO), "--local-server", "--output", str(out), "--model", "gemini-9-ultra", "--max-cost", "5"]
    )
    assert code == 2
    assert "no price for model 'gemini-9-ultra'" in capsys.readouterr().err
    assert not out.exists()


def test_check_reports_the_cap_and_refuses_one_without_a_price(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["check", str(DEMO), "--max-cost", "3", "--local-server", "--output", str(tmp_path / "o")]
    assert main(base) == 0
    assert "cost cap $3.000000 per run, priced as gemini-2.5-flash: ok" in capsys.readouterr().out
    assert main([*base, "--model", "gemini-9-ultra"]) == 2
    assert "limits.max_cost_usd" in capsys.readouterr().err
