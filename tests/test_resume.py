"""The results folder as a ledger: which ids are done, one row per id after compaction."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from batchgen.errors import ConfigError
from batchgen.results import resume
from batchgen.results.folder import RunRecord, record_run, write_part


def part(folder: Path, name: str, rows: list[tuple[str, str, int]]) -> None:
    ids, statuses, times = zip(*rows, strict=True)
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "status": pa.array(statuses, pa.string()),
            "finished_at": pa.array(times, pa.timestamp("ms", tz="UTC")),
        }
    )
    write_part(folder, name, table)


def members(done: resume.Done, candidates: str = "12345") -> set[str]:
    return {value for value in candidates if value in done.final}


def test_done_ids_skip_final_rows_and_retry_failed_ones(tmp_path: Path) -> None:
    part(tmp_path, "part-a-00000.parquet", [("1", "ok", 1), ("2", "failed", 1), ("3", "blocked", 1)])
    assert members(resume.done_ids(tmp_path, retry_failed=True)) == {"1", "3"}
    assert members(resume.done_ids(tmp_path, retry_failed=False)) == {"1", "2", "3"}
    assert len(resume.done_ids(tmp_path, retry_failed=False).final) == 3
    missing = resume.done_ids(tmp_path / "missing", retry_failed=True)
    assert (len(missing.final), members(missing)) == (0, set())


def test_the_newest_row_of_an_id_decides(tmp_path: Path) -> None:
    part(tmp_path, "part-a-00000.parquet", [("1", "ok", 1), ("2", "failed", 1)])
    part(tmp_path, "part-b-00000.parquet", [("2", "ok", 5)])
    assert members(resume.done_ids(tmp_path, retry_failed=True)) == {"1", "2"}


def test_compaction_keeps_only_the_newest_row_per_id(tmp_path: Path) -> None:
    part(tmp_path, "part-a-00000.parquet", [("1", "ok", 1), ("2", "failed", 1)])
    part(tmp_path, "part-a-00001.parquet", [("3", "ok", 2)])
    part(tmp_path, "part-b-00000.parquet", [("2", "ok", 5)])
    assert resume.compact(tmp_path, "b") == 1
    table = ds.dataset(tmp_path).to_table().sort_by("id")
    assert table.column("id").to_pylist() == ["1", "2", "3"]
    assert table.column("status").to_pylist() == ["ok", "ok", "ok"]
    assert resume.compact(tmp_path, "c") == 0
    # the untouched part was not rewritten
    assert (tmp_path / "part-a-00001.parquet").exists()


def test_compaction_resolves_exact_copies_left_by_a_crash(tmp_path: Path) -> None:
    """A crash between writing a compacted part and deleting the old one leaves identical rows twice."""
    part(tmp_path, "part-a-00000.parquet", [("1", "ok", 1), ("2", "ok", 1)])
    part(tmp_path, "part-b-c00000.parquet", [("2", "ok", 1)])
    resume.compact(tmp_path, "c")
    assert sorted(ds.dataset(tmp_path).to_table().column("id").to_pylist()) == ["1", "2"]


def test_a_changed_job_is_refused_unless_forced(tmp_path: Path) -> None:
    record_run(tmp_path, {"fingerprint": "old"}, RunRecord("r"))
    resume.check_job(tmp_path, "old", force=False)
    with pytest.raises(ConfigError, match="different job"):
        resume.check_job(tmp_path, "new", force=False)
    resume.check_job(tmp_path, "new", force=True)


def test_the_tally_is_over_each_ids_latest_row_once_compacted(tmp_path: Path) -> None:
    """How the job as a whole went: a failed row that a later run answered no longer counts."""
    assert resume.tally(tmp_path) == resume.Tally(0, 0, 0) and resume.tally(tmp_path).failed_fraction == 0.0
    part(tmp_path, "part-a-00000.parquet", [("1", "ok", 1), ("2", "failed", 1), ("3", "failed", 1), ("4", "ok", 1)])
    assert resume.tally(tmp_path) == resume.Tally(rows=4, failed=2, ok=2)
    assert resume.tally(tmp_path).failed_fraction == 0.5
    part(tmp_path, "part-b-00000.parquet", [("2", "ok", 5)])
    resume.compact(tmp_path, "c")
    assert resume.tally(tmp_path).failed_fraction == 0.25
