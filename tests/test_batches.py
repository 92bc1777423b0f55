"""The folder's record of batch jobs: saved whole or not at all, read back as written, and a job's local files
(input lines, rows with what they carry) made durable only when sealed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from batchgen.errors import OutputError
from batchgen.records import Usage
from batchgen.results.batches import (
    Batches,
    Carried,
    Spool,
    Submission,
    batch_dir,
    job_id,
    read_batches,
    read_rows,
    requests_path,
    rows_path,
    save_batches,
)
from batchgen.results.folder import claim
from batchgen.results.rows import Tally

ORIGIN = {"base_url": "http://x", "auth": "x-goog-api-key", "api_key_env": "K", "model": "gemini-2.5-flash"}


def test_a_folder_without_batch_jobs_has_no_record(tmp_path: Path) -> None:
    assert read_batches(tmp_path) is None


def test_the_record_reads_back_as_saved(tmp_path: Path) -> None:
    """Every field survives; fields at their defaults are left out of the file, so it reads at a glance."""
    batches = Batches.new(ORIGIN)
    first = Submission(job_id(1), "spooled", rows=3, size=120)
    batches = batches.updated(first)
    running = first.to("running", file="files/in1", job="batches/j1", created_at=1.5, state="RUNNING")
    second = Submission(job_id(2), "ended", 0, 0, "reask", outcome="lost", note="INTERNAL: boom")
    batches = batches.updated(running, second)
    save_batches(tmp_path, batches)
    assert read_batches(tmp_path) == batches
    assert [job.id for job in batches.jobs] == ["s00001", "s00002"]
    assert batches.live == (running, second)
    assert batches.display_name(running) == f"batchgen {batches.token} s00001"
    stored = orjson.loads((batch_dir(tmp_path) / "jobs.json").read_bytes())
    assert stored["jobs"][1] == {
        "id": "s00002",
        "phase": "ended",
        "rows": 0,
        "size": 0,
        "template": "reask",
        "outcome": "lost",
        "note": "INTERNAL: boom",
    }


def test_collected_and_released_jobs_are_not_live() -> None:
    job = Submission("s00001", "running", 1, 1)
    assert job.live and not job.to("collected").live and not job.to("released").live


@pytest.mark.parametrize("content", [b"{", b'{"jobs": []}', b'{"token": "t", "jobs": [{"id": "s1", "phase": "x"}]}'])
def test_an_unreadable_record_is_an_output_error(tmp_path: Path, content: bytes) -> None:
    batch_dir(tmp_path).mkdir()
    (batch_dir(tmp_path) / "jobs.json").write_bytes(content)
    with pytest.raises(OutputError, match="unreadable record of batch jobs"):
        read_batches(tmp_path)


def test_a_sealed_spool_holds_the_lines_and_the_rows_with_what_they_carry(tmp_path: Path) -> None:
    carried = Carried(Tally(attempts=1, responses=1, usage=Usage(prompt=5, total=9), reasks=1, first_sent=2.0), 1)
    with Spool(tmp_path, "s00001", "reask") as spool:
        spool.add("a", b'{"key":"a"}\n')
        spool.add("b", b'{"key":"b"}\n', carried)
        assert not rows_path(tmp_path, "s00001").exists()  # nothing visible before the seal
        record = spool.seal()
    assert record == Submission("s00001", "spooled", 2, 24, "reask")
    assert requests_path(tmp_path, "s00001").read_bytes() == b'{"key":"a"}\n{"key":"b"}\n'
    assert list(read_rows(tmp_path, "s00001")) == [("a", None), ("b", carried)]
    assert not [p for p in batch_dir(tmp_path).iterdir() if p.name.endswith(".tmp")]


def test_an_unsealed_spool_leaves_nothing_and_a_killed_ones_temporaries_are_cleared(tmp_path: Path) -> None:
    with Spool(tmp_path, "s00001") as spool:
        spool.add("a", b"x\n")
    assert list(batch_dir(tmp_path).iterdir()) == []
    (batch_dir(tmp_path) / ".s00002.rows.jsonl.tmp").write_bytes(b"half")  # as a SIGKILL leaves it
    with claim(tmp_path):
        assert list(batch_dir(tmp_path).iterdir()) == []
