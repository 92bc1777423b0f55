"""How close to a server's quota batchgen runs over real HTTP, and how many 429s it draws.

Run from the repository root: `python -m benchmarks.quota_http`. Each case starts the local Gemini server in
its own process with a quota (RPM and input TPM, counted over a sliding window of `window_s` seconds holding
rate x window / 60) and runs a job through `batchgen.api` against it, the job's
`[limits] quota_window_s` set to the same window. The figures come from the server's ledger: requests and
input tokens it admitted (first to last admission, or the last part of the run for the unconfigured case)
as a share of the binding quota, and the 429s it sent for a quota. "achieved" is over the whole run when
limits are configured, and from `settled_after_s` on when the limiter had to learn the quota; "whole run"
is always first to last admission.

* configured: limits equal to the quota. Expected: no 429, about 99 % (the limiter keeps 1 % headroom).
* unconfigured: no rate limits at all. The first 429s teach the limiter the quota; it cuts to 80 % of what
  the server accepted, then climbs back in 5 s steps. Expected: one wave of 429s, then 90-99 %.

A window of a few seconds instead of a minute keeps the run short. It is harsher than the real API: the 1 %
headroom is 1 % of the window, 50-60 ms here instead of 0.6 s, against the same scheduling jitter.

`main()` prints a table and returns the figures as a dict, for the benchmark report.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchgen.job import load_job
from batchgen.pipeline import RunOptions, execute
from batchgen.secret import ApiKey
from benchmarks import procs

KEY = "bench-quota-key"


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    rpm: int
    tpm: int | None
    window_s: float
    rows: int
    configured: bool
    settled_after_s: float = 0.0
    """Seconds from the first admission left out of the achieved rate (the unconfigured case's learning)."""


CASES = (
    Case("configured rpm + tpm = quota", rpm=6000, tpm=280_000, window_s=6, rows=1000, configured=True),
    Case(
        "unconfigured, rpm quota",
        rpm=6000,
        tpm=None,
        window_s=5,
        rows=2000,
        configured=False,
        settled_after_s=12.0,
    ),
)


def write_job(folder: Path, case: Case) -> Path:
    """A text-mode job over `case.rows` reviews of 1 to 8 sentences (prompts of about 15-75 tokens)."""
    lines = (
        orjson.dumps({"id": f"b{i:06d}", "review": " ".join(["The lamp works, the cable is short."] * (1 + i % 8))})
        for i in range(case.rows)
    )
    (folder / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    limits = f"concurrency = 64\nquota_window_s = {case.window_s}\n"
    if case.configured:
        limits += f"requests_per_minute = {case.rpm}\n"
        if case.tpm is not None:
            limits += f"tokens_per_minute = {case.tpm}\n"
    job = folder / "job.toml"
    job.write_text(
        'model = "gemini-2.5-flash-lite"\napi_key_env = "UNUSED"\n\n'
        '[input]\npath = "in.jsonl"\nid_field = "id"\nprompt_template = "Summarise this review: {review}"\n\n'
        f"[limits]\n{limits}\n"
        '[output]\npath = "out"\n'
    )
    return job


def share(requests: float, tokens: float, minutes: float, case: Case) -> float:
    """The binding quota's share admitted: the larger of requests and tokens per minute over their quotas."""
    shares = [requests / minutes / case.rpm]
    if case.tpm is not None:
        shares.append(tokens / minutes / case.tpm)
    return max(shares)


def whole_run(stats: dict[str, Any], case: Case) -> float:
    """The share of the quota admitted from the first admission to the last."""
    admitted = stats["admissions"]
    n = admitted["requests"]
    minutes = (admitted["last_s"] - admitted["first_s"]) / 60
    # n admissions span n - 1 gaps: count n - 1 requests, and n - 1 requests' worth of tokens.
    return share(n - 1, admitted["tokens"] * (n - 1) / n, minutes, case)


def settled(stats: dict[str, Any], case: Case) -> float:
    """The share admitted in whole seconds from `settled_after_s` after the first admission to the last."""
    admitted = stats["admissions"]
    per_second = {int(k): v for k, v in admitted["per_second"].items()}
    start = int(admitted["first_s"] + case.settled_after_s) + 1
    seconds = [per_second.get(s, [0, 0]) for s in range(start, int(admitted["last_s"]))]
    return share(sum(s[0] for s in seconds), sum(s[1] for s in seconds), len(seconds) / 60, case)


def run(case: Case) -> dict[str, float]:
    flags = ["--rpm", str(case.rpm), "--quota-window-s", str(case.window_s)]
    if case.tpm is not None:
        flags += ["--tpm", str(case.tpm)]
    flags += ["--api-key", KEY, "--latency-jitter-ms", "10"]
    with tempfile.TemporaryDirectory() as folder, procs.server(20, flags=flags) as server:
        job = load_job(write_job(Path(folder), case)).with_overrides(base_url=server.url)
        started = time.perf_counter()
        outcome = asyncio.run(execute(job, ApiKey(KEY), RunOptions()))
        elapsed = time.perf_counter() - started
        stats = server.stats()
    return {
        "achieved": settled(stats, case) if case.settled_after_s else whole_run(stats, case),
        "whole_run": whole_run(stats, case),
        "quota_429": sum(stats["quota_rejections"].values()),
        "rows": outcome.stats.done,
        "requests": stats["admissions"]["requests"],
        "window_s": case.window_s,
        "seconds": elapsed,
    }


def main() -> dict[str, dict[str, float]]:
    figures = {case.name: run(case) for case in CASES}
    header = ("real HTTP, local server", "achieved", "whole run", "429s", "rows", "window", "seconds")
    print("{:32} {:>9} {:>10} {:>5} {:>6} {:>7} {:>8}".format(*header))
    for name, row in figures.items():
        print(
            f"{name:32} {row['achieved']:9.1%} {row['whole_run']:10.1%} {row['quota_429']:5.0f} "
            f"{row['rows']:6.0f} {row['window_s']:6.0f}s {row['seconds']:8.1f}"
        )
    return figures


if __name__ == "__main__":
    main()
