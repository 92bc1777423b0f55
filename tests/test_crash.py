"""Crash safety end to end: `batchgen run` killed, interrupted and fed bad input and bad answers.

The kill and signal tests run the real command (`python -m batchgen run`) as a subprocess against the local
Gemini server in a process of its own, kill it at chosen points, rerun it and compare the results folder with the
server's own ledger: every id exactly once, every part readable, and each paid-for response lost to a kill
bounded by what one flush interval and the requests in flight can hold.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from servers import server_process, server_stats

ROOT = Path(__file__).resolve().parent.parent
KEY = "crash-test-key-5b1c"
CONCURRENCY = 16
FLUSH_ROWS = 50
# What a SIGKILL may cost: the rows buffered since the last part, the part being written, and the requests in
# flight (the server bills a response the client never read).
KILL_LOSS_BOUND = 2 * (FLUSH_ROWS + CONCURRENCY)


def write_job(
    folder: Path,
    rows: int,
    *,
    review: Callable[[int], str] = lambda i: f"Review {i}: the kettle works, boils fast, a bit loud.",
    limits: str = "",
    rpm: int = 30000,
) -> Path:
    """The demo job, its schema and a generated input of `rows` reviews, in `folder`; small flush intervals."""
    for name in ("jobs", "data", "schemas"):
        (folder / name).mkdir(exist_ok=True)
    (folder / "schemas" / "sentiment.json").write_bytes((ROOT / "schemas" / "sentiment.json").read_bytes())
    lines = (orjson.dumps({"id": f"r{i:05d}", "review": review(i), "stars": i % 5 + 1}) for i in range(rows))
    (folder / "data" / "reviews.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    text = (ROOT / "jobs" / "demo.toml").read_text()
    edits = {
        "concurrency = 32": f"concurrency = {CONCURRENCY}",
        "requests_per_minute = 6000": f"requests_per_minute = {rpm}\n{limits}",
        'path = "../out/demo"': f'path = "../out/crash"\nflush_rows = {FLUSH_ROWS}\nflush_seconds = 0.5',
    }
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    job = folder / "jobs" / "demo.toml"
    job.write_text(text)
    return job


def out_of(job: Path) -> Path:
    return job.parent.parent / "out" / "crash"


@dataclass
class Run:
    """A `batchgen run` subprocess; its output goes to files so a full pipe can never stall it."""

    process: subprocess.Popen[bytes]
    log: Path

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start(job: Path, url: str, *flags: str) -> Run:
    log = job.parent / f"run-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GEMINI_API_KEY": KEY}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "batchgen", "run", str(job), "--base-url", url, *flags],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return Run(process, log)


def run_to_end(job: Path, url: str, *flags: str) -> int:
    run = start(job, url, *flags)
    code = run.wait()
    assert code in (0, 1, 3, 4, 130, 143), run.output()
    return code


def wait_for(condition: Callable[[], bool], run: Run, timeout: float = 30) -> None:
    """Poll `condition` at sub-millisecond pace (a test harness may poll) until it holds or the run ends."""
    deadline = time.monotonic() + timeout
    while not condition():
        if run.process.poll() is not None:
            raise AssertionError(f"the run ended before the kill point: {run.output()}")
        if time.monotonic() > deadline:
            raise AssertionError("kill point not reached")
        time.sleep(0.0002)


def names(folder: Path) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(folder)]
    except FileNotFoundError:
        return []


def parts(folder: Path) -> list[str]:
    return [n for n in names(folder) if n.startswith("part-") and n.endswith(".parquet")]


def temporaries(folder: Path) -> list[str]:
    return [n for n in names(folder) if n.endswith(".tmp")]


def after_parts(count: int) -> Callable[[Path], bool]:
    return lambda folder: len(parts(folder)) >= count


def during_flush(folder: Path) -> bool:
    """A part is being written, and others were written before it (so the kill costs some, not all)."""
    return any(n.startswith(".part-") for n in temporaries(folder)) and len(parts(folder)) >= 2


def during_compaction(folder: Path) -> bool:
    return any("-c" in n.rsplit("-", 1)[-1] for n in parts(folder))


def check_parts(folder: Path) -> pa.Table:
    """Every part is a whole Parquet file and no half-written file is visible; all rows, in one table."""
    visible = [n for n in names(folder) if not n.startswith((".", "_"))]
    assert all(n.startswith("part-") and n.endswith(".parquet") for n in visible), visible
    tables = [pq.read_table(folder / n) for n in sorted(parts(folder))]
    dataset = ds.dataset(folder, format="parquet").to_table()
    assert dataset.num_rows == sum(t.num_rows for t in tables)
    return dataset


def manifest(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((folder / "_manifest.json").read_bytes())
    return data


def ids(table: pa.Table) -> list[str]:
    return sorted(table.column("id").to_pylist())


def every_id(rows: int) -> list[str]:
    return [f"r{i:05d}" for i in range(rows)]


# --- SIGKILL at several points, then a rerun -------------------------------------------------------------------


def kill_when(job: Path, url: str, point: Callable[[Path], bool]) -> list[str]:
    """Start a run, SIGKILL it once `point` holds for its results folder; the temporaries it left behind."""
    out = out_of(job)
    stale = set(temporaries(out))
    run = start(job, url)
    wait_for(lambda: point(out), run)
    run.process.kill()
    run.wait()
    return sorted(set(temporaries(out)) - stale)


def kill_during_flush(job: Path, url: str, tries: int = 3) -> int:
    """SIGKILL runs while a part is being written until one dies with it half-written; the kills made.

    The test sees the temporary file within a fraction of a millisecond while writing it takes a few, so the
    first kill nearly always lands; a run that finished its part first is simply killed again.
    """
    for kill in range(1, tries + 1):
        left = kill_when(job, url, during_flush)
        if any(n.startswith(".part-") for n in left):
            return kill
    raise AssertionError(f"no kill landed during a flush in {tries} tries")


KILL_POINTS = [
    pytest.param(lambda job, url: len([kill_when(job, url, after_parts(1))]), id="early"),
    pytest.param(lambda job, url: len([kill_when(job, url, after_parts(8))]), id="mid"),
    pytest.param(kill_during_flush, id="during-flush"),
]


@pytest.mark.parametrize("kill", KILL_POINTS)
def test_sigkill_then_rerun_keeps_every_id_once_and_resends_only_what_was_lost(
    tmp_path: Path, kill: Callable[[Path, str], int]
) -> None:
    """A SIGKILL leaves only whole parts; the rerun sends exactly the rows not written, so each id is stored
    once, and the responses a kill cost (billed but never written) stay within one interval plus the requests
    in flight."""
    rows = 1000
    job = write_job(tmp_path, rows)
    out = out_of(job)
    with server_process("--api-key", KEY, "--latency-ms", "20") as url:
        kills = kill(job, url)
        written = check_parts(out)
        assert 0 < written.num_rows < rows
        assert len(set(ids(written))) == written.num_rows
        assert run_to_end(job, url) == 0
        ledger = server_stats(url)
    table = check_parts(out)
    assert ids(table) == every_id(rows)
    assert temporaries(out) == []
    *killed, rerun = manifest(out)["runs"]
    assert len(killed) == kills and all(run["ended_at"] is None and run["exit_code"] is None for run in killed)
    assert rerun["ended_at"] is not None and rerun["exit_code"] == 0
    # The rerun sent exactly the rows that were not written, once each.
    assert rerun["rows"] == rows - written.num_rows and rerun["skipped_rows"] == written.num_rows
    assert sum(table.column("responses").to_pylist()) == rows
    lost = ledger["billed_responses"] - rows
    assert 0 <= lost <= kills * KILL_LOSS_BOUND
