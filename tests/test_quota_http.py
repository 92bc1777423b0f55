"""Running at the server's quota over real HTTP: the CLI (or `execute`) against the local server in its own
process, with the server's quotas counted over a window of a few seconds instead of a minute.

The server counts RPM and TPM over `--quota-window-s` seconds holding rate x window / 60, and the job's
`[limits] quota_window_s` gives the limiter the same window, so the run is production's arrangement (client
and server windows of one length, rates per minute) with the window shortened. That makes it stricter than
production, not looser: the 1 % headroom is 50 ms of a 5 s window instead of 0.6 s of a minute, against the
same loopback jitter. Rates and 429s are read from the server's own ledger: what it admitted, per second.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pyarrow.dataset as ds
import pytest
from servers import server_process, server_stats

from batchgen.cli import main
from batchgen.job import load_job
from batchgen.online.limiter.rate import LimiterSnapshot
from batchgen.pipeline import LiveRun, RunOptions, RunSummary, execute
from batchgen.secret import ApiKey

KEY_ENV = "QUOTA_HTTP_TEST_KEY"
KEY = "quota-http-key"
RPM = "GenerateRequestsPerMinutePerProjectPerModel"
TPM = "GenerateContentInputTokensPerModelPerMinute"
RPD = "GenerateRequestsPerDayPerProjectPerModel"
LATENCY = ("--latency-ms", "20", "--latency-jitter-ms", "10")
WINDOW_S = 5
"""The quota window of server and limiter alike. Its 1 % headroom, 50 ms, is all that absorbs the time between
the limiter's admission and the server's count (GC pauses, a busy CPU): 3-4 s windows drew a 429 in some
runs on a loaded two-core machine."""
ROWS = 650
"""At 6000 RPM (100 a second) a run outlasts the window by a third: its edge is crossed at the quota."""

# Rates are measured on the wall clock. pytest-xdist (--dist loadfile) runs a module's tests one after another
# on one worker, so no two of these compete for the CPU; `slow` starts the module first.
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(KEY_ENV, KEY)
    yield


def server(*flags: str) -> Any:
    return server_process("--api-key", KEY, *flags)


def write_job(folder: Path, rows: int, limits: dict[str, Any]) -> Path:
    """A text-mode job over `rows` reviews of 1 to 8 sentences (prompts of about 15-75 tokens)."""
    lines = (
        orjson.dumps({"id": f"q{i:05d}", "review": " ".join(["The lamp works, the cable is short."] * (1 + i % 8))})
        for i in range(rows)
    )
    (folder / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    settings = "\n".join(f"{key} = {json.dumps(value)}" for key, value in limits.items())
    job = folder / "job.toml"
    job.write_text(
        f'model = "gemini-2.5-flash-lite"\napi_key_env = "{KEY_ENV}"\n\n'
        '[input]\npath = "in.jsonl"\nid_field = "id"\nprompt_template = "Summarise this review: {review}"\n\n'
        f"[limits]\n{settings}\n\n"
        '[output]\npath = "out"\n'
    )
    return job


def run(job: Path, url: str, *flags: str) -> int:
    return main(["run", str(job), "--base-url", url, *flags])


async def run_in_process(job: Path, url: str, on_start: Any = lambda runner: None) -> RunSummary:
    loaded = load_job(job).with_overrides(base_url=url)
    return await execute(loaded, ApiKey(KEY), RunOptions(), on_start=on_start)


def results(folder: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = ds.dataset(folder, format="parquet").to_table(columns=["id", "status"]).to_pylist()
    return rows


def achieved(stats: dict[str, Any]) -> tuple[float, float]:
    """(requests, input tokens) per minute the server admitted, from its first admission to its last."""
    admitted = stats["admissions"]
    n = admitted["requests"]
    span = admitted["last_s"] - admitted["first_s"]
    # n admissions span n - 1 gaps; count the tokens of n - 1 of them (their mean) to match.
    return (n - 1) / span * 60, admitted["tokens"] * (n - 1) / n / span * 60


def snapshot(outcome: RunSummary) -> LimiterSnapshot:
    assert outcome.limiter is not None
    return outcome.limiter


def achieved_lately(stats: dict[str, Any], seconds: int) -> float:
    """Requests per minute the server admitted over the last `seconds` whole seconds before the last one."""
    per_second = {int(k): v[0] for k, v in stats["admissions"]["per_second"].items()}
    last = max(per_second)
    return float(sum(per_second.get(s, 0) for s in range(last - seconds, last)) / seconds * 60)


def quota_429s(stats: dict[str, Any]) -> int:
    return sum(stats["quota_rejections"].values())


# -- configured limits equal to the quota ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quota", "rows"),
    [
        pytest.param({"rpm": 6000}, ROWS, id="rpm"),
        pytest.param({"tpm": 280_000}, ROWS, id="tpm"),
        pytest.param({"rpm": 6000, "tpm": 280_000}, ROWS, id="rpm-and-tpm"),
    ],
)
def test_limits_equal_to_the_quota_run_at_it_without_a_429(tmp_path: Path, quota: dict[str, int], rows: int) -> None:
    """Configured limits equal to the server's quota: not one 429, and at least 95 % of the binding quota
    admitted from the first request to the last (the limiter aims at 99 %: 1 % headroom)."""
    limits: dict[str, Any] = {"concurrency": 32, "quota_window_s": WINDOW_S}
    flags = ["--quota-window-s", str(WINDOW_S), *LATENCY]
    if "rpm" in quota:
        limits["requests_per_minute"] = quota["rpm"]
        flags += ["--rpm", str(quota["rpm"])]
    if "tpm" in quota:
        limits["tokens_per_minute"] = quota["tpm"]
        flags += ["--tpm", str(quota["tpm"])]
    job = write_job(tmp_path, rows, limits)
    with server(*flags) as url:
        assert run(job, url) == 0
        stats = server_stats(url)
    assert stats["responses_by_status"] == {"200": rows}
    rpm, tpm = achieved(stats)
    share = max(rpm / quota["rpm"] if "rpm" in quota else 0.0, tpm / quota["tpm"] if "tpm" in quota else 0.0)
    assert share >= 0.95, (rpm, tpm)
    assert len(results(tmp_path / "out")) == rows


# -- no configured limits ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_without_limits_the_run_converges_on_the_quota_with_few_429s(tmp_path: Path) -> None:
    """No configured rate: the first 429s (one wave, at most what was in flight) teach the limiter the quota.
    It cuts to 80 % of it and climbs back in 5 s steps, never above it: at the end it paces at 85-100 % of
    the quota, and the server admits at least 80 % of the quota over the last seconds. (A 3 s window: the
    first 429's wait is the window's length, and what is measured here is the climb back, not the edge.)"""
    job = write_job(tmp_path, 1100, {"concurrency": 64, "quota_window_s": 3})
    with server("--rpm", "6000", "--quota-window-s", "3", *LATENCY) as url:
        outcome = await run_in_process(job, url)
        stats = server_stats(url)
    timeline = stats["admissions"]["per_second"]
    assert 1 <= quota_429s(stats) <= 64, timeline
    rpm = snapshot(outcome).rpm
    assert rpm is not None and 0.85 * 6000 <= rpm <= 6000, timeline
    assert achieved_lately(stats, 3) >= 0.8 * 6000, timeline
    assert len(results(tmp_path / "out")) == 1100


# -- requests per day --------------------------------------------------------------------------------------


def test_a_spent_daily_quota_stops_with_exit_3_and_a_rerun_next_day_finishes(tmp_path: Path) -> None:
    """The server's per-day 429 stops the job: exit 3, every answered row written, the manifest says why, and
    no retries burnt on it. The next day (a fresh server) the rerun sends exactly the rows still missing."""
    job = write_job(tmp_path, 100, {"concurrency": 8})
    out = tmp_path / "out"
    with server("--rpd", "40", "--day-window-s", "3600", *LATENCY) as url:
        assert run(job, url) == 3
        first = server_stats(url)
    assert first["admissions"]["requests"] == 40
    assert first["quota_rejections"] == {RPD: first["responses_by_status"]["429"]}
    assert first["quota_rejections"][RPD] <= 8  # at most one per worker: none is retried
    written = results(out)
    assert len(written) == 40 and {r["status"] for r in written} == {"ok"}
    manifest = orjson.loads((out / "_manifest.json").read_bytes())
    assert "QuotaExhausted" in manifest["runs"][-1]["stopped_by"]
    with server("--rpd", "100", "--day-window-s", "3600", *LATENCY) as url:
        assert run(job, url) == 0
        second = server_stats(url)
    assert second["admissions"]["requests"] == 60
    assert sorted(r["id"] for r in results(out)) == [f"q{i:05d}" for i in range(100)]


def test_the_local_daily_limit_stops_with_exit_3_before_any_429(tmp_path: Path) -> None:
    """`requests_per_day` stops the job once this run sent that many requests: exit 3, nothing refused by the
    server, and every request sent is a row written."""
    job = write_job(tmp_path, 100, {"concurrency": 8, "requests_per_day": 30})
    with server(*LATENCY) as url:
        assert run(job, url) == 3
        stats = server_stats(url)
    assert stats["responses_by_status"] == {"200": 30}
    assert len(results(tmp_path / "out")) == 30


# -- faults while limiting ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_faults_while_limiting_leak_nothing_and_trip_no_quota(tmp_path: Path) -> None:
    """30 % of attempts dropped, stalled past the 0.25 s timeout, or answered 503, under an RPM limit equal
    to the quota: every row ends final, no 429, the limiter ends with nobody waiting, every request it
    admitted reached the server, and the rate holds up while there are rows to send."""
    rows = 300
    limits = {
        "concurrency": 128,
        "quota_window_s": WINDOW_S,
        "requests_per_minute": 6000,
        "timeout_s": 0.25,
        "max_attempts": 3,
    }
    job = write_job(tmp_path, rows, limits)
    faults = ["--fail-rate", "0.3", "--fault-weights", "drop=1,slow=1,503=1", "--slow-s", "2"]
    with server("--rpm", "6000", "--quota-window-s", str(WINDOW_S), "--latency-ms", "5", *faults) as url:
        outcome = await run_in_process(job, url)
        stats = server_stats(url)
    assert outcome.stopped_by is None
    assert quota_429s(stats) == 0
    assert set(stats["faults"]) == {"drop", "slow", "503"}
    written = results(tmp_path / "out")
    assert sorted(r["id"] for r in written) == [f"q{i:05d}" for i in range(rows)]
    assert {r["status"] for r in written} <= {"ok", "failed"}
    left = snapshot(outcome)
    assert left.waiting == 0
    assert left.admitted == stats["requests_by_method"]["generateContent"] == stats["admissions"]["requests"]
    # While rows remain, admissions keep to the quota's pace; the retries of the last rows trail off after.
    per_second = stats["admissions"]["per_second"]
    first = int(stats["admissions"]["first_s"])
    bulk = sum(per_second.get(str(s), [0])[0] for s in range(first + 1, first + 4))
    assert bulk / 3 * 60 >= 0.8 * 6000


@pytest.mark.anyio
async def test_stop_drains_the_rows_in_flight_and_writes_them(tmp_path: Path) -> None:
    """Ctrl-C (the runner's stop) under a rate limit: the rows in flight finish and are written, nothing new
    starts, the limiter is left with nobody waiting, and the run ends well within the grace period."""
    job = write_job(tmp_path, 400, {"concurrency": 16, "requests_per_minute": 3000, "quota_window_s": WINDOW_S})
    runs: list[LiveRun] = []

    async def interrupt() -> None:
        await anyio.sleep(1.0)
        runs[0].stop()

    with server(
        "--rpm", "3000", "--quota-window-s", str(WINDOW_S), "--latency-ms", "300", "--latency-jitter-ms", "100"
    ) as url:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(interrupt)
                outcome = await run_in_process(job, url, on_start=runs.append)
        stats = server_stats(url)
    assert snapshot(outcome).waiting == 0
    written = results(tmp_path / "out")
    assert 1 <= len(written) < 400
    assert len(written) == stats["billed_responses"] == stats["admissions"]["requests"]


# -- exact token counts ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_token_estimate_count_paces_on_exact_counts(tmp_path: Path) -> None:
    """`token_estimate = "count"`: each row's tokens are counted by the server before it is sent, once, and
    the limiter paces on those exact counts: its token total is the server's to the token, with no 429.
    (A short run: the rate at the quota and the window's edge are the TPM test's business.)"""
    rows = 100
    limits = {"concurrency": 32, "quota_window_s": WINDOW_S, "tokens_per_minute": 280_000, "token_estimate": "count"}
    job = write_job(tmp_path, rows, limits)
    with server("--tpm", "280000", "--quota-window-s", str(WINDOW_S), *LATENCY) as url:
        outcome = await run_in_process(job, url)
        stats = server_stats(url)
    assert stats["requests_by_method"] == {"countTokens": rows, "generateContent": rows}
    assert quota_429s(stats) == 0
    assert snapshot(outcome).tokens == stats["admissions"]["tokens"]
