"""Flex end to end against the local server: `serviceTier = "flex"` in [request] goes out on every call, the
pool's 503 and 429 sheds are retried through the usual retry and rate-limit path, rows say they were served by
Flex, the report prices them at half and says what that saved, and progress says why answers are slow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from batchgen import api
from batchgen.errors import ExitCode
from batchgen.fakeserver import FakeServer, ServerConfig, TierConfig
from batchgen.job import Job, job_from_dict
from batchgen.pipeline import LiveRun
from batchgen.report.breakdown import build_report, load_results
from batchgen.report.pricing import PriceTable
from batchgen.report.text import render

KEY = "flex-key-4f0b"
ROWS = 24


def flex_job(folder: Path) -> Job:
    data = folder / "in.jsonl"
    data.write_bytes(b"".join(orjson.dumps({"id": f"f{i}", "q": f"Name a colour, {i}."}) + b"\n" for i in range(ROWS)))
    return job_from_dict(
        {
            "model": "gemini-2.5-flash",
            "input": {"path": str(data), "id_field": "id", "prompt_field": "q"},
            "request": {"serviceTier": "flex"},
            "limits": {"concurrency": 8, "max_attempts": 6},
            "output": {"path": str(folder / "out")},
        }
    )


@pytest.mark.anyio
async def test_a_flex_job_survives_the_pools_sheds_and_is_priced_at_half(tmp_path: Path) -> None:
    job = flex_job(tmp_path)
    assert job.timeout_s == 1200.0  # minutes per answer are normal on Flex
    tiers = TierConfig(flex_latency_ms=50, flex_fail_rate=0.3)
    notes: list[Any] = []

    def started(run: LiveRun) -> None:
        notes.append(None if run.note is None else run.note())

    config = ServerConfig(api_key=KEY, seed=11, retry_delay_s=0.05, tiers=tiers)
    async with FakeServer(config) as server:
        summary = await api.run_job_async(job, api_key=KEY, base_url=server.url, on_start=started)
        shed = server.stats.tiers.shed
    assert summary.exit_code == ExitCode.OK and summary.stats.done == ROWS
    assert shed["429"] > 0 and shed["503"] > 0
    assert summary.stats.rate_limited == shed["429"]  # each 429 told the limiter, then retried
    assert summary.stats.attempts == ROWS + shed["429"] + shed["503"]
    assert notes == ["Flex tier: each answer can take minutes (timeout 20m00s)"]
    table = load_results([job.output.path])
    assert set(table.column("traffic").to_pylist()) == {"flex"}
    report = build_report(table, PriceTable.load())
    assert report.totals.cost.total == pytest.approx(report.totals.at_standard.total / 2)
    assert summary.cost_usd == pytest.approx(report.totals.cost.total)
    assert "flex rows at 0.5x of the standard price" in render(report, "table")
