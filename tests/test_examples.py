"""Every example job in jobs/ passes its start-up checks and runs against the local server: one row per input
row sent, all `ok`, with the columns its comments promise."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pytest

from batchgen.cli import main
from batchgen.job import load_job

ROOT = Path(__file__).resolve().parent.parent
JOBS = sorted((ROOT / "jobs").glob("*.toml"))
LIMIT = 6

# Columns each example's results must have beyond the contract's (its keep and typed columns).
EXPECTED = {
    "demo": {"review", "stars", "out_sentiment", "out_confidence", "out_aspects"},
    "demo_batch": {"review", "stars", "out_sentiment", "out_confidence", "out_aspects", "traffic"},
    "support_tickets": {"subject", "channel", "customer_tier", "created_at", "out_primary_topic", "out_urgency"},
    "invoices": {"source_file", "out_invoice_number", "out_total", "out_line_items", "out_vendor"},
    "grounded_qa": {"question", "asked_by"},
    "news_entities": {"section", "paragraph", "out_entities", "out_relations"},
    "product_images": {"image", "listing_title", "out_category", "out_matches_title"},
}


def test_every_example_is_listed_here() -> None:
    assert {job.stem for job in JOBS} == set(EXPECTED)


@pytest.mark.parametrize("job", JOBS, ids=[job.stem for job in JOBS])
def test_the_example_runs_against_the_local_server(
    job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(job), "--local-server"]) == 0
    out = tmp_path / job.stem
    assert main(["run", str(job), "--local-server", "--output", str(out), "--limit", str(LIMIT), "--quiet"]) == 0
    table = ds.dataset(out, format="parquet").to_table()
    assert table.num_rows == LIMIT
    assert table.column("status").to_pylist() == ["ok"] * LIMIT, table.column("error").to_pylist()
    assert EXPECTED[job.stem] <= set(table.column_names)
    assert table.column("model").unique().to_pylist() == [load_job(job).model]
    assert "cost: $" in capsys.readouterr().out


def test_grounded_answers_carry_their_sources(tmp_path: Path) -> None:
    out = tmp_path / "qa"
    job = ROOT / "jobs" / "grounded_qa.toml"
    assert main(["run", str(job), "--local-server", "--output", str(out), "--limit", "3", "--quiet"]) == 0
    table = ds.dataset(out, format="parquet").to_table()
    assert all(queries for queries in table.column("grounding_queries").to_pylist())
    assert all(chunk["uri"] for chunks in table.column("grounding_chunks").to_pylist() for chunk in chunks)
    assert table.column("output_json").null_count == 3  # text mode
