"""Quotas of the fake server: sliding RPM/TPM windows and day windows on a fake clock, and the 429 bodies
over real HTTP with a short window."""

from __future__ import annotations

import asyncio
import datetime
import re
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import orjson
import pytest

from batchgen.fakeserver import FakeServer, ServerConfig
from batchgen.fakeserver.quota import Quotas, SlidingWindow
from batchgen.fakeserver.stats import Ledger

KEY = "quota-key"
RPM = "GenerateRequestsPerMinutePerProjectPerModel"
TPM = "GenerateContentInputTokensPerModelPerMinute"
RPD = "GenerateRequestsPerDayPerProjectPerModel"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_window_frees_capacity_as_entries_age_out() -> None:
    """A full window reports the wait until its oldest entry leaves, and admits again at that moment."""
    window = SlidingWindow(capacity=2, window=10)
    window.add(0.0, 1)
    window.add(1.0, 1)
    assert window.wait(2.0, 1) == pytest.approx(8.0)
    assert window.wait(10.0, 1) == 0.0


def test_window_wait_covers_the_amount_needed() -> None:
    """For tokens, the wait lasts until enough of them have aged out for the new amount to fit."""
    window = SlidingWindow(capacity=100, window=10)
    window.add(0.0, 60)
    window.add(1.0, 30)
    assert window.wait(2.0, 10) == 0.0
    assert window.wait(2.0, 50) == pytest.approx(8.0)
    assert window.wait(2.0, 80) == pytest.approx(9.0)


def test_oversized_request_fits_only_an_empty_window() -> None:
    """A request larger than the whole window waits for the window to empty, then goes through."""
    window = SlidingWindow(capacity=100, window=10)
    assert window.wait(0.0, 500) == 0.0
    window.add(0.0, 5)
    assert window.wait(1.0, 500) == pytest.approx(9.0)


def test_rpm_window_capacity_scales_with_window_and_rejections_do_not_count() -> None:
    """rpm 60 over a 2 s window admits 2 requests; the third is refused with the RPM quota and the time until
    the first ages out; refused requests take no capacity."""
    clock = Clock()
    quotas = Quotas(ServerConfig(rpm=60, quota_window_s=2.0), clock)
    assert quotas.admit("gemini-2.5-flash", 10) is None
    clock.now += 0.5
    assert quotas.admit("gemini-2.5-flash", 10) is None
    for _ in range(5):
        rejection = quotas.admit("gemini-2.5-flash", 10)
        assert rejection is not None
        assert (rejection.quota_id, rejection.limit) == (RPM, 60)
        assert rejection.retry_after == pytest.approx(1.5)
    clock.now += 1.5
    assert quotas.admit("gemini-2.5-flash", 10) is None


def test_tpm_counts_input_tokens() -> None:
    """tpm 600 over 2 s holds 20 input tokens; a request that does not fit is refused with the TPM quota."""
    clock = Clock()
    quotas = Quotas(ServerConfig(tpm=600, quota_window_s=2.0), clock)
    assert quotas.admit("gemini-2.5-flash", 12) is None
    rejection = quotas.admit("gemini-2.5-flash", 9)
    assert rejection is not None and rejection.quota_id == TPM
    assert quotas.admit("gemini-2.5-flash", 8) is None


def test_quotas_are_per_model() -> None:
    """One model's spent quota does not limit another model."""
    quotas = Quotas(ServerConfig(rpm=30, quota_window_s=2.0), Clock())
    assert quotas.admit("gemini-2.5-flash", 1) is None
    assert quotas.admit("gemini-2.5-flash", 1) is not None
    assert quotas.admit("gemini-2.5-pro", 1) is None


def test_rpd_uses_fixed_day_windows() -> None:
    """rpd counts requests per day window and reports the time until the next window; it is checked first."""
    clock = Clock()
    quotas = Quotas(ServerConfig(rpd=2, rpm=1, quota_window_s=60.0, day_window_s=100.0), clock)
    assert quotas.admit("m", 1) is None
    clock.now += 70
    assert quotas.admit("m", 1) is None
    clock.now += 10
    rejection = quotas.admit("m", 1)
    assert rejection is not None and (rejection.quota_id, rejection.limit) == (RPD, 2)
    assert rejection.retry_after == pytest.approx(20.0)
    clock.now += 60  # a new day window, and the rpm window has moved past the request at t+70
    assert quotas.admit("m", 1) is None


def test_rpd_resets_at_pacific_midnight() -> None:
    """Without day_window_s the day ends at midnight America/Los_Angeles."""
    pacific = ZoneInfo("America/Los_Angeles")
    wall = datetime.datetime(2025, 1, 15, 23, 0, tzinfo=pacific).timestamp()
    quotas = Quotas(ServerConfig(rpd=1), Clock(), lambda: wall)
    assert quotas.admit("m", 1) is None
    rejection = quotas.admit("m", 1)
    assert rejection is not None and rejection.retry_after == pytest.approx(3600.0)
    assert quotas.until_next_day() == pytest.approx(3600.0)


# --- over HTTP --------------------------------------------------------------------------------------------


async def generate(session: aiohttp.ClientSession, server: FakeServer, text: str) -> tuple[int, dict[str, Any]]:
    body = orjson.dumps({"contents": [{"parts": [{"text": text}]}]})
    url = f"{server.url}/v1beta/models/gemini-2.5-flash:generateContent"
    async with session.post(url, data=body, headers={"x-goog-api-key": KEY}) as response:
        return response.status, orjson.loads(await response.read())


def retry_delay(answer: dict[str, Any]) -> float:
    info = next(d for d in answer["error"]["details"] if d["@type"].endswith("RetryInfo"))
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", info["retryDelay"])
    assert match, info
    return float(match.group(1))


@pytest.mark.anyio
async def test_rpm_429_body_and_recovery_over_http(session: aiohttp.ClientSession) -> None:
    """Over quota: 429 RESOURCE_EXHAUSTED with QuotaFailure (quotaId, metric, dimensions, value), Help and
    RetryInfo; waiting that long is enough; refused requests are counted in the ledger, not against quota."""
    config = ServerConfig(api_key=KEY, rpm=60, quota_window_s=1.0)  # one request per window
    async with FakeServer(config) as server:
        assert (await generate(session, server, "one"))[0] == 200
        status, answer = await generate(session, server, "two")
        assert status == 429
        error = answer["error"]
        assert error["status"] == "RESOURCE_EXHAUSTED"
        types = [d["@type"].rsplit(".", 1)[1] for d in error["details"]]
        assert types == ["QuotaFailure", "Help", "RetryInfo"]
        violation = error["details"][0]["violations"][0]
        assert violation["quotaId"] == RPM
        assert violation["quotaValue"] == "60"
        assert violation["quotaDimensions"] == {"location": "global", "model": "gemini-2.5-flash"}
        assert violation["quotaMetric"].startswith("generativelanguage.googleapis.com/")
        delay = retry_delay(answer)
        assert 0 < delay <= 1.0
        assert "Please retry in" in error["message"]
        for _ in range(3):
            assert (await generate(session, server, "refused"))[0] == 429
        await asyncio.sleep(delay)
        assert (await generate(session, server, "three"))[0] == 200
        stats = server.stats
        assert stats.quota_rejections == {RPM: 4}
        assert stats.responses_by_status == {200: 2, 429: 4}
        assert stats.faults == {}
        assert stats.admissions.requests == 2  # what the quota counted: the refused ones are not


def test_ledger_keeps_admissions_per_second_with_first_and_last_times() -> None:
    """The admission timeline: totals, exact first and last times since start, per-second requests and
    tokens, for measuring a client's rate where the quota counts it."""
    clock = Clock(100.0)
    ledger = Ledger(clock)
    for at, tokens in ((100.2, 10), (100.7, 20), (102.5, 5)):
        clock.now = at
        ledger.admit(tokens)
    admissions = ledger.snapshot().admissions
    assert (admissions.requests, admissions.tokens) == (3, 35)
    assert admissions.first_s == pytest.approx(0.2) and admissions.last_s == pytest.approx(2.5)
    assert admissions.per_second == {0: (2, 30), 2: (1, 5)}
    assert admissions.to_json()["per_second"] == {"0": [2, 30], "2": [1, 5]}


@pytest.mark.anyio
async def test_tpm_429_over_http(session: aiohttp.ClientSession) -> None:
    """TPM counts promptTokenCount: a second large prompt in the window is refused with the TPM quota."""
    config = ServerConfig(api_key=KEY, tpm=1200, quota_window_s=5.0)  # 100 input tokens per window
    async with FakeServer(config) as server:
        status, answer = await generate(session, server, "x" * 300)
        assert status == 200 and answer["usageMetadata"]["promptTokenCount"] == 75
        status, answer = await generate(session, server, "y" * 300)
        assert status == 429
        assert answer["error"]["details"][0]["violations"][0]["quotaId"] == TPM
        assert (await generate(session, server, "short"))[0] == 200
