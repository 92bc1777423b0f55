"""The command line end to end, over real HTTP against the local Gemini server."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from servers import server_process, server_stats

from batchgen.cli import main
from batchgen.records import RESULT_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "jobs" / "demo.toml"
KEY = "cli-test-key-8d0e"


def job_copy(tmp_path: Path, **replace: str) -> Path:
    """The demo job, its data and schema copied into `tmp_path` (relative paths intact), with edits."""
    for folder in ("jobs", "data", "schemas"):
        (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / "data" / "reviews.jsonl").write_bytes((ROOT / "data" / "reviews.jsonl").read_bytes())
    (tmp_path / "schemas" / "sentiment.json").write_bytes((ROOT / "schemas" / "sentiment.json").read_bytes())
    text = DEMO.read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    job = tmp_path / "jobs" / "demo.toml"
    job.write_text(text)
    return job


def results(folder: Path) -> pa.Table:
    return ds.dataset(folder, format="parquet").to_table()


def test_demo_job_writes_one_typed_row_per_input_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["run", str(DEMO), "--local-server", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "240 rows" in printed
    table = results(out)
    assert table.num_rows == 240
    assert set(RESULT_COLUMNS) <= set(table.column_names)
    assert {"review", "stars", "out_sentiment", "out_confidence"} <= set(table.column_names)
    assert sorted(table.column("id").to_pylist()) == [f"r{i:04d}" for i in range(240)]
    assert table.column("status").unique().to_pylist() == ["ok"]
    # every tool a user reaches for reads it
    assert len(pd.read_parquet(out)) == 240
    assert pl.read_parquet(out / "*.parquet").height == 240
    count = duckdb.sql(f"select count(*) from '{out}/*.parquet' where prompt_token_count > 0").fetchall()
    assert count == [(240,)]
    assert (out / "_manifest.json").exists()


def test_rerun_resumes_and_sends_nothing_more(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["run", str(DEMO), "--local-server", "--output", str(out), "--limit", "50"]) == 0
    assert results(out).num_rows == 50
    assert main(["run", str(DEMO), "--local-server", "--output", str(out)]) == 0
    assert main(["run", str(DEMO), "--local-server", "--output", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()
    assert any("0 attempts" in line for line in last[-4:])
    table = results(out)
    assert table.num_rows == 240 and len(set(table.column("id").to_pylist())) == 240


def test_changed_job_into_the_same_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["run", str(DEMO), "--local-server", "--output", str(out), "--limit", "5"]) == 0
    assert main(["run", str(DEMO), "--local-server", "--output", str(out), "--model", "gemini-2.5-flash-lite"]) == 2
    assert "different job" in capsys.readouterr().err
    assert (
        main(
            [
                "run",
                str(DEMO),
                "--local-server",
                "--output",
                str(out),
                "--model",
                "gemini-2.5-flash-lite",
                "--force",
                "--limit",
                "6",
            ]
        )
        == 0
    )


def test_check_runs_start_up_checks_without_sending(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(DEMO)]) == 0
    assert "240 input rows" in capsys.readouterr().out


def test_bad_job_exits_2_naming_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = job_copy(tmp_path, **{"concurrency = 32": "concurrency = -1"})
    assert main(["run", str(job), "--local-server"]) == 2
    err = capsys.readouterr().err
    assert str(job) in err and "limits.concurrency" in err


def test_missing_key_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(DEMO), "--base-url", "http://127.0.0.1:9"]) == 2
    assert "GEMINI_API_KEY is not set" in capsys.readouterr().err


def test_wrong_key_stops_after_one_request_with_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "not-the-key-0000")
    with server_process("--api-key", KEY) as url:
        code = main(["run", str(DEMO), "--base-url", url, "--output", str(tmp_path / "o")])
        assert code == 3
        assert server_stats(url)["requests"] == 1
    err = capsys.readouterr().err
    assert "stopped" in err and "INVALID_ARGUMENT" in err


def test_the_key_never_reaches_output_logs_or_manifest(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    out = tmp_path / "o"
    with server_process("--api-key", KEY, "--fail-rate", "0.3", "--seed", "3", "--retry-delay-s", "0.05") as url:
        main(["run", str(DEMO), "--base-url", url, "--output", str(out), "--limit", "60"])
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err + caplog.text
    for file in out.rglob("*"):
        assert KEY.encode() not in file.read_bytes(), file


def test_fault_injection_every_row_final_and_counts_match_the_server_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 % injected faults of every kind: every row ends with a final status, none lost or duplicated, and the
    tokens in the results equal what the server billed."""
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    job = job_copy(tmp_path, **{"max_attempts = 6": "max_attempts = 4", "timeout_s = 120": "timeout_s = 1"})
    out = tmp_path / "o"
    faults = ("--fail-rate", "0.3", "--violate-rate", "0.1", "--seed", "11", "--slow-s", "2", "--retry-delay-s", "0.05")
    # 429s stay under the limiter's shared-capacity threshold (5 % of requests), so they are absorbed by
    # retries rather than slowing the whole run; test_limiter covers the congested case.
    weights = "429=0.6,429help=0.4,500=1,503=2,drop=1,slow=1,nonjson=1,nocandidates=1"
    with server_process("--api-key", KEY, *faults, "--fault-weights", weights) as url:
        code = main(["run", str(job), "--base-url", url, "--output", str(out), "--concurrency", "16"])
        ledger = server_stats(url)
    assert code in (0, 1)
    table = results(out)
    ids = table.column("id").to_pylist()
    assert sorted(ids) == [f"r{i:04d}" for i in range(240)]
    statuses = set(table.column("status").to_pylist())
    assert statuses <= {"ok", "invalid_json", "schema_mismatch", "blocked", "truncated", "failed"}
    assert sum(table.column("responses").to_pylist()) == ledger["billed_responses"]
    billed = ledger["billed"]
    assert pa.compute.sum(table.column("prompt_token_count")).as_py() == billed["promptTokenCount"]
    assert pa.compute.sum(table.column("total_token_count")).as_py() == billed["totalTokenCount"]


def test_duplicate_ids_stop_before_sending_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = job_copy(tmp_path)
    data = tmp_path / "data" / "reviews.jsonl"
    data.write_bytes(data.read_bytes() + data.read_bytes().splitlines(keepends=True)[0])
    out = tmp_path / "o"
    assert main(["run", str(job), "--local-server", "--output", str(out)]) == 2
    assert "duplicate ids: 'r0000' x2" in capsys.readouterr().err
    assert not out.exists() or not list(out.glob("*.parquet"))
    assert main(["run", str(job), "--local-server", "--output", str(out), "--allow-duplicate-ids"]) == 0
    ids = results(out).column("id").to_pylist()
    assert len(ids) == 241 and "r0000#2" in ids
