"""The Python API: a job from a file, a dict or Python objects, run against the local server and read back."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, demo_tree
from pydantic import BaseModel

import batchgen
import batchgen.cli
from batchgen.api import as_job
from batchgen.fakeserver import FakeServer, ServerConfig
from batchgen.pipeline import RunOptions, execute
from batchgen.report.breakdown import build_report, load_results
from batchgen.report.pricing import PriceTable
from batchgen.results.columns import CONTRACT, METADATA
from batchgen.secret import ApiKey


def test_run_job_runs_a_job_file_and_read_results_reads_it_back(tmp_path: Path) -> None:
    """Overrides replace job keys (paths relative to the working folder); the summary has the CLI's exit code."""
    job = demo_tree(tmp_path)
    summary = batchgen.run_job(
        job, local_server=True, limit=12, limits={"concurrency": 4}, output={"path": tmp_path / "o"}
    )
    assert summary.exit_code is batchgen.ExitCode.OK
    assert summary.stats.counts == {batchgen.Status.OK: 12} and summary.cost_usd is not None
    table = batchgen.read_results(tmp_path / "o")
    assert table.num_rows == 12 and table.column("status").to_pylist() == ["ok"] * 12
    assert {"review", "out_sentiment"} <= set(table.column_names)
    frame = batchgen.read_results([tmp_path / "o"], columns=["id", "prompt_token_count"]).to_pandas()
    assert list(frame.columns) == ["id", "prompt_token_count"] and len(frame) == 12


def test_a_job_from_a_dict_with_a_pydantic_schema_gets_typed_columns(tmp_path: Path) -> None:
    """A pydantic model class given as the schema becomes responseJsonSchema; its fields, typed columns."""

    class Label(BaseModel):
        sentiment: str
        score: float

    job = batchgen.job_from_dict(
        {
            "model": "gemini-2.5-flash",
            "input": {"path": "data/reviews.jsonl", "id_field": "id", "prompt_template": "Sentiment of: {review}"},
            "request": {"generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": Label}},
            "output": {"path": str(tmp_path / "o")},
        },
        base_dir=ROOT,
    )
    assert job.input.path == ROOT / "data" / "reviews.jsonl"
    summary = batchgen.run_job(job, local_server=True, limit=3)
    assert summary.exit_code == 0
    table = batchgen.read_results(tmp_path / "o")
    assert str(table.schema.field("out_score").type) == "double"
    assert str(table.schema.field("out_sentiment").type) == "string"


def test_check_job_finds_what_check_finds_and_raises_on_a_bad_job(tmp_path: Path) -> None:
    checked = batchgen.check_job(demo_tree(tmp_path), local_server=True)
    assert checked.rows == 240 and checked.job.model == "gemini-2.5-flash"
    assert batchgen.check_job(demo_tree(tmp_path), api_key="k").rows == 240
    with pytest.raises(batchgen.ConfigError, match=r"limits\.concurrency"):
        batchgen.check_job(demo_tree(tmp_path), local_server=True, limits={"concurrency": 0})
    with pytest.raises(batchgen.ConfigError, match="GEMINI_API_KEY is not set"):
        batchgen.check_job(demo_tree(tmp_path))  # a run would need the key


def test_a_missing_key_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(batchgen.ConfigError, match="GEMINI_API_KEY is not set"):
        batchgen.run_job(demo_tree(tmp_path))


def test_the_one_liner_from_the_issue_works_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """`python -c "import batchgen; batchgen.run_job('jobs/demo.toml', local_server=True)"` from a checkout."""
    demo_tree(tmp_path)
    code = "import batchgen; s = batchgen.run_job('jobs/demo.toml', local_server=True, limit=5); print(s.exit_code)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
    assert len(list((tmp_path / "out" / "demo").glob("part-*.parquet"))) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("key", "model", "http_status"),
    [
        pytest.param("not-the-key", "gemini-2.5-flash", 400, id="400-api-key-invalid"),
        pytest.param("", "gemini-2.5-flash", 403, id="403-no-key"),
        pytest.param("test-key", "gemini-9-ultra", 404, id="404-unknown-model"),
    ],
)
async def test_a_run_stopped_by_its_first_request_counts_that_request(
    tmp_path: Path, key: str, model: str, http_status: int
) -> None:
    """The summary's attempts are the requests the server saw, also when the first answer stops the run."""
    async with FakeServer(ServerConfig(api_key="test-key", models=("gemini-2.5-flash",))) as server:
        job = as_job(demo_tree(tmp_path), model=model, base_url=server.url, limits={"concurrency": 4})
        summary = await execute(job, ApiKey(key), RunOptions(limit=20))
        seen = server.stats
    assert summary.exit_code is batchgen.ExitCode.FATAL
    assert isinstance(summary.stopped_by, batchgen.ApiError) and summary.stopped_by.http_status == http_status
    assert seen.responses_by_status == {http_status: 1}
    assert summary.stats.attempts == seen.requests_by_method["generateContent"] == 1


class Collected(logging.Handler):
    """Keeps the records it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_rerun_into_a_folder_of_the_old_layout_keeps_its_schema_and_still_reads(tmp_path: Path) -> None:
    """A folder written before row_index and the feature columns (contract order, every metadata column) keeps
    its schema when a rerun adds rows (parts of one folder never differ), with a warning naming what is left
    out; the results, the report and resume read it as before, row_index as null."""
    job = demo_tree(tmp_path)
    out = tmp_path / "o"
    batchgen.run_job(job, local_server=True, limit=5, output={"path": out})
    (part,) = out.glob("part-*.parquet")
    table = pq.read_table(part).drop_columns(["row_index"])
    for name in METADATA.names:
        if name not in table.column_names:
            table = table.append_column(METADATA.field(name), pa.nulls(table.num_rows, METADATA.field(name).type))
    old = [*(n for n in CONTRACT.names if n != "row_index"), "review", "stars", "out_sentiment", "out_confidence"]
    old_table = table.select([*old, "out_aspects"])
    pq.write_table(old_table, part)
    handler = Collected()
    logging.getLogger("batchgen.pipeline").addHandler(handler)
    try:
        summary = batchgen.run_job(job, local_server=True, limit=5, output={"path": out})
    finally:
        logging.getLogger("batchgen.pipeline").removeHandler(handler)
    assert summary.stats.done == 5 and summary.exit_code == 0
    assert all(pq.read_schema(p).equals(old_table.schema) for p in out.glob("part-*.parquet"))
    assert any(getattr(record, "columns", None) == ["row_index"] for record in handler.records)
    assert batchgen.read_results(out).num_rows == 10
    indexes = batchgen.read_results(out, columns=["id", "row_index", "grounding_chunks"]).column("row_index")
    assert indexes.null_count == 10
    assert build_report(load_results([out]), PriceTable.load()).totals.rows == 10


def test_a_changed_schema_forced_into_a_folder_gives_it_the_new_shape(tmp_path: Path) -> None:
    """--force with another response schema: the folder's parts take the changed job's typed columns, so the
    folder keeps one schema, and the rows the old job answered are answered again."""
    job = demo_tree(tmp_path)
    out = tmp_path / "o"
    batchgen.run_job(job, local_server=True, limit=4, output={"path": out})
    schema_file = tmp_path / "schemas" / "sentiment.json"
    schema_file.write_text(schema_file.read_text().replace('"confidence"', '"certainty"'))
    with pytest.raises(batchgen.ConfigError, match="different job"):
        batchgen.run_job(job, local_server=True, limit=2, output={"path": out})
    summary = batchgen.run_job(job, local_server=True, limit=2, force=True, output={"path": out})
    assert summary.exit_code == 0 and summary.stats.done == 2
    schemas = [pq.read_schema(p) for p in out.glob("part-*.parquet")]
    assert all(schema.equals(schemas[0]) for schema in schemas)
    assert "out_certainty" in schemas[0].names and "out_confidence" not in schemas[0].names
    assert batchgen.run_job(job, local_server=True, output={"path": out}).stats.done == 240 - 2
    table = batchgen.read_results(out)
    assert table.num_rows == 240 and table.column("out_certainty").null_count == 0


def test_the_core_never_imports_ray() -> None:
    """Ray is an optional extra: importing batchgen, its API and its command line loads none of it."""
    code = "import sys, batchgen, batchgen.cli, batchgen.pipeline; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "False"


def test_engine_ray_without_ray_installed_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the `ray` extra, `--engine ray` ends with exit 2 and says what to install; nothing is sent."""
    monkeypatch.setitem(sys.modules, "batchgen.distributed.engine", None)  # what a missing `ray` makes of it
    job = demo_tree(tmp_path)
    assert batchgen.cli.main(["run", str(job), "--engine", "ray", "--local-server", "--quiet"]) == 2
    assert "pip install 'batchgen[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_engine_ray_refuses_what_it_cannot_do_before_starting_ray(tmp_path: Path) -> None:
    """`--limit` with engine ray is a ConfigError raised before Ray starts."""
    job = demo_tree(tmp_path)
    with pytest.raises(batchgen.ConfigError, match="--limit"):
        batchgen.run_job(job, local_server=True, engine="ray", limit=5)
