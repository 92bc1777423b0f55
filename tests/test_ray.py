"""`--engine ray` end to end: the session's local Ray instance (2 CPUs), 2 workers, the local server in its own
process, and the same results folder a local run leaves.

Each test runs the real command (in this process, on the session's Ray; one in a subprocess joining it) and
reads what the server counted: rows, 429s, admissions per second. Small blocks (50 rows) give both workers
work on a few hundred rows.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import RAY_KEY, RAY_KEY_ENV
from servers import server_process, server_stats

import batchgen
from batchgen.cli import main

ROOT = Path(__file__).resolve().parent.parent
WINDOW_S = 5
LATENCY = ("--latency-ms", "20", "--latency-jitter-ms", "5")

# Two Ray workers share the machine's two cores with the server: nothing else should run beside them.
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _ray(ray_address: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(RAY_KEY_ENV, RAY_KEY)
    yield


def server(*flags: str) -> Any:
    return server_process("--api-key", RAY_KEY, *flags)


def write_job(folder: Path, rows: int, limits: dict[str, Any], *, bad_lines: int = 0, json_mode: bool = False) -> Path:
    """A job over `rows` reviews (and `bad_lines` malformed lines), run with `engine = "ray"`, 2 workers."""
    lines = [
        orjson.dumps({"id": f"q{i:05d}", "review": f"Review {i}: the lamp works, the cable is short.", "stars": i % 5})
        for i in range(rows)
    ]
    for n in range(bad_lines):
        lines.insert(10 + 37 * n, b'{"id": "broken", ')
    (folder / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    settings = "\n".join(f"{key} = {json.dumps(value)}" for key, value in limits.items())
    schema = (ROOT / "schemas" / "sentiment.json").as_posix()
    request = (
        f'[request]\ngenerationConfig = {{ responseMimeType = "application/json", responseSchema = "{schema}" }}\n\n'
        if json_mode
        else ""
    )
    job = folder / "job.toml"
    job.write_text(
        f'model = "gemini-2.5-flash"\napi_key_env = "{RAY_KEY_ENV}"\nengine = "ray"\n\n'
        '[input]\npath = "in.jsonl"\nid_field = "id"\nprompt_template = "Summarise this review: {review}"\n\n'
        f"{request}"
        f"[limits]\n{settings}\n\n"
        '[output]\npath = "out"\nkeep_columns = ["stars"]\nflush_rows = 100\nflush_seconds = 0.5\n\n'
        "[ray]\nworkers = 2\nblock_rows = 50\nblocks_per_worker = 2\n"
    )
    return job


def run(job: Path, url: str, *flags: str) -> int:
    return main(["run", str(job), "--base-url", url, "--quiet", *flags])


def ids(folder: Path) -> Counter[str]:
    return Counter(batchgen.read_results(folder, columns=["id"]).column("id").to_pylist())


class WorkerLog(logging.Handler):
    """Collects the driver's per-worker lines (`worker_progress` events)."""

    def __init__(self) -> None:
        super().__init__()
        self.workers: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "worker_progress":
            self.workers[record.worker] = record.done  # type: ignore[attr-defined]


@pytest.fixture
def worker_log() -> Iterator[WorkerLog]:
    handler = WorkerLog()
    logger = logging.getLogger("batchgen.distributed")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_the_same_job_gives_the_same_rows_as_a_local_run(tmp_path: Path, worker_log: WorkerLog) -> None:
    """JSON mode, a kept column and two malformed lines: every column of every row is what `--engine local`
    writes (bar the run's id, the times and the response id), and the manifest records the run."""
    job = write_job(tmp_path, 200, {"concurrency": 16}, bad_lines=2, json_mode=True)
    with server() as url:
        assert run(job, url) == 0
        assert run(job, url, "--engine", "local", "--output", str(tmp_path / "local")) == 0
    on_ray = batchgen.read_results(tmp_path / "out").sort_by("id")
    local = batchgen.read_results(tmp_path / "local").sort_by("id")
    assert on_ray.schema == local.schema
    varying = ["run_id", "finished_at", "latency_ms", "response_id"]  # response_id: the server numbers responses
    assert on_ray.drop_columns(varying).equals(local.drop_columns(varying))
    assert on_ray.num_rows == 202 and Counter(on_ray.column("status").to_pylist())["failed"] == 2
    manifest = orjson.loads((tmp_path / "out" / "_manifest.json").read_bytes())
    assert [r["exit_code"] for r in manifest["runs"]] == [0]
    assert sum(worker_log.workers.values()) == 202


def test_a_quota_configured_for_the_job_holds_across_workers(tmp_path: Path, worker_log: WorkerLog) -> None:
    """RPM set to the server's quota: the two workers, both sending, together draw no 429 and stay under the
    quota in every window the server counts (its own ledger, per second)."""
    rows, rpm = 400, 6000
    job = write_job(tmp_path, rows, {"concurrency": 32, "requests_per_minute": rpm, "quota_window_s": WINDOW_S})
    with server("--rpm", str(rpm), "--quota-window-s", str(WINDOW_S), *LATENCY) as url:
        assert run(job, url) == 0
        stats = server_stats(url)
    assert stats["responses_by_status"] == {"200": rows}
    per_second = {int(k): v[0] for k, v in stats["admissions"]["per_second"].items()}
    busiest = max(sum(per_second.get(s + d, 0) for d in range(WINDOW_S)) for s in per_second)
    assert busiest <= rpm * WINDOW_S / 60
    assert len(ids(tmp_path / "out")) == rows
    assert len(worker_log.workers) == 2 and all(worker_log.workers.values()), worker_log.workers


def test_an_unknown_quota_is_learnt_once_for_the_cluster_without_a_429_storm(tmp_path: Path) -> None:
    """No rate configured, a 6000 RPM quota: one wave of 429s (at most what both workers had in flight) teaches
    the shared limiter the quota, and the rest of the run keeps under it."""
    rows = 400
    job = write_job(tmp_path, rows, {"concurrency": 32, "quota_window_s": 3})
    with server("--rpm", "6000", "--quota-window-s", "3", *LATENCY) as url:
        assert run(job, url) == 0
        stats = server_stats(url)
    refused = sum(stats["quota_rejections"].values())
    assert 1 <= refused <= 2 * 32, stats["admissions"]["per_second"]
    assert len(ids(tmp_path / "out")) == rows


@pytest.mark.parametrize(
    ("limits", "code", "stop"),
    [
        pytest.param({"requests_per_day": 60}, 3, "QuotaExhausted", id="daily-quota"),
        pytest.param({"max_cost_usd": 0.15}, 4, "BudgetExhausted", id="cost-cap"),
    ],
)
def test_the_daily_quota_and_the_cost_cap_stop_the_whole_cluster(
    tmp_path: Path, limits: dict[str, Any], code: int, stop: str
) -> None:
    """A daily quota of 60 requests is at most 60 requests for the two workers together (the shared limiter
    counts them); a cost cap stops both workers near it. Either way the run ends with its exit code, every request
    sent is a row written, and the manifest says why."""
    rows = 200
    job = write_job(tmp_path, rows, {"concurrency": 8, **limits})
    with server(*LATENCY) as url:
        assert run(job, url) == code
        stats = server_stats(url)
    written = batchgen.read_results(tmp_path / "out", columns=["id", "status"])
    assert 0 < written.num_rows < rows and set(written.column("status").to_pylist()) == {"ok"}
    assert stats["requests"] == written.num_rows
    if "requests_per_day" in limits:
        # Never over; a permit granted as the stop reached its worker may go unused.
        assert limits["requests_per_day"] - 8 <= written.num_rows <= limits["requests_per_day"]
    manifest = orjson.loads((tmp_path / "out" / "_manifest.json").read_bytes())
    assert stop in manifest["runs"][-1]["stopped_by"]


def worker_pids() -> list[int]:
    """The processes of the Ray Data actors running batchgen's runner (Ray names them in their command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker(MapBatches(RunnerUDF))" in command:
                found.append(int(entry.name))
    return found


def test_a_killed_worker_loses_and_duplicates_no_row(tmp_path: Path) -> None:
    """SIGKILL one worker mid-run: Ray restarts it and runs its blocks again; the folder still holds every id
    exactly once (the driver commits what Ray delivers once), and the run ends with exit 0."""
    rows = 400
    job = write_job(tmp_path, rows, {"concurrency": 8})
    killed: list[int] = []

    def kill_one(url: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if server_stats(url)["requests"] >= 100 and (pids := worker_pids()):
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    with server("--latency-ms", "30") as url:
        killer = threading.Thread(target=kill_one, args=(url,))
        killer.start()
        code = run(job, url)
        killer.join()
        stats = server_stats(url)
    assert killed and code == 0
    seen = ids(tmp_path / "out")
    assert len(seen) == rows and set(seen.values()) == {1}
    assert stats["requests"] >= rows  # the killed worker's blocks were sent again: API calls repeat, rows do not


def test_a_run_whose_driver_is_killed_resumes_to_every_row_once(tmp_path: Path, ray_address: str) -> None:
    """SIGKILL the driver (a `batchgen run --engine ray --address` process on the session's cluster) once parts
    are written; the rerun sends only the rows not committed and the folder ends with every id once."""
    rows = 400
    job = write_job(tmp_path, rows, {"concurrency": 8})
    out = tmp_path / "out"
    with server("--latency-ms", "30") as url:
        command = [sys.executable, "-m", "batchgen", "run", str(job), "--base-url", url, "--quiet"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with (tmp_path / "driver.log").open("wb") as log:
            driver = subprocess.Popen([*command, "--address", ray_address], stdout=log, stderr=log, env=env)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not list(out.glob("part-*.parquet")):
                assert driver.poll() is None, (tmp_path / "driver.log").read_text()
                time.sleep(0.05)
        finally:
            driver.kill()
            driver.wait()
        first = len(ids(out))
        assert 0 < first < rows
        assert run(job, url) == 0
        stats = server_stats(url)
    seen = ids(out)
    assert len(seen) == rows and set(seen.values()) == {1}
    manifest = orjson.loads((out / "_manifest.json").read_bytes())
    assert [r["exit_code"] for r in manifest["runs"]] == [None, 0]
    assert manifest["runs"][1]["skipped_rows"] == first
    assert stats["requests"] < 2 * rows
