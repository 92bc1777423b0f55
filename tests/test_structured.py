"""Structured output end to end: re-asks over real HTTP, billed tokens of every attempt, typed columns."""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from servers import server_process, server_stats

from batchgen.cli import main

ROOT = Path(__file__).resolve().parent.parent
KEY = "structured-key-51"

JOB = """
model = "gemini-2.5-flash"
base_url = "http://127.0.0.1:9"

[input]
path = "in.jsonl"
id_field = "id"
prompt_field = "p"

[request.generationConfig]
responseMimeType = "application/json"
responseSchema = "{schema}"
maxOutputTokens = 200
thinkingConfig = {{ thinkingBudget = 0 }}

[limits]
concurrency = 4
max_reasks = {reasks}

[output]
path = "out"
"""


def write(tmp_path: Path, prompts: list[str], reasks: int = 1) -> Path:
    (tmp_path / "in.jsonl").write_bytes(
        b"".join(orjson.dumps({"id": f"r{i}", "p": p}) + b"\n" for i, p in enumerate(prompts))
    )
    job = tmp_path / "job.toml"
    job.write_text(JOB.format(schema=ROOT / "schemas" / "sentiment.json", reasks=reasks))
    return job


def test_reask_fixes_bad_output_and_bills_every_attempt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each failure kind is re-asked once; both responses' tokens are in the row, equal to what the server billed."""
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    kinds = ["schema_violation", "invalid_json", "max_tokens"]
    job = write(tmp_path, [f"review {k} [[fake:{k}*1]]" for k in kinds] + ["plain review"])
    with server_process("--api-key", KEY) as url:
        assert main(["run", str(job), "--base-url", url]) == 0
        ledger = server_stats(url)
    table = ds.dataset(tmp_path / "out").to_table().sort_by("id")
    rows = table.to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert [r["reasks"] for r in rows] == [1, 1, 1, 0]
    assert [r["responses"] for r in rows] == [2, 2, 2, 1]
    assert sum(r["responses"] for r in rows) == ledger["billed_responses"]
    assert sum(r["total_token_count"] for r in rows) == ledger["billed"]["totalTokenCount"]


def test_without_reasks_each_failure_keeps_its_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    kinds = {
        "schema_violation": "schema_mismatch",
        "invalid_json": "invalid_json",
        "max_tokens": "truncated",
        "blocked": "blocked",
    }
    job = write(tmp_path, [f"x [[fake:{k}]]" for k in kinds], reasks=0)
    with server_process("--api-key", KEY) as url:
        main(["run", str(job), "--base-url", url])
    table = ds.dataset(tmp_path / "out").to_table().sort_by("id")
    assert table.column("status").to_pylist() == list(kinds.values())
    assert all(table.column("error").to_pylist())
    # typed columns: nulls for rows that are not ok, and the enum stored as a dictionary
    assert table.column("out_sentiment").null_count == 4
    assert pa.types.is_dictionary(table.schema.field("out_sentiment").type)


def test_typed_columns_read_back_in_duckdb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    job = write(tmp_path, [f"review number {i}" for i in range(10)])
    with server_process("--api-key", KEY) as url:
        assert main(["run", str(job), "--base-url", url]) == 0
    described = {
        row[0]: row[1] for row in duckdb.execute(f"describe select * from '{tmp_path / 'out'}/*.parquet'").fetchall()
    }
    assert described["out_sentiment"] == "VARCHAR"
    assert described["out_confidence"] == "DOUBLE"
    assert described["out_aspects"] == "VARCHAR[]"
    ok = duckdb.execute(
        f"select count(*) from '{tmp_path / 'out'}/*.parquet' "
        "where out_sentiment in ('positive', 'negative', 'neutral', 'mixed')"
    ).fetchall()
    assert ok == [(10,)]
