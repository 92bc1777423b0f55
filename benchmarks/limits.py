"""How close to a server's quota the limiter runs, and how many 429s it draws, in virtual time.

Run from the repository root: `python -m benchmarks.limits`. Each scenario drives a `RateLimiter` with a
pool of workers against `SlidingWindowQuota` (a Gemini-like per-minute quota counted over a sliding window)
for an hour of virtual time, and reports the share of the binding quota the server accepted and the 429s:
"own" ones name a quota (the traffic overran it), "shared" ones are random refusals inside quota.

`main()` prints a table and returns the figures as a dict, for the benchmark report.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from batchgen.online.limiter.rate import Limits, RateLimiter
from benchmarks.quota_sim import Outcome, SlidingWindowQuota, VirtualTimeLoop, Workload, simulate


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    quota: SlidingWindowQuota
    limits: Limits
    load: Workload
    minutes: float = 60.0
    settled_after: float = 0.0
    """Minutes of learning left out of the achieved rate (for unconfigured limits)."""


def scenarios() -> list[Scenario]:
    configured = [
        Scenario(
            "configured rpm, 0.3 s jitter",
            SlidingWindowQuota(rpm=120),
            Limits(requests_per_minute=120),
            Workload(send_jitter=0.3),
        ),
        Scenario(
            "configured tpm, estimates +-30 %",
            SlidingWindowQuota(tpm=100_000),
            Limits(tokens_per_minute=100_000),
            Workload(estimate_error=0.3),
        ),
        Scenario(
            "configured tpm, +-30 %, 2-20 s latency",
            SlidingWindowQuota(tpm=100_000),
            Limits(tokens_per_minute=100_000),
            Workload(workers=40, latency=(2.0, 20.0), estimate_error=0.3),
        ),
        Scenario(
            "configured rpm + tpm, +-30 %",
            SlidingWindowQuota(rpm=60, tpm=100_000),
            Limits(requests_per_minute=60, tokens_per_minute=100_000),
            Workload(estimate_error=0.3),
        ),
        Scenario(
            "configured 4000 rpm + 4M tpm",
            SlidingWindowQuota(rpm=4_000, tpm=4_000_000),
            Limits(requests_per_minute=4_000, tokens_per_minute=4_000_000),
            Workload(workers=400, latency=(1.0, 8.0), tokens=(100, 1_800), estimate_error=0.3),
            minutes=10.0,
        ),
        Scenario(
            "configured rpm, 0.2 % shared 429s",
            SlidingWindowQuota(rpm=120, shared_refusals=0.002, seed=3),
            Limits(requests_per_minute=120),
            Workload(),
        ),
        Scenario(
            "configured, timeouts + lost answers",
            SlidingWindowQuota(rpm=120, tpm=400_000),
            Limits(requests_per_minute=120, tokens_per_minute=400_000),
            Workload(workers=12, failures=0.3, deadline=5.0, estimate_error=0.3),
        ),
    ]
    unconfigured = [
        Scenario(
            "unconfigured, rpm quota",
            SlidingWindowQuota(rpm=120),
            Limits(),
            Workload(workers=50),
            settled_after=10.0,
        ),
        Scenario(
            "unconfigured, tpm quota, no RetryInfo",
            SlidingWindowQuota(tpm=100_000, retry_info=False),
            Limits(),
            Workload(workers=50, estimate_error=0.3),
            settled_after=10.0,
        ),
    ]
    return configured + unconfigured


def achieved(outcome: Outcome, quota: SlidingWindowQuota, start: float, end: float) -> float:
    """The share of the binding quota the server accepted between `start` and `end` (seconds)."""
    minutes = (end - start) / 60
    shares = []
    if quota.rpm is not None:
        shares.append(outcome.requests_between(start, end) / (quota.rpm * minutes))
    if quota.tpm is not None:
        shares.append(outcome.tokens_between(start, end) / (quota.tpm * minutes))
    return max(shares)


def run(scenario: Scenario) -> dict[str, float]:
    duration = scenario.minutes * 60

    async def go() -> Outcome:
        return await simulate(RateLimiter(scenario.limits), scenario.quota, scenario.load, duration)

    started = time.perf_counter()
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        outcome = runner.run(go())
    real = time.perf_counter() - started
    settled = scenario.settled_after * 60
    return {
        "achieved": achieved(outcome, scenario.quota, settled, duration),
        "own_429": outcome.own_refusals,
        "own_429_after_learning": sum(1 for at, q in outcome.refused if q is not None and at >= settled),
        "shared_429": len(outcome.refused) - outcome.own_refusals,
        "requests": len(outcome.accepted),
        "virtual_minutes": scenario.minutes,
        "real_seconds": real,
    }


def main() -> dict[str, dict[str, float]]:
    figures = {scenario.name: run(scenario) for scenario in scenarios()}
    header = ("scenario", "achieved", "own 429", "later", "shared", "minutes", "real s")
    print("{:40} {:>9} {:>8} {:>6} {:>7} {:>8} {:>7}".format(*header))
    for name, row in figures.items():
        print(
            f"{name:40} {row['achieved']:9.1%} {row['own_429']:8.0f} {row['own_429_after_learning']:6.0f} "
            f"{row['shared_429']:7.0f} {row['virtual_minutes']:8.0f} {row['real_seconds']:7.2f}"
        )
    return figures


if __name__ == "__main__":
    main()
