"""`--engine ray` on this machine: rows/s with 1, 2 and 4 workers, and the authority's admissions per second.

Run from the repository root: `python -m benchmarks.ray_scale` (or `benchmarks/run.py --only ray`). One local
Ray instance (all CPUs, a 512 MB object store) serves every case; the local Gemini server runs in its own
process with `LATENCY_MS` of latency, so rows/s depends on concurrency and on how many workers share the CPU.

* start-up: `ray.init` seconds and the RSS of the instance's processes right after it (and after the runs).
* scale: the same job (text mode, `concurrency` 64 per worker, 250-row blocks) with 1, 2 and 4 workers. "end
  to end" is rows over the whole run as a user waits for it (the pipeline's and actors' start included);
  "steady" is the server's count from its first admission to its last, the rate once every worker runs.
* authority: the rate-limit actor alone, no quota, hammered by `CALLERS` concurrent callers (as many workers)
  for `SECONDS` each: one permit per call (unbatched) against 64 per call (a worker with 64 requests waiting,
  as `link.Link` asks).

`main()` prints tables and returns the figures as a dict, for the benchmark report.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import ray

from batchgen.api import run_job_async
from batchgen.distributed.authority import Authority
from batchgen.online.limiter.rate import Limits
from benchmarks import procs

KEY_ENV = "BATCHGEN_BENCH_RAY_KEY"
KEY = "bench-ray-key"
LATENCY_MS = 100
WORKERS = (1, 2, 4)
CALLERS = 4
SECONDS = 3.0


def write_job(folder: Path, rows: int, workers: int) -> Path:
    lines = (orjson.dumps({"id": f"b{i:06d}", "review": f"Review {i}: the lamp works."}) for i in range(rows))
    (folder / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    job = folder / "job.toml"
    job.write_text(
        f'model = "gemini-2.5-flash-lite"\napi_key_env = "{KEY_ENV}"\nengine = "ray"\n\n'
        '[input]\npath = "in.jsonl"\nid_field = "id"\nprompt_template = "Summarise: {review}"\n\n'
        "[limits]\nconcurrency = 64\n\n"
        '[output]\npath = "out"\n\n'
        f"[ray]\nworkers = {workers}\nblock_rows = 250\nworker_cpus = 0.25\n"
    )
    return job


async def scale(url: str, rows: int, workers: int, server: procs.Server) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="batchgen-ray-bench-") as folder:
        job = write_job(Path(folder), rows, workers)
        before = server.stats()["admissions"]
        started = time.perf_counter()
        summary = await run_job_async(job, base_url=url)
        wall = time.perf_counter() - started
        after = server.stats()["admissions"]
    assert summary.exit_code == 0 and summary.stats.done == rows, summary
    sent = after["requests"] - before["requests"]
    span = after["last_s"] - max(after["first_s"], before["last_s"] or 0.0)
    return {
        "workers": workers,
        "rows": rows,
        "wall_s": round(wall, 2),
        "end_to_end_rows_per_s": round(rows / wall, 1),
        "steady_rows_per_s": round(sent / span, 1) if span > 0 else None,
    }


async def authority_rate(permits_per_call: int) -> dict[str, Any]:
    handle: Any = ray.remote(Authority).options(num_cpus=0, max_concurrency=1000).remote(Limits())
    await handle.status.remote()
    calls = 0
    deadline = time.perf_counter() + SECONDS

    async def caller() -> None:
        nonlocal calls
        while time.perf_counter() < deadline:
            await handle.acquire.remote([10] * permits_per_call)
            calls += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    elapsed = time.perf_counter() - started
    admitted = (await handle.status.remote()).limiter.admitted
    ray.kill(handle)
    return {
        "permits_per_call": permits_per_call,
        "callers": CALLERS,
        "calls_per_s": round(calls / elapsed, 1),
        "admissions_per_s": round(admitted / elapsed, 1),
    }


def ray_rss_mb() -> float:
    """Summed RSS of this process's descendants (the Ray instance it started), in MB (shared pages twice)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry.name)] = int(fields.get("PPid", "0").strip())
        rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0])
    mine = {os.getpid()}
    grew = True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in mine} - mine
        grew = bool(found)
        mine |= found
    mine.discard(os.getpid())
    return round(sum(rss.get(pid, 0) for pid in mine) / 1024, 1)


async def _main(quick: bool) -> dict[str, Any]:
    rows = 600 if quick else 3000
    figures: dict[str, Any] = {"latency_ms": LATENCY_MS}
    os.environ[KEY_ENV] = KEY
    started = time.perf_counter()
    ray.init(include_dashboard=False, object_store_memory=512 * 1024**2, logging_level=logging.WARNING)
    figures["startup"] = {"init_s": round(time.perf_counter() - started, 2), "rss_mb_after_init": ray_rss_mb()}
    try:
        with procs.server(LATENCY_MS, flags=["--api-key", KEY]) as server:
            figures["scale"] = [await scale(server.url, rows, n, server) for n in WORKERS]
        figures["startup"]["rss_mb_after_runs"] = ray_rss_mb()
        figures["authority"] = [await authority_rate(n) for n in (1, 64)]
    finally:
        ray.shutdown()
    return figures


def main(quick: bool = False) -> dict[str, Any]:
    figures = asyncio.run(_main(quick))
    startup = figures["startup"]
    print(
        f"ray start-up: init {startup['init_s']:.1f} s, RSS {startup['rss_mb_after_init']:,.0f} MB after init, "
        f"{startup['rss_mb_after_runs']:,.0f} MB after the runs (summed over Ray's processes)"
    )
    print(f"\nrows/s, local server at {figures['latency_ms']} ms, concurrency 64 per worker")
    print(f"{'workers':>8} {'rows':>6} {'wall s':>8} {'end to end':>11} {'steady':>8}")
    for case in figures["scale"]:
        print(
            f"{case['workers']:>8} {case['rows']:>6} {case['wall_s']:>8.1f} "
            f"{case['end_to_end_rows_per_s']:>11,.0f} {case['steady_rows_per_s'] or 0:>8,.0f}"
        )
    print(f"\nauthority (no quota), {CALLERS} concurrent callers for {SECONDS:g} s each")
    print(f"{'permits/call':>13} {'calls/s':>9} {'admissions/s':>13}")
    for case in figures["authority"]:
        print(f"{case['permits_per_call']:>13} {case['calls_per_s']:>9,.0f} {case['admissions_per_s']:>13,.0f}")
    return figures


if __name__ == "__main__":
    main()
