"""Batch mode killed and interrupted, end to end: the real command (`python -m batchgen run --mode batch`) in a
subprocess against the local server in a process of its own, killed after its job is submitted, while it
downloads the results and while it writes them, or interrupted with Ctrl-C while it polls; then `status`,
`cancel` and reruns in this process. Each id is written once and each row submitted once (the server's
ledger counts each key's answers), and nothing is downloaded twice once it was kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as ds
import pytest
from conftest import demo_tree
from servers import server_process, server_stats

from batchgen.cli import main
from batchgen.results.batches import batch_dir, read_batches

ROOT = Path(__file__).resolve().parent.parent
KEY = "batch-crash-key-93d4"
ROWS = 1500
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    # Jobs pending a third of their 0.9 s; results files of ~1 MB, shuffled.
    with server_process("--api-key", KEY, "--batch-turnaround-s", "0.9", "--batch-pending-share", "0.3") as served:
        yield served


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)


def write_job(folder: Path, rows: int = ROWS) -> Path:
    """The demo job over `rows` generated reviews, polling every 20 ms, writing parts of 100 rows."""
    lines = (orjson.dumps({"id": f"r{i:05d}", "review": f"Review {i}: it works.", "stars": 3}) for i in range(rows))
    edits = {
        'path = "../out/demo"': 'path = "../out/batch"\nflush_rows = 100\nflush_seconds = 0.5',
        "[output]": "[batch]\npoll_s = 0.02\n\n[output]",
    }
    return demo_tree(folder, edits, reviews=b"\n".join(lines) + b"\n")


def out_of(job: Path) -> Path:
    return job.parent.parent / "out" / "batch"


def every_id(rows: int = ROWS) -> list[str]:
    return [f"r{i:05d}" for i in range(rows)]


class Run:
    """`python -m batchgen run JOB --mode batch` in a subprocess, its output in a file."""

    def __init__(self, job: Path, url: str) -> None:
        self.log = job.parent / f"run-{time.monotonic_ns()}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "batchgen", "run", str(job), "--base-url", url, "--mode", "batch"]
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)

    def wait_for(self, condition: Callable[[], bool], pace: float, timeout: float = 30) -> None:
        """Look every `pace` seconds: no faster than the point needs, since looking takes a core from the run
        (and from whatever test runs beside this one)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"the run ended before the point was reached:\n{self.output()}")
            assert time.monotonic() < deadline, "point not reached"
            time.sleep(pace)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
        run.process.wait()


def phase(job: Path) -> str | None:
    try:
        records = read_batches(out_of(job))
    except Exception:  # a record being replaced: look again
        return None
    return None if records is None or not records.jobs else records.jobs[0].phase


def downloading(job: Path) -> bool:
    folder = batch_dir(out_of(job))
    return folder.is_dir() and any(p.name.endswith(".results.jsonl.tmp") for p in folder.iterdir())


def writing(job: Path) -> bool:
    return phase(job) == "ended" and any(out_of(job).glob("part-*.parquet"))


# (point, how often to look): a 1,500-row results file takes about 10 ms to download and keep.
KILL_POINTS = [
    pytest.param(lambda job: phase(job) == "running", 0.01, id="after-submission"),
    pytest.param(downloading, 0.001, id="during-download"),
    pytest.param(writing, 0.005, id="while-writing-rows"),
]


class Ledger:
    """The server's batch counters since the test began."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.start = server_stats(url)

    def now(self) -> dict[str, Any]:
        stats = server_stats(self.url)
        answered = stats["batches"]["answers_by_key"]
        before = self.start["batches"]["answers_by_key"]
        return {
            "created": stats["batches"]["created"] - self.start["batches"]["created"],
            "downloads": stats["files"]["downloads"] - self.start["files"]["downloads"],
            "answers": {key: count - before.get(key, 0) for key, count in answered.items()},
        }


def ids(job: Path) -> list[str]:
    table = ds.dataset(out_of(job), format="parquet").to_table(columns=["id"])
    return sorted(table.column("id").to_pylist())


@pytest.mark.parametrize(("point", "pace"), KILL_POINTS)
def test_sigkill_then_rerun_submits_each_row_once_and_writes_each_id_once(
    tmp_path: Path, url: str, runs: list[Run], point: Callable[[Path], bool], pace: float
) -> None:
    """Killed at any point after its job exists, the rerun re-attaches to it: no second job, every key answered
    once, every id written once; a results file kept before the kill is not downloaded again."""
    job = write_job(tmp_path)
    ledger = Ledger(url)
    runs.append(run := Run(job, url))
    run.wait_for(lambda: point(job), pace)
    run.process.kill()
    run.process.wait()
    kept = (batch_dir(out_of(job)) / "s00001.results.jsonl").exists()
    assert main(["run", str(job), "--base-url", url, "--mode", "batch", "--quiet"]) == 0
    now = ledger.now()
    assert now["created"] == 1
    assert now["answers"] == dict.fromkeys(every_id(), 1)
    assert ids(job) == every_id()
    assert now["downloads"] == 1 if kept else now["downloads"] <= 2
    assert [record.phase for record in read_batches(out_of(job)).jobs] == ["collected"]  # type: ignore[union-attr]
    assert list(batch_dir(out_of(job)).iterdir()) == [batch_dir(out_of(job)) / "jobs.json"]


def test_ctrl_c_while_polling_leaves_the_job_running_says_how_to_reattach_and_cancel_releases_its_rows(
    tmp_path: Path, url: str, runs: list[Run], capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C: exit 130 at once, the job still at the Batch API, and the way back printed. `status` shows the job;
    `cancel` cancels it; the next run sends its rows again, each id written once."""
    job = write_job(tmp_path, rows=200)
    out = out_of(job)
    ledger = Ledger(url)
    runs.append(run := Run(job, url))
    run.wait_for(lambda: phase(job) == "running", 0.01)
    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(timeout=30) == 130
    said = run.output()
    assert "batch job(s) keep running at the Batch API: rerun the same command to collect their rows" in said
    assert f"batchgen status {out}" in said and f"batchgen cancel {out}" in said
    assert main(["status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "1 under way" in shown and "s00001  running" in shown
    assert main(["cancel", str(out)]) == 0
    assert "cancelled s00001" in capsys.readouterr().out
    assert main(["status", str(out), "--offline"]) == 0
    assert "s00001  released" in capsys.readouterr().out
    assert main(["run", str(job), "--base-url", url, "--mode", "batch", "--quiet"]) == 0
    assert ledger.now()["created"] == 2
    assert ids(job) == every_id(200)
    assert [record.phase for record in read_batches(out).jobs] == ["released", "collected"]  # type: ignore[union-attr]
