"""The results folder as a ledger: which ids are done, one row per id after compaction."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from batchgen.errors import ConfigError
from batchgen.results import resume
from batchgen.results.folder import RunRecord, read_manifest, record_run, write_part


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


def test_small_parts_are_merged_into_parts_of_up_to_the_target_size(tmp_path: Path) -> None:
    """A slow run flushes a few rows every flush interval and a killed one leaves its parts: compaction merges
    parts under half the target size (in name order) into parts of up to the target, keeps big parts as they
    are, never puts two schemas in one part, and keeps every row."""
    for index in range(12):
        part(tmp_path, f"part-a-{index:05d}.parquet", [(f"{index}-{row}", "ok", index) for row in range(2)])
    part(tmp_path, "part-b-00000.parquet", [(f"big-{row}", "ok", 20) for row in range(6)])
    other = pa.table(
        {"id": ["x"], "status": ["ok"], "finished_at": pa.array([30], pa.timestamp("ms", tz="UTC")), "n": [1]}
    )
    write_part(tmp_path, "part-c-00000.parquet", other)
    write_part(tmp_path, "part-c-00001.parquet", other.set_column(0, "id", pa.array(["y"])))
    assert resume.compact(tmp_path, "d", superseded=False, target_rows=10) == 0
    sizes = {p.name: pq.ParquetFile(p).metadata.num_rows for p in tmp_path.glob("part-*.parquet")}
    assert sizes["part-b-00000.parquet"] == 6  # at least half the target: left as it is
    merged = {name: rows for name, rows in sizes.items() if name.startswith("part-d-c")}
    assert sorted(merged.values()) == [2, 4, 10, 10]  # 24 rows of the small parts; the other schema apart
    assert len(sizes) == 5
    table = ds.dataset(tmp_path).to_table(columns=["id"])
    assert table.num_rows == 24 + 6 + 2 and len(set(table.column("id").to_pylist())) == 32
    assert resume.compact(tmp_path, "e", superseded=False, target_rows=10) == 0  # nothing more to merge
    assert {p.name for p in tmp_path.glob("part-*.parquet")} == set(sizes)


def test_rows_of_an_earlier_version_of_the_job_are_not_done(tmp_path: Path) -> None:
    """A changed job run into the folder with --force sends again the rows the old job answered, instead of
    keeping the old answers; rows of runs of the current job stay done."""
    record_run(tmp_path, {"fingerprint": "old"}, RunRecord("r1", fingerprint="old"))
    record_run(tmp_path, {"fingerprint": "new"}, RunRecord("r2", fingerprint="new"))
    table = pa.table(
        {
            "id": ["1", "2", "3"],
            "status": ["ok", "ok", "ok"],
            "finished_at": pa.array([1, 1, 2], pa.timestamp("ms", tz="UTC")),
            "run_id": ["r1", "r1", "r2"],
        }
    )
    write_part(tmp_path, "part-r1-00000.parquet", table)
    assert members(resume.done_ids(tmp_path, retry_failed=True, fingerprint="new")) == {"3"}
    assert members(resume.done_ids(tmp_path, retry_failed=True, fingerprint="old")) == {"1", "2"}
    assert members(resume.done_ids(tmp_path, retry_failed=True)) == {"1", "2", "3"}


def test_runs_recorded_before_fingerprints_keep_the_job_they_ran(tmp_path: Path) -> None:
    """A folder written by an older batchgen has runs without a fingerprint: the manifest's job is theirs, and
    stays theirs once a changed job records its own run."""
    (tmp_path / "_manifest.json").write_bytes(
        orjson.dumps({"format": 1, "job": {"fingerprint": "old"}, "runs": [{"run_id": "r1"}]})
    )
    record_run(tmp_path, {"fingerprint": "new"}, RunRecord("r2", fingerprint="new"))
    manifest = read_manifest(tmp_path)
    assert manifest is not None and [(r.run_id, r.fingerprint) for r in manifest.runs] == [("r1", "old"), ("r2", "new")]


def test_reshaping_rewrites_parts_of_another_schema_under_new_names(tmp_path: Path) -> None:
    """A changed job forced into the folder gives it its shape: parts of the old schema are rewritten (a
    dropped column goes, a new one is null, types are cast), under names no other part has."""
    part(tmp_path, "part-a-00000.parquet", [("1", "ok", 1), ("2", "ok", 1)])
    write_part(tmp_path, "part-b-c00000.parquet", pa.table({"id": ["3"]}))
    new = pa.schema([("id", pa.string()), ("status", pa.string()), ("out_n", pa.int64())])
    write_part(tmp_path, "part-b-c00001.parquet", pa.Table.from_pylist([{"id": "4"}], schema=new))
    assert resume.reshape(tmp_path, "b", new) == 2
    names = sorted(p.name for p in tmp_path.glob("part-*.parquet"))
    assert names == ["part-b-c00001.parquet", "part-b-c00002.parquet", "part-b-c00003.parquet"]
    table = ds.dataset(tmp_path).to_table()
    assert all(pq.read_schema(tmp_path / name).equals(new) for name in names)
    assert sorted(table.column("id").to_pylist()) == ["1", "2", "3", "4"]
    assert table.column("out_n").null_count == 4
