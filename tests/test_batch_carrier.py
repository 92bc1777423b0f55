"""Batch mode end to end over HTTP against the local server: the same rows as online, results joined by key
(shuffled, error lines in both shapes, missing keys), lost jobs resubmitted once, the deadline's fallback
online or to Flex, re-asks as a follow-up job or online, the concurrent-job limit, a create whose answer was
lost, and a stopped run re-attached without submitting anything twice. Jobs turn around in a fraction of a
second and are polled every 50 ms."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from batchgen import api
from batchgen.batch import control
from batchgen.batch.carrier import BatchCarrier
from batchgen.batch.client import BatchClient
from batchgen.errors import AuthError, ConfigError, ExitCode, Interrupted, TransportError
from batchgen.fakeserver import BatchConfig, FakeServer, ServerConfig, TierConfig
from batchgen.fakeserver.batch.runner import Timeline
from batchgen.gemini.batch import Operation
from batchgen.job import Job, job_from_dict
from batchgen.online.retry import Retrier, RetryPolicy
from batchgen.pipeline import LiveRun, RunSummary
from batchgen.records import Status
from batchgen.results.batches import read_batches
from batchgen.secret import ApiKey

ROOT = Path(__file__).resolve().parent.parent
KEY = "batch-mode-key-2c9e"
# Jobs are waited for in real time: `slow` starts the module first under pytest-xdist.
pytestmark = [pytest.mark.slow, pytest.mark.anyio]

# Rows whose prompts carry the local server's directives (see batchgen.fakeserver), beside plain ones.
PLAIN = [f"The kettle number {i} boils fast and looks good." for i in range(12)]
FAULTY = {
    "bad-json": "Invalid once [[fake:invalid_json*1]]",
    "off-schema": "Off the schema once [[fake:schema_violation*1]]",
    "cut": "Cut once [[fake:max_tokens*1]]",
    "blocked": "Blocked [[fake:blocked]]",
    "safety": "Stopped [[fake:safety]]",
}


def serve(**batch: Any) -> FakeServer:
    tiers = batch.pop("tiers", TierConfig())
    settings = {"turnaround_s": 0.2, **batch}
    return FakeServer(ServerConfig(api_key=KEY, seed=7, batch=BatchConfig(**settings), tiers=tiers))


def make_job(folder: Path, texts: Mapping[str, str], **batch: Any) -> Job:
    """The demo's request (JSON mode, a schema, typed columns) over `texts` by id, results in `folder/out`."""
    data = folder / "in.jsonl"
    data.write_bytes(
        b"".join(orjson.dumps({"id": key, "review": text, "stars": 3}) + b"\n" for key, text in texts.items())
    )
    schema = orjson.loads((ROOT / "schemas" / "sentiment.json").read_bytes())
    return job_from_dict(
        {
            "model": "gemini-2.5-flash",
            "input": {"path": str(data), "id_field": "id", "prompt_template": "Classify: {review}"},
            "request": {
                "systemInstruction": {"parts": [{"text": "Answer with JSON only."}]},
                "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema},
            },
            "limits": {"concurrency": 8, "max_attempts": 3, "grace_s": 2},
            "batch": {"poll_s": 0.05, **batch},
            "output": {"path": str(folder / "out"), "keep_columns": ["stars"]},
        }
    )


def texts(*extra: str, plain: int = 12) -> dict[str, str]:
    chosen = {f"p{i:02d}": text for i, text in enumerate(PLAIN[:plain])}
    return chosen | {key: FAULTY[key] for key in extra}


async def run(
    job: Job, server: FakeServer, on_start: Callable[[LiveRun], None] | None = None, **overrides: Any
) -> RunSummary:
    """A run of `job` against `server`; one that was not stopped must leave no job and no row behind."""
    summary = await api.run_job_async(job, api_key=KEY, base_url=server.url, on_start=on_start, **overrides)
    if summary.stopped_by is None:
        assert (summary.live_batch_jobs, summary.stats.in_flight) == (0, 0)
    return summary


def rows_of(job: Job) -> dict[str, dict[str, Any]]:
    table = api.read_results(job.output.path)
    return {row["id"]: row for row in table.to_pylist()}


def ledger(server: FakeServer) -> dict[str, Any]:
    return server.stats.to_json()


# Columns that must match between a row answered online and the same row answered by a batch job.
SAME = (
    "status",
    "text",
    "output_json",
    "finish_reason",
    "block_reason",
    "prompt_token_count",
    "candidates_token_count",
    "thoughts_token_count",
    "total_token_count",
    "model_version",
    "responses",
    "reasks",
    "error",
    "stars",
    "out_sentiment",
    "out_confidence",
    "out_aspects",
)


async def test_a_batch_run_gives_the_same_rows_as_the_same_job_online(tmp_path: Path) -> None:
    """Same input, same request, same server: every row has the same status, text, typed columns, usage and
    re-asks either way (re-asks go out as a follow-up batch job); only `traffic` says how each was sent, and the
    batch rows cost half."""
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for mode in ("online", "batch"):
        folder = tmp_path / mode
        folder.mkdir()
        job = make_job(folder, texts(*FAULTY))
        async with serve() as server:
            summary = await run(job, server, mode=mode)
        assert summary.exit_code == ExitCode.OK, summary.stopped_by
        rows[mode] = rows_of(job)
    online, batch = rows["online"], rows["batch"]
    assert online.keys() == batch.keys() and len(batch) == 12 + len(FAULTY)
    for key, row in online.items():
        assert {c: batch[key][c] for c in SAME} == {c: row[c] for c in SAME}, key
        assert (row["traffic"], batch[key]["traffic"]) == ("standard", "batch")
    statuses = {key: batch[key]["status"] for key in FAULTY}
    assert statuses == {"bad-json": "ok", "off-schema": "ok", "cut": "ok", "blocked": "blocked", "safety": "blocked"}
    assert batch["bad-json"]["reasks"] == 1 and batch["bad-json"]["attempts"] == 2


async def test_results_are_joined_by_key_whatever_the_order_and_shape(tmp_path: Path) -> None:
    """A shuffled results file; error lines under `error` and under `status` become failed rows with the error;
    a key missing once is resubmitted and answered; one always missing is resubmitted twice, then failed."""
    extra = {
        "err": "Broken [[fake:error_line]]",
        "stat": "Broken [[fake:status_line]]",
        "gone-once": "Lost once [[fake:missing*1]]",
        "gone": "Always lost [[fake:missing]]",
        "busy": "Busy [[fake:503]]",
    }
    job = make_job(tmp_path, texts() | extra)
    async with serve() as server:
        summary = await run(job, server, mode="batch")
        stats = ledger(server)
    rows = rows_of(job)
    assert len(rows) == 17 and summary.stats.done == 17
    assert {key: rows[key]["status"] for key in extra} == {
        "err": "failed",
        "stat": "failed",
        "gone-once": "ok",
        "gone": "failed",
        "busy": "failed",
    }
    assert rows["err"]["error"].startswith("ServerError: 500 INTERNAL: batch line:")
    assert rows["stat"]["error"].startswith("ServerError: 500 INTERNAL: batch line:")
    assert rows["busy"]["http_status"] == 503
    assert "missing from the output of 3 batch job(s)" in rows["gone"]["error"]
    assert rows["gone"]["attempts"] == 3 and rows["gone-once"]["attempts"] == 2
    # Jobs: all rows; then both missing keys; then the one still missing.
    assert stats["batches"]["created"] == 3
    answered = stats["batches"]["answers_by_key"]
    assert answered == {key: 1 for key in rows if rows[key]["status"] == "ok"}
    assert all(row["traffic"] == "batch" for row in rows.values())


def fates(seed: int, jobs: int, **config: float) -> list[str]:
    """How the local server's jobs 1..`jobs` end under `config` (the server draws each job's fate from its seed)."""
    settings = BatchConfig(**config)  # type: ignore[arg-type]
    return [Timeline.draw(settings, random.Random(f"{seed}:{n}"), None).fate for n in range(1, jobs + 1)]


@pytest.mark.parametrize("fate", ["fail", "expire"])
async def test_a_lost_job_is_resubmitted_once_then_its_rows_are_failed(tmp_path: Path, fate: str) -> None:
    """A job that ends FAILED or EXPIRED loses no row: its rows go into one more job; lost again, they are
    written `failed` with the job's state and error."""
    rate = {"fail_rate": 1.0} if fate == "fail" else {"expire_rate": 1.0}
    job = make_job(tmp_path, texts(plain=4))
    async with serve(**rate) as server:
        summary = await run(job, server, mode="batch")
        stats = ledger(server)
    rows = rows_of(job)
    state = "FAILED" if fate == "fail" else "EXPIRED"
    assert len(rows) == 4 and all(row["status"] == "failed" for row in rows.values())
    assert all(f"ended {state} without answering it" in row["error"] for row in rows.values())
    assert all(row["attempts"] == 2 for row in rows.values())
    assert stats["batches"]["created"] == 2 and summary.stats.counts[Status.FAILED] == 4


async def test_rows_of_a_lost_job_are_answered_by_the_next(tmp_path: Path) -> None:
    seed = next(s for s in range(1000) if fates(s, 2, fail_rate=0.5) == ["fail", "succeed"])
    job = make_job(tmp_path, texts(plain=4))
    async with FakeServer(
        ServerConfig(api_key=KEY, seed=seed, batch=BatchConfig(turnaround_s=0.2, fail_rate=0.5))
    ) as server:
        summary = await run(job, server, mode="batch")
        stats = ledger(server)
    assert summary.exit_code == ExitCode.OK
    assert {row["status"] for row in rows_of(job).values()} == {"ok"}
    assert stats["batches"]["ended"] == {"BATCH_STATE_FAILED": 1, "BATCH_STATE_SUCCEEDED": 1}


@pytest.mark.parametrize(
    ("cancel_output", "fallback", "tier"),
    [
        pytest.param("none", "online", "standard", id="nothing-answered-online"),
        pytest.param("partial", "online", "standard", id="answered-lines-kept"),
        pytest.param("none", "flex", "flex", id="flex"),
    ],
)
async def test_past_the_deadline_a_job_is_cancelled_and_its_rows_run_online(
    tmp_path: Path, cancel_output: str, fallback: str, tier: str
) -> None:
    """Rows a job has not answered by the deadline run online (or on Flex); lines answered before the cancel
    are kept when the API returns them. Each row is written once, answered once."""
    job = make_job(tmp_path, texts(), deadline="0.6s", fallback=fallback)
    async with serve(turnaround_s=1.0, pending_share=0.2, cancel_output=cancel_output) as server:
        summary = await run(job, server, mode="batch")
        stats = ledger(server)
    rows = rows_of(job)
    assert summary.exit_code == ExitCode.OK and len(rows) == 12
    assert {row["status"] for row in rows.values()} == {"ok"}
    traffic = [row["traffic"] for row in rows.values()]
    in_batch = traffic.count("batch")
    assert stats["batches"]["cancelled"] == 1
    assert (in_batch > 0) == (cancel_output == "partial")
    assert traffic.count(tier) == 12 - in_batch
    assert stats["tiers"]["requests"].get(tier, 0) == 12 - in_batch
    assert len(stats["batches"]["answers_by_key"]) == in_batch
    assert read_batches(job.output.path).jobs[0].outcome == "deadline"  # type: ignore[union-attr]


@pytest.mark.parametrize("reasks", ["batch", "online"])
async def test_reasks_go_out_as_a_follow_up_job_or_online(tmp_path: Path, reasks: str) -> None:
    """A row whose output is unusable is re-asked with the same request: in a follow-up job, or online; either
    way the row holds both responses' tokens."""
    job = make_job(tmp_path, texts("bad-json", "cut", plain=3), reasks=reasks)
    async with serve() as server:
        await run(job, server, mode="batch")
        stats = ledger(server)
    rows = rows_of(job)
    for key in ("bad-json", "cut"):
        assert (rows[key]["status"], rows[key]["reasks"], rows[key]["responses"]) == ("ok", 1, 2)
        assert rows[key]["traffic"] == ("batch" if reasks == "batch" else "standard")
    billed = stats["batches"]["billed"]["promptTokenCount"] + stats["billed"]["promptTokenCount"]
    assert sum(row["prompt_token_count"] for row in rows.values()) == billed
    assert stats["batches"]["created"] == (2 if reasks == "batch" else 1)
    assert stats["tiers"]["requests"].get("standard", 0) == (0 if reasks == "batch" else 2)


async def test_more_jobs_than_the_api_allows_wait_for_one_to_end(tmp_path: Path) -> None:
    """Small files make six jobs; the server takes two at a time (429 on a third): the others wait their turn."""
    job = make_job(tmp_path, texts(), max_file_mb=0.0025)
    async with serve(max_concurrent=2, turnaround_s=0.15) as server:
        summary = await run(job, server, mode="batch")
        stats = ledger(server)
    assert summary.exit_code == ExitCode.OK
    assert len(rows_of(job)) == 12 and stats["batches"]["created"] >= 4
    assert sum(stats["batches"]["lines"][name]["succeeded"] for name in stats["batches"]["lines"]) == 12


class FirstCreate:
    """Wraps a client so that its first create goes wrong: the job is made but the answer lost on the way back
    (`made=True`), or the create is refused as the Files API refuses a file it no longer has (403)."""

    def __init__(self, jobs: Any, *, made: bool) -> None:
        self._jobs = jobs
        self._made = made
        self.creates = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jobs, name)

    async def create(self, display_name: str, input_file: str) -> Operation:
        self.creates += 1
        if self.creates > 1:
            return await self._jobs.create(display_name, input_file)  # type: ignore[no-any-return]
        if self._made:
            await self._jobs.create(display_name, input_file)
            raise TransportError("connection reset after the request was sent")
        raise AuthError("You do not have permission to access the File or it may not exist.", http_status=403)


@pytest.fixture
def first_create(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], list[FirstCreate]]:
    """Makes the carrier's client a `FirstCreate`; the list fills with the wrappers made."""

    def install(made: bool) -> list[FirstCreate]:
        wrapped: list[FirstCreate] = []
        original = BatchCarrier.__init__

        def init(self: BatchCarrier, jobs: Any, **kwargs: Any) -> None:
            wrapped.append(FirstCreate(jobs, made=made))
            original(self, wrapped[-1], **kwargs)

        monkeypatch.setattr(BatchCarrier, "__init__", init)
        return wrapped

    return install


async def test_a_create_whose_answer_was_lost_is_found_not_made_twice(
    tmp_path: Path, first_create: Callable[[bool], list[FirstCreate]]
) -> None:
    wrapped = first_create(True)
    job = make_job(tmp_path, texts(plain=4))
    async with serve() as server:
        summary = await run(job, server, mode="batch")
        stats = ledger(server)
    assert summary.exit_code == ExitCode.OK and len(rows_of(job)) == 4
    assert wrapped[0].creates == 1 and stats["batches"]["created"] == 1


async def test_a_create_refused_for_its_file_uploads_the_file_again(
    tmp_path: Path, first_create: Callable[[bool], list[FirstCreate]]
) -> None:
    """Files are kept 48 h: a job created later than that finds its input file gone, and uploads it again."""
    wrapped = first_create(False)
    job = make_job(tmp_path, texts(plain=4))
    async with serve() as server:
        summary = await run(job, server, mode="batch")
        stats = ledger(server)
    assert summary.exit_code == ExitCode.OK and len(rows_of(job)) == 4
    assert wrapped[0].creates == 2 and stats["batches"]["created"] == 1 and stats["files"]["uploaded"] == 2


def polling(job: Job) -> bool:
    records = read_batches(job.output.path)
    return records is not None and any(record.phase == "running" for record in records.jobs)


async def test_a_stopped_run_leaves_its_jobs_running_and_the_rerun_collects_them(tmp_path: Path) -> None:
    """Ctrl-C while polling: the run ends at once (exit 130) with its job still at the Batch API; the rerun
    re-attaches to it, submits nothing, and writes each row once."""
    job = make_job(tmp_path, texts())
    async with serve(turnaround_s=1.0) as server:
        first = await stopped_while_polling(job, server)
        assert first.exit_code == ExitCode.SIGINT and first.live_batch_jobs == 1 and first.stats.done == 0
        records = read_batches(job.output.path)
        assert records is not None and [j.phase for j in records.jobs] == ["running"]
        second = await run(job, server, mode="batch")
        stats = ledger(server)
    assert second.exit_code == ExitCode.OK and second.live_batch_jobs == 0
    assert stats["batches"]["created"] == 1
    assert stats["batches"]["answers_by_key"] == {key: 1 for key in texts()}
    ids = api.read_results(job.output.path).column("id").to_pylist()
    assert sorted(ids) == sorted(texts())


async def test_an_online_run_refuses_a_folder_whose_batch_jobs_are_under_way(tmp_path: Path) -> None:
    job = make_job(tmp_path, texts(plain=2))
    async with serve(turnaround_s=1.0) as server:
        await stopped_while_polling(job, server)
        with pytest.raises(ConfigError, match="batch job\\(s\\) still under way: rerun with --mode batch"):
            await run(job, server, mode="online")


async def stopped_while_polling(job: Job, server: FakeServer) -> RunSummary:
    """A batch run stopped (as by Ctrl-C) once its job is being polled."""
    started: list[LiveRun] = []
    async with anyio.create_task_group() as group:

        async def stop_once_polling() -> None:
            with anyio.fail_after(10):
                while not polling(job):  # noqa: ASYNC110 - a file written by the run has no event to wait on
                    await anyio.sleep(0.01)
            started[0].stop(Interrupted(2))

        group.start_soon(stop_once_polling)
        summary = await run(job, server, on_start=started.append, mode="batch")
    return summary


async def test_status_shows_the_jobs_and_cancel_releases_their_rows_for_the_next_run(tmp_path: Path) -> None:
    """`status` reads the record and asks the API how each live job stands; `cancel` cancels it, and the next
    run sends its rows again, in a new job, each written once."""
    job = make_job(tmp_path, texts())
    folder = job.output.path
    async with serve(turnaround_s=1.0) as server:
        await stopped_while_polling(job, server)
        async with BatchClient(server.url, job.model, ApiKey(KEY), retry=Retrier(RetryPolicy())) as jobs:
            found = await control.status(folder, jobs)
            assert found.live == 1 and found.jobs[0].now is not None
            assert found.jobs[0].state in ("PENDING", "RUNNING") and found.jobs[0].record.rows == 12
            text = control.render(found)
            assert "s00001  running" in text and f"batchgen cancel {folder}" in text
            cancelled, ended = await control.cancel(folder, jobs)
            assert [record.id for record in cancelled] == ["s00001"] and ended == []
            assert (await jobs.get(cancelled[0].job or "")).state == "CANCELLED"
        offline = await control.status(folder, None)
        assert offline.live == 0 and offline.jobs[0].record.phase == "released"
        summary = await run(job, server, mode="batch")
        stats = ledger(server)
    assert summary.exit_code == ExitCode.OK and summary.stats.done == 12
    assert stats["batches"]["created"] == 2 and stats["batches"]["cancelled"] == 1
    assert sorted(api.read_results(folder).column("id").to_pylist()) == sorted(texts())


async def test_status_of_a_folder_without_batch_jobs_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has no batch jobs"):
        await control.status(tmp_path, None)


async def test_rows_no_longer_in_the_input_are_said_and_not_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An input edited while its jobs were out: the rows it lost are reported, the others written."""
    job = make_job(tmp_path, texts())
    async with serve(turnaround_s=0.6) as server:
        await stopped_while_polling(job, server)
        kept = job.input.path.read_bytes().splitlines(keepends=True)[2:]
        job.input.path.write_bytes(b"".join(kept))
        summary = await run(job, server, mode="batch")
    assert summary.exit_code == ExitCode.OK and summary.stats.done == 10 and summary.stats.in_flight == 0
    assert "2 of its rows are no longer in the input" in caplog.text
