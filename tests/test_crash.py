"""Crash safety end to end: `batchgen run` killed, interrupted and fed bad input and bad answers.

The kill and signal tests run the real command (`python -m batchgen run`) as a subprocess against the local
Gemini server in a process of its own, kill it at chosen points, rerun it and compare the results folder with the
server's own ledger: every id exactly once, every part readable, and each paid-for response lost to a kill
bounded by what one flush interval and the requests in flight can hold.
"""

from __future__ import annotations

import fcntl
import os
import shutil
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
from conftest import demo_tree
from servers import server_process, server_stats

from batchgen.cli import main

ROOT = Path(__file__).resolve().parent.parent
KEY = "crash-test-key-5b1c"
CONCURRENCY = 16
FLUSH_ROWS = 50
# What a SIGKILL may cost: the rows buffered since the last part, the part being written, and the requests in
# flight (the server bills a response the client never read).
KILL_LOSS_BOUND = 2 * (FLUSH_ROWS + CONCURRENCY)

# Kill points and signal timings are caught on the wall clock. pytest-xdist (--dist loadfile) runs a module's
# tests one after another on one worker, so no two of these compete for the CPU; `slow` starts the module first.
pytestmark = pytest.mark.slow


def write_job(
    folder: Path,
    rows: int,
    *,
    review: Callable[[int], str] = lambda i: f"Review {i}: the kettle works, boils fast, a bit loud.",
    limits: str = "",
    rpm: int = 30000,
    max_attempts: int = 6,
    small_flushes: bool = True,
) -> Path:
    """The demo job, its schema and a generated input of `rows` reviews, in `folder`; small flush intervals
    unless `small_flushes` is false (then the job's defaults).

    `limits` holds extra `[limits]` lines.
    """
    lines = (orjson.dumps({"id": f"r{i:05d}", "review": review(i), "stars": i % 5 + 1}) for i in range(rows))
    flushes = f"\nflush_rows = {FLUSH_ROWS}\nflush_seconds = 0.5" if small_flushes else ""
    edits = {
        "concurrency = 32": f"concurrency = {CONCURRENCY}",
        "max_attempts = 6": f"max_attempts = {max_attempts}",
        "requests_per_minute = 6000": f"requests_per_minute = {rpm}\n{limits}",
        'path = "../out/demo"': f'path = "../out/crash"{flushes}',
    }
    return demo_tree(folder, edits, reviews=b"\n".join(lines) + b"\n")


def out_of(job: Path) -> Path:
    return job.parent.parent / "out" / "crash"


@dataclass
class Run:
    """A `batchgen run` subprocess; its stdout and stderr go to files so a full pipe can never stall it."""

    process: subprocess.Popen[bytes]
    log: Path
    errors: Path

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=timeout)

    def stdout(self) -> str:
        return self.log.read_text(errors="replace")

    def stderr(self) -> str:
        return self.errors.read_text(errors="replace")

    def output(self) -> str:
        return self.stdout() + self.stderr()


_STARTED: list[Run] = []


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test() -> Iterator[None]:
    yield
    while _STARTED:
        run = _STARTED.pop()
        if run.process.poll() is None:
            run.process.kill()
        run.process.wait()


def start(job: Path, url: str, *flags: str) -> Run:
    """Start `python -m batchgen run JOB --base-url URL FLAGS...` with the test key."""
    stamp = time.monotonic_ns()
    log, errors = job.parent / f"run-{stamp}.log", job.parent / f"run-{stamp}.err"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GEMINI_API_KEY": KEY}
    with log.open("wb") as out, errors.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "batchgen", "run", str(job), "--base-url", url, *flags],
            stdout=out,
            stderr=err,
            env=env,
        )
    _STARTED.append(Run(process, log, errors))
    return _STARTED[-1]


def run_here(job: Path, url: str, *flags: str) -> int:
    """`batchgen run` in this process: a rerun needs no subprocess, and saves its start-up time."""
    return main(["run", str(job), "--base-url", url, *flags])


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)


@dataclass(frozen=True)
class Server:
    """The module's local Gemini server (20 ms latency, `slow` faults stall 30 s), and its ledger as it stood
    when the test began."""

    url: str
    baseline: dict[str, Any]

    def ledger(self) -> dict[str, Any]:
        """Requests received, responses billed and tokens billed since the test began."""
        now = server_stats(self.url)
        billed = {name: count - self.baseline["billed"][name] for name, count in now["billed"].items()}
        return {
            "requests": now["requests"] - self.baseline["requests"],
            "billed_responses": now["billed_responses"] - self.baseline["billed_responses"],
            "billed": billed,
        }


@pytest.fixture(scope="module")
def _server_url() -> Iterator[str]:
    # One server for the module saves a start-up per test. A request the client gives up on is cancelled on
    # the server too (nothing billed later), so a test's stalled requests never reach another test's ledger.
    with server_process("--api-key", KEY, "--latency-ms", "20", "--slow-s", "30") as url:
        yield url


@pytest.fixture
def server(_server_url: str) -> Server:
    return Server(_server_url, server_stats(_server_url))


def wait_for(condition: Callable[[], bool], run: Run, timeout: float = 30, pace: float = 0.0002) -> None:
    """Poll `condition` every `pace` seconds (a test harness may poll) until it holds or the run ends; the
    default, sub-millisecond, catches a file that exists for a few milliseconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if run.process.poll() is not None:
            raise AssertionError(f"the run ended before the kill point: {run.output()}")
        if time.monotonic() > deadline:
            raise AssertionError("kill point not reached")
        time.sleep(pace)


def wait_for_requests(server: Server, count: int, run: Run) -> None:
    """Wait until the server has received more than `count` requests since the test began. Each look is an
    HTTP request to the server, so it looks every 10 ms: polling it flat out took CPU from the run under
    test (two seconds more to reach the point) and stalled requests keep the count where it is anyway."""
    wait_for(lambda: server.ledger()["requests"] > count, run, pace=0.01)


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


def compacted(folder: Path) -> set[str]:
    """The parts compaction wrote (`part-RUN-cNNNNN.parquet`)."""
    return {n for n in parts(folder) if n.rsplit("-", 1)[-1].startswith("c")}


def during_compaction(before: set[str]) -> Callable[[Path], bool]:
    """Compaction has rewritten a first part since `before` (the compacted parts earlier runs left)."""
    return lambda folder: bool(compacted(folder) - before)


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


def kill_once(point: Callable[[Path], bool]) -> Callable[[Path, str], int]:
    def kill(job: Path, url: str) -> int:
        kill_when(job, url, point)
        return 1

    return kill


KILL_POINTS = [
    pytest.param(kill_once(after_parts(1)), id="early"),
    pytest.param(kill_once(after_parts(4)), id="mid"),
    pytest.param(kill_during_flush, id="during-flush"),
]


@pytest.mark.parametrize("kill", KILL_POINTS)
def test_sigkill_then_rerun_keeps_every_id_once_and_resends_only_what_was_lost(
    tmp_path: Path, key: None, server: Server, kill: Callable[[Path, str], int]
) -> None:
    """A SIGKILL leaves only whole parts; the rerun sends exactly the rows not written, so each id is stored
    once, and the responses a kill cost (billed but never written) stay within one interval plus the requests
    in flight."""
    rows = 400
    job = write_job(tmp_path, rows)
    out = out_of(job)
    kills = kill(job, server.url)
    written = check_parts(out)
    assert 0 < written.num_rows < rows
    assert len(set(ids(written))) == written.num_rows
    assert run_here(job, server.url) == 0
    ledger = server.ledger()
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
    # The killed runs' small parts were merged by the rerun: at most one part is under half the flush size.
    small = [n for n in parts(out) if pq.ParquetFile(out / n).metadata.num_rows < FLUSH_ROWS // 2]
    assert len(small) <= 1, small


def test_with_the_default_flush_interval_a_sigkill_loses_seconds_of_answers_not_a_first_flush(
    tmp_path: Path, key: None, server: Server
) -> None:
    """The default `flush_seconds` (2 s) bounds what a SIGKILL loses: the answers of the last two seconds and
    the requests out. With the old 10 s, a run killed a few seconds in had written nothing at all."""
    rate = 40  # rows a second (rpm 2,400)
    job = write_job(tmp_path, 2000, rpm=rate * 60, small_flushes=False)
    run = start(job, server.url, "--quiet")
    wait_for(lambda: server.ledger()["billed_responses"] >= 4 * rate, run, pace=0.01)
    run.process.kill()
    run.wait()
    billed = server.ledger()["billed_responses"]
    written = check_parts(out_of(job)).num_rows if parts(out_of(job)) else 0
    assert billed - written <= 2 * rate + CONCURRENCY + 10, (billed, written)


def test_sigkill_during_compaction_leaves_readable_parts_and_the_next_run_finishes_it(
    tmp_path: Path, key: None, server: Server
) -> None:
    """A rerun that retries `failed` rows supersedes older rows, and compaction rewrites their parts one by
    one; killed midway, the folder still holds every id in whole parts, and the next run completes the
    compaction without sending anything."""
    rows = 400
    # Every third row's first attempt gets a 500: with one attempt allowed it fails, and its retry succeeds.
    job = write_job(
        tmp_path,
        rows,
        review=lambda i: f"compaction {i}" + (" [[fake:500*1]]" if i % 3 == 0 else ""),
        max_attempts=1,
        limits="max_failed_fraction = 1.0",
    )
    out = out_of(job)
    assert run_here(job, server.url) == 0
    failed = check_parts(out).column("status").to_pylist().count("failed")
    assert failed == len(range(0, rows, 3))
    kill_when(job, server.url, during_compaction(compacted(out)))
    killed = check_parts(out)
    assert set(ids(killed)) == set(every_id(rows))
    assert killed.num_rows > rows, "the kill landed after compaction had finished"
    assert server.ledger()["requests"] == rows + failed
    assert run_here(job, server.url) == 0
    assert server.ledger()["requests"] == rows + failed
    table = check_parts(out)
    assert ids(table) == every_id(rows)
    assert set(table.column("status").to_pylist()) == {"ok"}
    assert [run["exit_code"] for run in manifest(out)["runs"]] == [0, None, 0]


# --- Ctrl-C and SIGTERM -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "code"), [pytest.param(signal.SIGINT, 130, id="SIGINT"), pytest.param(signal.SIGTERM, 143, id="SIGTERM")]
)
def test_signal_stops_cleanly_writes_every_response_and_the_rerun_pays_nothing_twice(
    tmp_path: Path, key: None, server: Server, signum: signal.Signals, code: int
) -> None:
    """The first Ctrl-C or SIGTERM stops taking rows, lets those in flight finish, flushes, records the run
    and exits 130 / 143; every response received is in the results, so the rerun sends only the rest."""
    rows = 400
    job = write_job(tmp_path, rows)
    out = out_of(job)
    run = start(job, server.url)
    wait_for(lambda: len(parts(out)) >= 2, run)
    run.process.send_signal(signum)
    assert run.wait(30) == code, run.output()
    again = "press Ctrl-C again to quit now" if signum == signal.SIGINT else "send SIGTERM again to quit now"
    assert f"stopping on {signum.name}" in run.stderr() and again in run.stderr()
    stopped = check_parts(out)
    assert 0 < stopped.num_rows < rows and len(set(ids(stopped))) == stopped.num_rows
    assert sum(stopped.column("responses").to_pylist()) == server.ledger()["billed_responses"]
    record = manifest(out)["runs"][-1]
    assert record["ended_at"] is not None and record["exit_code"] == code
    assert record["rows"] == stopped.num_rows
    assert run_here(job, server.url) == 0
    ledger = server.ledger()
    table = check_parts(out)
    assert ids(table) == every_id(rows)
    assert ledger["billed_responses"] == rows


def test_second_interrupt_quits_at_once_and_still_reports_in_json(tmp_path: Path, server: Server) -> None:
    """A second Ctrl-C does not wait for the rows in flight: the run exits 130 at once, what was received is
    flushed whole, the run is recorded as ended, the summary is printed and `run_finished` is logged; with
    `--log-format json` every line on stderr is a JSON object, the stopping notices included."""
    job = write_job(tmp_path, 200, review=lambda i: "fast" if i == 0 else "[[fake:slow]] stalls")
    out = out_of(job)
    run = start(job, server.url, "--log-format", "json")
    # The first row (alone, fast) is answered; then every worker waits on a stalled request.
    wait_for_requests(server, CONCURRENCY, run)
    run.process.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping" in run.stderr(), run, pace=0.01)
    began = time.monotonic()
    run.process.send_signal(signal.SIGINT)
    assert run.wait(20) == 130
    assert time.monotonic() - began < 10  # the grace period is 30 s
    table = check_parts(out)
    assert ids(table) == ["r00000"] and temporaries(out) == []
    record = manifest(out)["runs"][-1]
    assert record["ended_at"] is not None and record["exit_code"] == 130
    events = [orjson.loads(line) for line in run.stderr().splitlines()]  # each line parses
    names = [event["event"] for event in events]
    assert names[0] == "run_started" and names[-1] == "run_finished", names
    assert {"stopping", "quitting"} <= set(names)
    assert events[-1]["exit_code"] == 130 and events[-1]["rows"] == 1 and events[-1]["stopped_by"] == "Interrupted"
    assert "run " in run.stdout() and ": 1 rows (ok 1)" in run.stdout()


@pytest.mark.parametrize(
    "signum", [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]
)
def test_after_a_signal_rows_waiting_on_the_rate_limiter_are_not_sent(
    tmp_path: Path, key: None, server: Server, signum: signal.Signals
) -> None:
    """Stopping means stopping: rows queued at the rate limiter when the signal comes are never sent (the
    rerun sends them), so the run ends as soon as the requests already out are answered, not after a grace
    period spent sending more."""
    job = write_job(tmp_path, 200, rpm=240)  # 4 requests a second: most of the 16 workers wait for admission
    run = start(job, server.url, "--log-format", "json")
    wait_for_requests(server, 4, run)
    run.process.send_signal(signum)
    at_signal = server.ledger()["requests"]
    began = time.monotonic()
    assert run.wait(20) == (130 if signum == signal.SIGINT else 143), run.output()
    assert time.monotonic() - began < 5  # the grace period is 30 s
    # A request admitted the moment the signal came may still go out; the queue behind it does not.
    assert server.ledger()["requests"] - at_signal <= 1
    stopping = next(orjson.loads(line) for line in run.stderr().splitlines() if '"stopping"' in line)
    assert stopping["signal"] == signum.name
    written = check_parts(out_of(job)).num_rows if parts(out_of(job)) else 0
    assert written == server.ledger()["billed_responses"]


@pytest.mark.parametrize("slow_from", [pytest.param(0, id="first-request"), pytest.param(1, id="rows-in-flight")])
def test_grace_period_bounds_the_wait_for_rows_in_flight(tmp_path: Path, server: Server, slow_from: int) -> None:
    """After SIGTERM, rows still in flight when `[limits] grace_s` runs out are cancelled, unwritten (the next
    run sends them), and the run exits 143: whether the first request is still out alone or many are."""
    job = write_job(tmp_path, 50, review=lambda i: "fast" if i < slow_from else "[[fake:slow]]", limits="grace_s = 1")
    out = out_of(job)
    run = start(job, server.url)
    wait_for_requests(server, CONCURRENCY if slow_from else 0, run)
    began = time.monotonic()
    run.process.send_signal(signal.SIGTERM)
    assert run.wait(20) == 143, run.output()
    assert time.monotonic() - began < 10
    written = check_parts(out) if parts(out) else None
    assert (written.num_rows if written is not None else 0) == slow_from
    record = manifest(out)["runs"][-1]
    assert record["ended_at"] is not None and record["exit_code"] == 143 and record["rows"] == slow_from


# --- Exit codes for schedulers ----------------------------------------------------------------------------------


def test_force_after_changing_the_prompt_sends_the_rows_again_and_replaces_their_answers(
    tmp_path: Path, key: None, server: Server
) -> None:
    """A changed job is refused in the old folder; with --force it sends the old job's rows again (it sent 0
    and kept the old answers), a limited forced run leaves the rest for the next plain run, and in the end
    every row answers the changed job, once."""
    job = write_job(tmp_path, 30)
    assert run_here(job, server.url) == 0
    edit(job, "Classify the sentiment", "Rate the sentiment")
    assert run_here(job, server.url) == 2
    assert run_here(job, server.url, "--force", "--limit", "10") == 0
    assert server.ledger()["requests"] == 30 + 10
    assert run_here(job, server.url) == 0  # the job is the changed one now: no --force, the other 20 go out
    assert run_here(job, server.url) == 0  # and then nothing
    assert server.ledger()["requests"] == 30 + 10 + 20
    out = out_of(job)
    table = check_parts(out)
    assert ids(table) == every_id(30)
    runs = manifest(out)["runs"]
    assert set(table.column("run_id").to_pylist()) == {runs[1]["run_id"], runs[2]["run_id"]}
    assert runs[0]["fingerprint"] != runs[1]["fingerprint"] == runs[2]["fingerprint"]


def test_exit_1_when_no_row_succeeded_whatever_max_failed_fraction_allows(
    tmp_path: Path, key: None, server: Server
) -> None:
    """A job whose every row failed did not succeed, and a scheduler must hear it: exit 1 with the default
    `max_failed_fraction` (0.1), and still exit 1 when the job allows every row to fail."""
    job = write_job(tmp_path, 20, review=lambda i: f"[[fake:500]] row {i}", max_attempts=1)
    assert run_here(job, server.url) == 1
    edit(job, "max_attempts = 1", "max_attempts = 1\nmax_failed_fraction = 1.0")
    assert run_here(job, server.url) == 1  # the failed rows are retried, and fail again
    assert set(check_parts(out_of(job)).column("status").to_pylist()) == {"failed"}
    assert [run["exit_code"] for run in manifest(out_of(job))["runs"]] == [1, 1]


def test_exit_1_judges_failed_rows_over_the_whole_job_not_the_last_run(
    tmp_path: Path, key: None, server: Server
) -> None:
    """Exit 1 when more of the job's rows ended `failed` than `max_failed_fraction` allows, counted over the
    results folder: a resumed run whose own few rows fail is fine if the job is, and a rerun that keeps the
    failed rows (`--no-retry-failed`) still reports them."""
    job = write_job(tmp_path, 100, review=lambda i: "[[fake:500]]" if i >= 90 else "fine", max_attempts=1)
    edit(job, "max_attempts = 1", "max_attempts = 1\nmax_failed_fraction = 0.15")
    assert run_here(job, server.url, "--limit", "80") == 0
    assert run_here(job, server.url) == 0  # 10 of this run's 20 rows failed, 10 of the job's 100
    edit(job, "max_failed_fraction = 0.15", "max_failed_fraction = 0.05")
    assert run_here(job, server.url, "--no-retry-failed") == 1
    assert server.ledger()["requests"] == 100
    assert run_here(job, server.url) == 1  # retried, failed again
    assert server.ledger()["requests"] == 110
    table = check_parts(out_of(job))
    assert ids(table) == every_id(100)
    assert table.column("status").to_pylist().count("failed") == 10
    assert [run["exit_code"] for run in manifest(out_of(job))["runs"]] == [0, 0, 1, 1]


def edit(job: Path, old: str, new: str) -> None:
    text = job.read_text()
    assert old in text, old
    job.write_text(text.replace(old, new))


def truncated_parquet(folder: Path) -> Path:
    path = folder / "data" / "reviews.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "review": ["good", "bad"], "stars": [5, 1]}), path)
    path.write_bytes(path.read_bytes()[:-20])
    return path


def empty_input_folder(job: Path) -> None:
    (job.parent.parent / "empty").mkdir()
    edit(job, "data/reviews.jsonl", "empty")


EXIT_2_CASES = [
    pytest.param(lambda job: edit(job, "concurrency = 16", "concurrency = 0"), "limits.concurrency", id="bad-job"),
    pytest.param(lambda job: edit(job, "reviews.jsonl", "missing.jsonl"), "does not exist", id="no-input"),
    pytest.param(
        empty_input_folder,
        "no .jsonl or .parquet files in the input folder",
        id="empty-input-folder",
    ),
    pytest.param(
        lambda job: edit(job, "reviews.jsonl", truncated_parquet(job.parent.parent).name),
        "reviews.parquet: not a readable Parquet file",
        id="truncated-parquet",
    ),
    pytest.param(lambda job: edit(job, "sentiment.json", "absent.json"), "absent.json", id="missing-schema"),
]


@pytest.mark.parametrize(("spoil", "message"), EXIT_2_CASES)
def test_exit_2_on_a_bad_job_or_input_names_it_and_sends_nothing(
    tmp_path: Path,
    key: None,
    server: Server,
    capsys: pytest.CaptureFixture[str],
    spoil: Callable[[Path], None],
    message: str,
) -> None:
    """A job file, schema or input that cannot be used stops the run before any request, with exit 2 and a
    message naming the file (and key)."""
    job = write_job(tmp_path, 10)
    spoil(job)
    assert run_here(job, server.url) == 2
    assert server.ledger()["requests"] == 0
    assert message in capsys.readouterr().err


def test_exit_2_when_the_folder_holds_another_job_or_another_run_is_writing_it(
    tmp_path: Path, key: None, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """A changed job into the same folder is refused (unless --force), and so is a second run while one is
    still writing there: it would resend every row not yet written. Neither sends anything."""
    job = write_job(tmp_path, 10)
    out = out_of(job)
    assert run_here(job, server.url, "--limit", "4") == 0
    assert run_here(job, server.url, "--model", "gemini-2.5-flash-lite") == 2
    assert "different job" in capsys.readouterr().err
    with (out / ".batchgen.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert run_here(job, server.url) == 2
    assert "another batchgen run" in capsys.readouterr().err
    assert server.ledger()["requests"] == 4
    assert run_here(job, server.url) == 0
    assert ids(check_parts(out)) == every_id(10)


def test_exit_3_on_a_spent_daily_quota_keeps_every_response_and_resumes(
    tmp_path: Path, key: None, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """A per-day 429 stops the job with exit 3; the rows answered meanwhile are all written (nothing paid is
    lost), and a rerun once the quota is back (here: on another server) finishes the job."""
    rows = 60
    job = write_job(tmp_path, rows)
    out = out_of(job)
    with server_process("--api-key", KEY, "--rpd", "5", "--latency-ms", "20") as url:
        assert run_here(job, url) == 3
        ledger = server_stats(url)
    assert "stopped" in capsys.readouterr().err
    stopped = check_parts(out)
    assert stopped.num_rows == ledger["billed_responses"] == 5
    assert set(stopped.column("status").to_pylist()) == {"ok"}
    assert run_here(job, server.url) == 0
    assert server.ledger()["billed_responses"] == rows - 5
    assert ids(check_parts(out)) == every_id(rows)
    assert [run["exit_code"] for run in manifest(out)["runs"]] == [3, 0]


# --- Bad input and bad answers ----------------------------------------------------------------------------------


def plain_job(folder: Path, lines: bytes, *, limits: str = "", request: str = "") -> Path:
    """A text-mode job whose rows carry their own `prompt`; input `in.jsonl`, results in `out`."""
    (folder / "in.jsonl").write_bytes(lines)
    job = folder / "job.toml"
    job.write_text(
        'model = "gemini-2.5-flash"\n'
        '[input]\npath = "in.jsonl"\nid_field = "id"\nprompt_field = "prompt"\n'
        '[output]\npath = "out"\n'
        # Every failure allowed: these jobs show what becomes of bad rows, not how a run exits with them.
        f"[limits]\nconcurrency = 4\nmax_attempts = 2\nmax_failed_fraction = 1.0\n{limits}\n"
        f"[request]\n{request}\n"
    )
    return job


BAD_LINES = [
    (b'{"id": "a", "prompt": "hello"}', "a", None),
    (b'{"id": "b", "prompt": ', "line:2", "line 2: malformed JSON line"),
    (b'{"id": "c", "prompt": "caf\xe9"}', "line:3", "line 3: not valid UTF-8: byte 0xe9 at column 27"),
    (b"[1, 2, 3]", "line:4", "line 4: row is a JSON list, not an object"),
    (b'{"id": "e", "prompt": 42}', "e", "line 5: prompt field 'prompt' is missing or not a string"),
    (b'{"id": "f", "prompt": "  "}', "f", "line 6: prompt is empty"),
    (b'{"id": 7.5, "prompt": "hi"}', "line:7", "line 7: id field 'id' is missing or not a string/integer"),
    (b"", None, None),  # a blank line is not a row
    (b'{"id": "i", "prompt": "fine"}', "i", None),
]


def test_bad_input_lines_become_failed_rows_naming_file_and_line_and_are_never_sent(
    tmp_path: Path, key: None, server: Server
) -> None:
    """Malformed JSON, non-UTF-8 bytes, a row of the wrong type, a prompt of the wrong type or empty, an id of
    the wrong type: each line is one `failed` row whose error names the file and line, nothing is sent for it,
    the good rows go through, and a rerun (which retries failed rows) still stores each exactly once."""
    job = plain_job(tmp_path, b"\n".join(line for line, _, _ in BAD_LINES) + b"\n")
    assert run_here(job, server.url) == 0
    assert run_here(job, server.url) == 0
    assert server.ledger()["requests"] == 2
    rows = {row["id"]: row for row in check_parts(tmp_path / "out").to_pylist()}
    expected = {row_id: problem for _, row_id, problem in BAD_LINES if row_id is not None}
    assert sorted(rows) == sorted(expected)
    for row_id, problem in expected.items():
        if problem is None:
            assert rows[row_id]["status"] == "ok"
        else:
            assert rows[row_id]["status"] == "failed" and rows[row_id]["attempts"] == 0
            assert f"{tmp_path / 'in.jsonl'} {problem}" in rows[row_id]["error"]


def test_a_row_over_max_prompt_tokens_fails_locally(tmp_path: Path, key: None, server: Server) -> None:
    """A row whose token estimate exceeds `max_prompt_tokens` fails before sending, saying so; others go."""
    lines = [orjson.dumps({"id": "short", "prompt": "hello"}), orjson.dumps({"id": "long", "prompt": "word " * 400})]
    job = plain_job(tmp_path, b"\n".join(lines), limits="max_prompt_tokens = 100")
    assert run_here(job, server.url) == 0
    assert server.ledger()["requests"] == 1
    rows = {row["id"]: row for row in check_parts(tmp_path / "out").to_pylist()}
    assert rows["short"]["status"] == "ok"
    assert rows["long"]["status"] == "failed" and "over max_prompt_tokens=100" in rows["long"]["error"]
    assert "line 2" in rows["long"]["error"]


BAD_ANSWERS = [
    pytest.param("nonjson", "", "MalformedResponse", id="non-json-200"),
    pytest.param("nocandidates", "", "no candidates", id="no-candidates"),
    pytest.param("sse_cut", "", "TransportError", id="unary-cut"),
    pytest.param("sse_cut", "stream = true", "stream cut before its final event", id="stream-cut"),
]


@pytest.mark.parametrize(("fault", "request_lines", "message"), BAD_ANSWERS)
def test_bad_answers_are_retried_then_fail_the_row_with_a_clear_error(
    tmp_path: Path, key: None, server: Server, fault: str, request_lines: str, message: str
) -> None:
    """An HTTP 200 that is not JSON or has no candidates, and an answer cut off mid-body or mid-event, are
    retried; a one-off is then answered, a persistent one fails its row (after max_attempts) saying why.
    Nothing is billed for them, and the results add up to the server's ledger."""
    # The server counts a directive's attempts per request body: the test's own name keeps the bodies its own.
    lines = [
        orjson.dumps({"id": "once", "prompt": f"[[fake:{fault}*1]] tell me ({tmp_path.name})"}),
        orjson.dumps({"id": "always", "prompt": f"[[fake:{fault}]] tell me ({tmp_path.name})"}),
        orjson.dumps({"id": "clean", "prompt": "tell me"}),
    ]
    job = plain_job(tmp_path, b"\n".join(lines), request=request_lines)
    assert run_here(job, server.url) == 0
    ledger = server.ledger()
    table = check_parts(tmp_path / "out")
    rows = {row["id"]: row for row in table.to_pylist()}
    assert (rows["once"]["status"], rows["once"]["attempts"]) == ("ok", 2)
    assert (rows["always"]["status"], rows["always"]["attempts"]) == ("failed", 2)
    assert message in rows["always"]["error"] and "after 2 attempt(s)" in rows["always"]["error"]
    assert rows["clean"]["status"] == "ok"
    assert sum(table.column("responses").to_pylist()) == ledger["billed_responses"] == 2
    assert pa.compute.sum(table.column("total_token_count")).as_py() == ledger["billed"]["totalTokenCount"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 160 KiB tmpfs (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs: {exc}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False, capture_output=True)


def test_full_disk_stops_with_exit_3_keeps_whole_parts_and_resumes(
    tmp_path: Path, key: None, server: Server, small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """When the results disk fills up the run stops with exit 3 and says why; the parts already written stay
    whole and readable, no half-written part is visible, and once there is room a rerun finishes the job."""
    rows = 400
    job = write_job(tmp_path, rows, review=lambda i: f"{i} " + os.urandom(240).hex())
    out = small_disk / "out"
    assert run_here(job, server.url, "--output", str(out)) == 3
    assert "No space left on device" in capsys.readouterr().err
    written = check_parts(out)
    assert 0 < written.num_rows < rows and len(set(ids(written))) == written.num_rows
    # The manifest is replaced whole or not at all; recording the exit code needs room too, so it may be missing.
    assert manifest(out)["runs"][0]["exit_code"] in (3, None)
    billed = server.ledger()["billed_responses"]
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    assert run_here(job, server.url, "--output", str(moved)) == 0
    assert server.ledger()["billed_responses"] - billed == rows - written.num_rows
    table = check_parts(moved)
    assert ids(table) == every_id(rows) and temporaries(moved) == []
