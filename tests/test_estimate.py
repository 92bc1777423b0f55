"""`batchgen estimate`: rows, input tokens (local or :countTokens-scaled), output tokens from a sample run into a
temporary folder, cost from the price table and duration from the tightest limit."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from conftest import job_copy

from batchgen.api import estimate_job, estimate_job_async, run_job_async
from batchgen.cli import main
from batchgen.console.format import usd
from batchgen.errors import ConfigError
from batchgen.fakeserver import FakeServer, ServerConfig
from batchgen.gemini.request import user_contents
from batchgen.job import Job, load_job
from batchgen.records import Status
from batchgen.report.estimate import Estimate, InputTokens, Sample, render
from batchgen.report.pricing import PriceTable

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "jobs" / "demo.toml"
FLASH = PriceTable.load().price_for("gemini-2.5-flash")
TEXTS = ["short", "a somewhat longer prompt text", "x" * 400]


def tiny_job(folder: Path, **limits: object) -> Job:
    """Three prompts, no request fields (so no request overhead in the estimate), results in `folder/out`."""
    (folder / "in.jsonl").write_bytes(
        b"".join(orjson.dumps({"id": f"t{i}", "p": t}) + b"\n" for i, t in enumerate(TEXTS))
    )
    lines = "\n".join(f"{key} = {value}" for key, value in limits.items())
    (folder / "tiny.toml").write_text(
        'model = "gemini-2.5-flash"\n[input]\npath = "in.jsonl"\nid_field = "id"\nprompt_field = "p"\n'
        f'[limits]\n{lines}\n[output]\npath = "out"\n'
    )
    return load_job(folder / "tiny.toml")


@pytest.mark.anyio
async def test_without_a_key_the_estimate_is_local_and_sends_nothing(tmp_path: Path) -> None:
    """Input tokens are the local rule (4 characters per token of the contents) summed over the rows."""
    result = await estimate_job_async(tiny_job(tmp_path))
    assert result.rows == 3 and result.done == 0 and result.to_send == 3
    assert result.input.total == sum(max(1, len(user_contents(t)) // 4) for t in TEXTS)
    assert result.sample is None and result.output_tokens is None
    assert result.cost is not None and result.cost.total == pytest.approx(result.input.total * 0.30 / 1e6)
    assert result.pace() is None and result.duration_s is None


@pytest.mark.anyio
async def test_a_sample_or_count_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GEMINI_API_KEY is not set"):
        await estimate_job_async(tiny_job(tmp_path), sample=2)


def test_rows_already_in_the_results_are_not_counted(tmp_path: Path) -> None:
    job = job_copy(tmp_path, DEMO)
    out = tmp_path / "out"
    assert main(["run", str(job), "--local-server", "--output", str(out), "--limit", "30", "--quiet"]) == 0
    result = estimate_job(job, output={"path": out})
    assert (result.rows, result.done, result.to_send) == (240, 30, 210)


@pytest.mark.anyio
async def test_counting_and_sampling_every_row_gives_the_exact_input_and_output(tmp_path: Path) -> None:
    """With every row sent to :countTokens, the scaled estimate is the exact count, which is what the server
    then bills as prompt tokens in the sample run of every row; output projects to the sample's own total. The
    sample writes into a temporary folder, never the job's output."""
    job = tiny_job(tmp_path)
    async with FakeServer(ServerConfig()) as server:
        local = job.with_overrides(base_url=server.url)
        result = await estimate_job_async(local, sample=3, count_tokens=10, api_key=server.api_key)
        billed = server.stats.billed
    sample = result.sample
    assert sample is not None and sample.rows == 3 and sample.counts == {Status.OK: 3}
    assert result.input.total == sample.prompt_tokens == billed["promptTokenCount"]
    assert "countTokens found on 3 sampled rows" in result.input.method
    assert result.output_tokens == sample.output_tokens
    assert sample.cost_usd == pytest.approx((sample.prompt_tokens * 0.30 + sample.output_tokens * 2.50) / 1e6)
    assert result.cost is not None and result.cost.total == pytest.approx(sample.cost_usd)
    assert not (tmp_path / "out").exists()


def estimate_of(job: Job, sample: Sample | None, input_tokens: int = 120_000, rows: int = 1200) -> Estimate:
    return Estimate(job=job, rows=rows, done=0, input=InputTokens(input_tokens, "test"), sample=sample, price=FLASH)


SAMPLE = Sample(
    rows=10,
    counts={Status.OK: 10},
    prompt_tokens=1100,
    output_tokens=500,
    responses=11,
    attempts=12,
    latency_s=2.0,
    cost_usd=None,
)


def test_cost_bills_the_prompt_once_per_response_and_projects_output(tmp_path: Path) -> None:
    """1.1 responses per row: input billed 1.1 times; output 50 per row over 1,200 rows."""
    result = estimate_of(tiny_job(tmp_path), SAMPLE)
    assert result.output_tokens == 60_000
    cost = result.cost
    assert cost is not None
    assert cost.input == pytest.approx(132_000 * 0.30 / 1e6)
    assert cost.output == pytest.approx(60_000 * 2.50 / 1e6)


@pytest.mark.parametrize(
    ("limits", "rows_per_s", "bottleneck"),
    [
        pytest.param({"concurrency": 8}, 4.0, "concurrency (8)", id="latency-bound: 8 in flight / 2 s"),
        pytest.param(
            {"concurrency": 64, "requests_per_minute": 120}, 120 / 60 / 1.2, "requests_per_minute (120)", id="rpm"
        ),
        pytest.param(
            {"concurrency": 64, "tokens_per_minute": 60_000},
            60_000 / 60 / 100 / 1.2,
            "tokens_per_minute (60000)",
            id="tpm",
        ),
    ],
)
def test_duration_follows_the_tightest_limit(
    tmp_path: Path, limits: dict[str, int], rows_per_s: float, bottleneck: str
) -> None:
    """Concurrency / latency, RPM / requests per row, TPM / (input tokens per request x requests per row)."""
    result = estimate_of(tiny_job(tmp_path, **limits), SAMPLE)
    pace = result.pace()
    assert pace is not None
    assert pace[0] == pytest.approx(rows_per_s) and pace[1] == bottleneck
    assert result.duration_s == pytest.approx(1200 / rows_per_s)


def test_a_daily_quota_spreads_the_job_over_days(tmp_path: Path) -> None:
    result = estimate_of(tiny_job(tmp_path, requests_per_day=500, requests_per_minute=60), None)
    assert result.days == 3  # 1,200 requests at 500 a day


def test_the_cli_prints_the_table_and_leaves_the_output_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["estimate", str(DEMO), "--local-server", "--sample", "5", "--output", str(out), "--max-cost", "0.001"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "240 in the input, 0 already in the results, 240 to send" in printed
    assert "5 rows (ok 5)" in printed and "(from the sample)" in printed
    assert "a run would stop after about" in printed
    assert "limited by requests_per_minute (6000)" in printed
    assert not out.exists()


def test_the_cost_is_given_at_the_jobs_tier_and_compared_across_tiers(tmp_path: Path) -> None:
    """A batch job is priced at the Batch API's half price; every estimate shows online, flex and batch."""
    online = estimate_job(tiny_job(tmp_path))
    batch = estimate_job(tiny_job(tmp_path), mode="batch", batch={"deadline": "2h"})
    assert online.cost is not None and batch.cost is not None
    assert batch.tier == "batch" and batch.cost.total == pytest.approx(online.cost.total / 2)
    text = render(batch)
    assert "x 0.5 (batch)" in text
    assert f"online {usd(online.cost.total)} (answers in seconds), flex {usd(online.cost.total / 2)}" in text
    assert "rows not answered 2h after a job starts go online" in text


@pytest.mark.anyio
async def test_a_sample_only_runs_rows_a_run_would_send(tmp_path: Path) -> None:
    """`--sample N` pays for rows, so it takes them from those left to send: none when the job is done (it
    billed N rows of a finished job), the rest when fewer than N are left."""
    job = tiny_job(tmp_path)
    async with FakeServer(ServerConfig()) as server:
        local = job.with_overrides(base_url=server.url)
        await run_job_async(local, api_key=server.api_key, limit=2)
        sent = server.stats.requests
        partly = await estimate_job_async(local, sample=3, api_key=server.api_key)
        assert server.stats.requests - sent == 1 and partly.sample is not None and partly.sample.rows == 1
        await run_job_async(local, api_key=server.api_key)
        sent = server.stats.requests
        done = await estimate_job_async(local, sample=3, api_key=server.api_key)
        assert server.stats.requests == sent
    assert done.to_send == 0 and done.sample is None
    assert "nothing is left to send" in render(done)
