"""Durable results: atomic part files with one stable schema, and the manifest."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from batchgen.errors import ConfigError, OutputError
from batchgen.records import Result, Status, Usage
from batchgen.results.columns import FEATURES, FIXED, METADATA
from batchgen.results.folder import RunRecord, claim, read_manifest, record_exit_code, record_run
from batchgen.results.sink import ParquetSink
from batchgen.results.table import Layout, features_of

KEEP = pa.schema([pa.field("stars", pa.int64()), pa.field("review", pa.string())])


def result(i: int, **changes: Any) -> Result:
    base: dict[str, Any] = {
        "id": f"r{i}",
        "status": Status.OK,
        "text": "{}",
        "usage": Usage(prompt=10, candidates=3, total=13),
        "attempts": 1,
        "responses": 1,
        "keep": {"stars": i, "review": f"text {i}"},
    }
    return Result(**{**base, **changes})


def sink(folder: Path, **kwargs: Any) -> ParquetSink:
    return ParquetSink(folder, Layout(keep=KEEP), run_id="run1", model="m", **kwargs)


@pytest.mark.anyio
async def test_parts_hold_every_row_with_the_contract_columns(tmp_path: Path) -> None:
    async with sink(tmp_path, flush_rows=3) as out:
        for i in range(7):
            await out.write(result(i))
        await out.write(result(7, status=Status.FAILED, text=None, usage=Usage(), error="boom", http_status=503))
    parts = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert parts == ["part-run1-00000.parquet", "part-run1-00001.parquet", "part-run1-00002.parquet"]
    table = ds.dataset(tmp_path).to_table()
    assert table.num_rows == 8
    fixed = [name for name in FIXED.names if name not in ("id", "row_index", "status", "error")]
    assert table.column_names == ["id", "row_index", "stars", "review", "status", "error", *fixed, *METADATA.names]
    assert table.schema.field("prompt_token_count").type == pa.int64()
    assert table.schema.field("attempts").type == pa.int32()
    failed = table.filter(ds.field("status") == "failed").to_pylist()[0]
    assert failed["prompt_token_count"] is None and failed["http_status"] == 503
    assert not list(tmp_path.glob(".*"))


@pytest.mark.anyio
async def test_rows_are_flushed_after_flush_seconds_without_more_writes(tmp_path: Path) -> None:
    import anyio

    async with sink(tmp_path, flush_rows=1000, flush_seconds=0.05) as out:
        await out.write(result(1))
        await anyio.sleep(0.3)
        assert len(list(tmp_path.glob("part-*.parquet"))) == 1


@pytest.mark.anyio
async def test_keep_value_of_another_type_is_kept_as_text(tmp_path: Path) -> None:
    """A JSONL keep column inferred as string still accepts a later number, as its JSON text."""
    layout = Layout(keep=pa.schema([pa.field("tag", pa.string())]))
    async with ParquetSink(tmp_path, layout, run_id="r", model="m") as out:
        await out.write(result(1, keep={"tag": "a"}))
        await out.write(result(2, keep={"tag": 42}))
    assert ds.dataset(tmp_path).to_table().column("tag").to_pylist() == ["a", "42"]


@pytest.mark.anyio
async def test_write_error_is_an_output_error_and_leaves_no_partial_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    def full_disk(table: pa.Table, where: Path, **kwargs: Any) -> None:
        Path(where).write_bytes(b"PAR1 half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    out = sink(tmp_path, flush_rows=1)
    with pytest.raises(OutputError, match="No space left"):
        async with out:
            await out.write(result(1))
    assert list(tmp_path.iterdir()) == []


def test_manifest_records_each_run_once(tmp_path: Path) -> None:
    job = {"file": "j.toml", "model": "m", "fingerprint": "abc"}
    record_run(tmp_path, job, RunRecord("a", rows=1))
    record_run(tmp_path, job, RunRecord("b", rows=2))
    record_run(tmp_path, job, RunRecord("b", rows=3))
    manifest = read_manifest(tmp_path)
    assert manifest is not None
    assert [r.rows for r in manifest.runs] == [1, 3]
    assert orjson.loads((tmp_path / "_manifest.json").read_bytes())["job"] == job


def test_exit_code_is_recorded_on_its_run_only(tmp_path: Path) -> None:
    job = {"file": "j.toml", "model": "m", "fingerprint": "abc"}
    record_run(tmp_path, job, RunRecord("a"))
    record_run(tmp_path, job, RunRecord("b"))
    record_exit_code(tmp_path, "b", 143)
    record_exit_code(tmp_path, "unknown", 1)
    record_exit_code(tmp_path / "absent", "b", 1)
    manifest = read_manifest(tmp_path)
    assert manifest is not None
    assert [(r.run_id, r.exit_code) for r in manifest.runs] == [("a", None), ("b", 143)]


def test_a_claimed_folder_refuses_a_second_run_and_is_free_again_after(tmp_path: Path) -> None:
    """The claim is an flock (released even when its holder is SIGKILLed); a second claim fails at once."""
    folder = tmp_path / "new" / "out"
    with claim(folder):
        assert folder.is_dir()
        with pytest.raises(ConfigError, match=r"another batchgen run \(pid \d+\)"), claim(folder):
            pass
    with claim(folder):
        pass


def test_claiming_a_folder_clears_temporaries_a_killed_run_left(tmp_path: Path) -> None:
    (tmp_path / ".part-r-00003.parquet.tmp").write_bytes(b"PAR1 half")
    (tmp_path / "._manifest.json.tmp").write_bytes(b'{"format"')
    (tmp_path / "part-r-00002.parquet").write_bytes(b"whole")
    with claim(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == [".batchgen.lock", "part-r-00002.parquet"]


@pytest.mark.anyio
async def test_a_failed_timed_flush_is_raised_by_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk-full error in the background flush reaches the run as a plain OutputError on its next write."""
    import anyio

    def full_disk(table: pa.Table, where: Path, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    out = sink(tmp_path, flush_rows=1000, flush_seconds=0.05)
    with pytest.raises(OutputError, match="No space left"):
        async with out:
            await out.write(result(1))
            await anyio.sleep(0.3)
            await out.write(result(2))


JSON = {"generationConfig": {"responseMimeType": "application/json"}}
GROUNDING = set(FEATURES["grounding"])
TOOL_PARTS = {"tool_parts"}


@pytest.mark.parametrize(
    ("request_", "columns"),
    [
        pytest.param(JSON, set(), id="json-mode"),
        pytest.param({}, {"citations"}, id="text-mode"),
        pytest.param(
            {**JSON, "tools": [{"googleSearch": {}}]}, GROUNDING | TOOL_PARTS | {"citations"}, id="google-search"
        ),
        pytest.param(
            {**JSON, "tools": [{"urlContext": {}}]}, GROUNDING | TOOL_PARTS | {"citations", "url_context"}, id="url"
        ),
        pytest.param({**JSON, "tools": [{"functionDeclarations": []}]}, {"function_calls"}, id="functions"),
        pytest.param({**JSON, "tools": [{"codeExecution": {}}]}, TOOL_PARTS, id="code-execution"),
    ],
)
def test_feature_columns_appear_only_when_the_job_uses_the_feature(request_: dict[str, Any], columns: set[str]) -> None:
    """Grounding, function-call, tool-part, URL-context and citation columns are there when the job's request
    can fill them (its tools; citations in text output), not empty in every job; the reply and usage details,
    safety ratings and log-probabilities, which any reply (or failed call) may carry, always are."""
    schema = Layout(keep=KEEP, features=features_of(request_)).schema
    features = {name for names in FEATURES.values() for name in names}
    assert features & set(schema.names) == columns
    always = (set(METADATA.names) - features) | {"row_index"}
    assert always <= set(schema.names)
    assert {"safety_ratings", "service_tier", "prompt_tokens_details", "error_details"} <= always


@pytest.mark.anyio
async def test_a_run_into_a_folder_writes_parts_of_the_folders_schema(tmp_path: Path) -> None:
    """A folder keeps one schema: parts written into a folder of another shape (an older batchgen: no
    row_index, every metadata column, another order) take its columns, order and types."""
    older = pa.schema([f for f in (*FIXED, *METADATA, *KEEP) if f.name != "row_index"])
    layout = Layout(keep=KEEP, features=frozenset()).within(older)
    assert layout.left_out() == ["row_index"]
    async with ParquetSink(tmp_path, layout, run_id="r", model="m") as out:
        await out.write(result(1, row_index=7))
    table = ds.dataset(tmp_path).to_table()
    assert table.schema == older and table.column("stars").to_pylist() == [1]
