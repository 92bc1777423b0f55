"""Tests for the cost report: loading results folders, the figures against hand-computed costs, every format.

The known folder below holds 7 rows over 2 models, 2 runs, 2 days (UTC), 4 statuses, with cached tokens, a
thinking-heavy model and a gemini-2.5-pro row above the 200k long-context threshold. Prices come from a price
file written by the test (the shipped numbers may change; these must not):

    gemini-2.5-flash  input 0.30  cached 0.03   output 2.50                      (USD per 1M tokens)
    gemini-2.5-pro    input 1.25  cached 0.125  output 10.00
                      above 200k prompt: input 2.50  cached 0.25  output 15.00

Per row (prompt includes cached; fresh = prompt - cached; tool use is input; thoughts are output):

    id  model  status        run day  prompt  cached cand thoughts tool resp  input $      cached $   output $
    r1  flash  ok            A   1      1000       0  200     3000    0    1  0.0003       0          0.008
    r2  flash  ok            A   1      2000    1500  300     5000    0    1  0.00015      0.000045   0.01325
    r3  flash  invalid_json  A   2      2400       0  800     4000    0    2  0.00072      0          0.012
    r4  flash  failed        B   2      null    null null     null null  0  0            0          0
    r5  pro    ok            B   2   250000   50000 1000      2000    0    1  0.5 (long)   0.0125     0.045
    r6  pro    ok            B   2   300000       0  500      1500  100    2  0.375125     0          0.02
    r7  pro    truncated     A   1    10000       0 8192         0    0    1  0.0125       0          0.08192

    r1: 1000*0.30/1e6 = 0.0003;                   (200+3000)*2.5/1e6 = 0.008
    r2: (2000-1500)*0.30/1e6 = 0.00015;           1500*0.03/1e6 = 0.000045;      (300+5000)*2.5/1e6 = 0.01325
    r3: 2400*0.30/1e6 = 0.00072;                  (800+4000)*2.5/1e6 = 0.012
    r5: one response of 250k > 200k: long tier.   (250000-50000)*2.50/1e6 = 0.5; 50000*0.25/1e6 = 0.0125;
                                                  (1000+2000)*15/1e6 = 0.045
    r6: two responses of 150k each: standard.     (300000+100)*1.25/1e6 = 0.375125; (500+1500)*10/1e6 = 0.02
    r7: 10000*1.25/1e6 = 0.0125;                  8192*10/1e6 = 0.08192

Run A finished r1, r2, r7 on 2026-01-01 and r3 at 00:10 UTC on 2026-01-02 (local evening of the 1st in the
Americas: days are UTC). Run B finished r4, r5, r6 on 2026-01-02.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchgen.errors import ConfigError, InputError, OutputError
from batchgen.report.breakdown import REPORT_COLUMNS, Report, build_report, load_results, load_runs
from batchgen.report.html import (
    ATTEMPTS_COLOUR,
    LATENCY_COLOUR,
    MODEL_COLOURS,
    STATUS_COLOURS,
    attempts_histogram,
    latency_histogram,
    render_html,
    write_html,
)
from batchgen.report.pricing import PriceTable
from batchgen.report.text import FORMATS, render
from batchgen.results.columns import select
from batchgen.results.folder import RunRecord, record_run
from batchgen.results.read import read_results

FLASH, PRO = "gemini-2.5-flash", "gemini-2.5-pro"
RUN_A, RUN_B = "20260101T100000Z-aaaa", "20260102T090000Z-bbbb"
DAY1, DAY2 = "2026-01-01", "2026-01-02"

PRICES = f"""
[models."{FLASH}"]
input = 0.30
cached_input = 0.03
output = 2.50

[models."{PRO}"]
input = 1.25
cached_input = 0.125
output = 10.0
long_context_threshold = 200000
input_long = 2.50
cached_input_long = 0.25
output_long = 15.0
"""

# id, model, status, run, finished_at (UTC), prompt, cached, candidates, thoughts, tool_use, responses,
# attempts, latency_ms
# fmt: off
ROWS: list[tuple[Any, ...]] = [
    ("r1", FLASH, "ok",           RUN_A, "2026-01-01T10:01", 1000,    0,      200,  3000, 0,    1, 1, 1200.0),
    ("r2", FLASH, "ok",           RUN_A, "2026-01-01T10:02", 2000,    1500,   300,  5000, 0,    1, 2, 3400.0),
    ("r3", FLASH, "invalid_json", RUN_A, "2026-01-02T00:10", 2400,    0,      800,  4000, 0,    2, 2, 5100.0),
    ("r4", FLASH, "failed",       RUN_B, "2026-01-02T09:05", None,    None,   None, None, None, 0, 5, 30000.),
    ("r5", PRO,   "ok",           RUN_B, "2026-01-02T09:06", 250_000, 50_000, 1000, 2000, 0,    1, 1, 41000.),
    ("r6", PRO,   "ok",           RUN_B, "2026-01-02T09:07", 300_000, 0,      500,  1500, 100,  2, 2, 52000.),
    ("r7", PRO,   "truncated",    RUN_A, "2026-01-01T10:03", 10_000,  0,      8192, 0,    0,    1, 1, 9000.0),
]
# fmt: on

# (rows, prompt, cached, candidates, thoughts, tool_use, total, input $, cached $, output $, cost $)
EXPECTED: dict[tuple[str, ...], tuple[Any, ...]] = {
    ("total",): (7, 565_400, 51_500, 10_992, 15_500, 100, 591_992, 0.888795, 0.012545, 0.18017, 1.08151),
    (FLASH,): (4, 5_400, 1_500, 1_300, 12_000, 0, 18_700, 0.00117, 0.000045, 0.03325, 0.034465),
    # pro input: 0.5 + 0.375125 + 0.0125 = 0.887625; output: 0.045 + 0.02 + 0.08192 = 0.14692
    (PRO,): (3, 560_000, 50_000, 9_692, 3_500, 100, 573_292, 0.887625, 0.0125, 0.14692, 1.047045),
    # ok = r1 + r2 + r5 + r6: 0.0083 + 0.013445 + 0.5575 + 0.395125 = 0.97437
    ("ok",): (4, 553_000, 51_500, 2_000, 11_500, 100, 566_600, 0.875575, 0.012545, 0.08625, 0.97437),
    ("invalid_json",): (1, 2_400, 0, 800, 4_000, 0, 7_200, 0.00072, 0.0, 0.012, 0.01272),
    ("truncated",): (1, 10_000, 0, 8_192, 0, 0, 18_192, 0.0125, 0.0, 0.08192, 0.09442),
    ("failed",): (1, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0),
    # run A = r1 + r2 + r3 + r7: 0.0083 + 0.013445 + 0.01272 + 0.09442 = 0.128885
    (RUN_A,): (4, 15_400, 1_500, 9_492, 12_000, 0, 36_892, 0.01367, 0.000045, 0.11517, 0.128885),
    # run B = r4 + r5 + r6: 0 + 0.5575 + 0.395125 = 0.952625
    (RUN_B,): (3, 550_000, 50_000, 1_500, 3_500, 100, 555_100, 0.875125, 0.0125, 0.065, 0.952625),
    # day 1 = r1 + r2 + r7: 0.0083 + 0.013445 + 0.09442 = 0.116165
    (DAY1,): (3, 13_000, 1_500, 8_692, 8_000, 0, 29_692, 0.01295, 0.000045, 0.10317, 0.116165),
    # day 2 = r3 + r4 + r5 + r6: 0.01272 + 0 + 0.5575 + 0.395125 = 0.965345
    (DAY2,): (4, 552_400, 50_000, 2_300, 7_500, 100, 562_300, 0.875845, 0.0125, 0.077, 0.965345),
}


# The whole results contract (CONTRACT.md), then a kept input column and a typed output column.
CONTRACT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("status", pa.string()),
        ("text", pa.string()),
        ("output_json", pa.string()),
        ("thoughts", pa.string()),
        ("finish_reason", pa.string()),
        ("block_reason", pa.string()),
        ("prompt_token_count", pa.int64()),
        ("candidates_token_count", pa.int64()),
        ("thoughts_token_count", pa.int64()),
        ("cached_content_token_count", pa.int64()),
        ("tool_use_prompt_token_count", pa.int64()),
        ("total_token_count", pa.int64()),
        ("model", pa.string()),
        ("model_version", pa.string()),
        ("response_id", pa.string()),
        ("attempts", pa.int32()),
        ("responses", pa.int32()),
        ("reasks", pa.int32()),
        ("latency_ms", pa.float64()),
        ("error", pa.string()),
        ("http_status", pa.int32()),
        ("run_id", pa.string()),
        ("finished_at", pa.timestamp("ms", tz="UTC")),
        ("topic", pa.string()),
        ("out_score", pa.float64()),
    ]
)


def contract_table(rows: Sequence[tuple[Any, ...]]) -> pa.Table:
    """ROWS-style tuples as a results part in the full contract schema."""
    records = []
    for (
        rid,
        model,
        status,
        run,
        finished,
        prompt,
        cached,
        cand,
        thoughts,
        tool,
        responses,
        attempts,
        ms,
    ) in rows:
        records.append(
            {
                "id": rid,
                "status": status,
                "text": "{}",
                "prompt_token_count": prompt,
                "candidates_token_count": cand,
                "thoughts_token_count": thoughts,
                "cached_content_token_count": cached,
                "tool_use_prompt_token_count": tool,
                "total_token_count": None if prompt is None else prompt + cand + thoughts + tool,
                "model": model,
                "attempts": attempts,
                "responses": responses,
                "reasks": 0,
                "latency_ms": ms,
                "run_id": run,
                "finished_at": datetime.fromisoformat(finished).replace(tzinfo=UTC),
                "topic": "x",
                "out_score": 1.5,
            }
        )
    return pa.Table.from_pylist(records, schema=CONTRACT_SCHEMA)


def write_folder(folder: Path, parts: Sequence[Sequence[tuple[Any, ...]]], manifest: Any = None) -> Path:
    folder.mkdir(parents=True)
    for number, rows in enumerate(parts):
        pq.write_table(contract_table(rows), folder / f"part-{number:05d}.parquet")
    if manifest is not None:
        (folder / "_manifest.json").write_bytes(orjson.dumps(manifest))
    return folder


MANIFEST = {
    "format": 1,
    "job": {"file": "jobs/demo.toml", "model": FLASH, "fingerprint": "ab"},
    "runs": [
        {
            "run_id": RUN_A,
            "started_at": "2026-01-01T10:00:00Z",
            "ended_at": "2026-01-02T00:10:05Z",
            "model": FLASH,
            "exit_code": 0,
            "rows": 4,
        },
        {
            "run_id": RUN_B,
            "started_at": "2026-01-02T09:00:00Z",
            "ended_at": "2026-01-02T09:07:01Z",
            "model": FLASH,
            "exit_code": 0,
            "rows": 3,
        },
    ],
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The known folder: run A's rows in one part, run B's in another, junk that is not data beside them."""
    run_a = [row for row in ROWS if row[3] == RUN_A]
    run_b = [row for row in ROWS if row[3] == RUN_B]
    out = write_folder(tmp_path / "out", [run_a, run_b], MANIFEST)
    # A part being written and a hidden file are not data: reading them would double-count or fail.
    pq.write_table(contract_table(ROWS), out / ".part-00002.parquet.tmp")
    pq.write_table(contract_table(ROWS), out / "_part-00003.parquet")
    (out / ".DS_Store").write_bytes(b"\0junk")
    return out


@pytest.fixture
def prices(tmp_path: Path) -> PriceTable:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES, encoding="utf-8")
    return PriceTable.load(path)


@pytest.fixture
def report(folder: Path, prices: PriceTable) -> Report:
    return build_report(load_results([folder]), prices, runs=load_runs([folder]))


def figures(line: Any) -> tuple[Any, ...]:
    return (
        line.rows,
        line.prompt,
        line.cached,
        line.candidates,
        line.thoughts,
        line.tool_use,
        line.total,
        pytest.approx(line.cost.input, abs=1e-12),
        pytest.approx(line.cost.cached, abs=1e-12),
        pytest.approx(line.cost.output, abs=1e-12),
        pytest.approx(line.cost.total, abs=1e-12),
    )


def check(lines: Mapping[tuple[str, ...], Any]) -> None:
    for key, line in lines.items():
        assert figures(line) == EXPECTED[key], key


def test_load_results_reads_every_part_and_nothing_else(folder: Path) -> None:
    """All part files are read, files starting with `_` or `.` are not, and only the report's columns."""
    table = load_results([folder])
    assert sorted(table["id"].to_pylist()) == [row[0] for row in ROWS]
    assert table.schema == select(REPORT_COLUMNS)


def test_a_part_written_before_a_metadata_column_existed_reads_it_as_null(folder: Path) -> None:
    """These parts have no reply-metadata columns (`service_tier` among them): never reported, not an error."""
    table = load_results([folder])
    assert table["service_tier"].null_count == table.num_rows


def test_a_part_without_a_fixed_column_is_not_a_results_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(contract_table(ROWS).drop_columns(["run_id"]), out / "part-0.parquet")
    with pytest.raises(InputError, match="no column run_id"):
        load_results([out])


def test_rows_at_another_service_tier_are_counted_priced_at_it_and_noted(folder: Path, prices: PriceTable) -> None:
    """Rows whose responses report the flex or priority tier are counted by it and priced at its multiplier
    (r1, r2 flex at half; r4, failed, costs nothing at any tier), and the note says what that cost or saved; a
    tier the price table does not know is noted and priced as the tier asked for."""
    table = load_results([folder])
    tiers = ["flex", "flex", "standard", "priority"] + [None] * (table.num_rows - 4)
    table = table.set_column(table.schema.get_field_index("service_tier"), "service_tier", pa.array(tiers))
    report = build_report(table, prices)
    assert report.tiers == {"flex": 2, "priority": 1, "standard": 1}
    by_tier = {line.key[0]: line for line in report.by_tier}
    assert by_tier["flex"].cost.total == pytest.approx((0.0083 + 0.013445) / 2)
    assert report.totals.at_standard.total == pytest.approx(1.08151)
    assert "Service tiers: flex rows at 0.5x" in render(report, "markdown")
    assert orjson.loads(render(report, "json"))["service_tiers"] == {"flex": 2, "priority": 1, "standard": 1}
    standard = table.set_column(
        table.schema.get_field_index("service_tier"), "service_tier", pa.array(["standard"] * table.num_rows)
    )
    assert "ervice tier" not in render(build_report(standard, prices), "markdown")
    odd = table.set_column(table.schema.get_field_index("service_tier"), "service_tier", pa.array(["turbo"] * 7))
    assert "(7 reported 'turbo', in usageMetadata.serviceTier) are priced at the tier they asked for" in render(
        build_report(odd, prices), "markdown"
    )


def test_load_results_concatenates_folders(tmp_path: Path) -> None:
    """Several folders, even of jobs with different extra columns, load as one table."""
    first = write_folder(tmp_path / "a", [ROWS[:2]])
    second = tmp_path / "b"
    second.mkdir()
    pq.write_table(contract_table(ROWS[2:]).drop_columns(["topic", "out_score"]), second / "part-0.parquet")
    assert load_results([first, second]).num_rows == len(ROWS)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        pytest.param(lambda p: None, "no such results folder", id="missing"),
        pytest.param(lambda p: p.mkdir(), "no part-", id="empty"),
        pytest.param(
            lambda p: (p.mkdir(), (p / "part-0.parquet").write_bytes(b"nope")), "unreadable results part", id="corrupt"
        ),
        pytest.param(
            lambda p: (p.mkdir(), pq.write_table(pa.table({"id": ["x"]}), p / "part-0.parquet")),
            "no column status",
            id="not-results",
        ),
    ],
)
def test_unreadable_folder_is_an_input_error_naming_it(tmp_path: Path, setup: Any, message: str) -> None:
    """A folder that is missing, empty, corrupt or of another shape fails with InputError naming it."""
    good = write_folder(tmp_path / "good", [ROWS])
    bad = tmp_path / "bad"
    setup(bad)
    with pytest.raises(InputError, match=message) as info:
        load_results([good, bad])
    assert info.value.file == str(bad)


def test_a_folder_whose_first_part_is_not_written_yet_reports_no_rows(tmp_path: Path, prices: PriceTable) -> None:
    """A run has started (its manifest is there) but not flushed: that is a batchgen folder with no rows yet,
    not "not a batchgen results folder"."""
    out = tmp_path / "out"
    out.mkdir()
    record_run(out, {"fingerprint": "f"}, RunRecord("r1", model=FLASH))
    report = build_report(load_results([out]), prices, runs=load_runs([out]))
    assert report.totals.rows == 0 and [entry.run.run_id for entry in report.runs] == ["r1"]
    assert "No rows yet" in render(report, "table")
    assert read_results([out]).num_rows == 0


@pytest.mark.parametrize("width", [80, 120])
def test_a_table_fits_the_terminal_it_is_shown_in(report: Report, width: int) -> None:
    """Tables fit the terminal's width (tokens and dollars split when they would not fit together); without
    a terminal they are as wide as the figures need, one table per breakdown."""
    narrow = render(report, "table", width=width)
    assert max(len(line) for line in narrow.splitlines()) <= width
    assert "By model: tokens" in narrow and "By model: cost" in narrow and "$1.081510" in narrow
    wide = render(report, "table")
    assert "By model: tokens" not in wide and max(len(line) for line in wide.splitlines()) > 120


def test_no_folder_is_a_config_error() -> None:
    """Asking for a report of nothing is a usage error."""
    with pytest.raises(ConfigError):
        load_results([])


def test_load_runs_reads_manifests(folder: Path, tmp_path: Path) -> None:
    """Runs come from `_manifest.json`; a folder without one has none."""
    bare = write_folder(tmp_path / "bare", [ROWS])
    runs = load_runs([folder, bare])
    assert [(e.run.run_id, e.run.started_at, e.run.ended_at, e.run.exit_code) for e in runs] == [
        (RUN_A, "2026-01-01T10:00:00Z", "2026-01-02T00:10:05Z", 0),
        (RUN_B, "2026-01-02T09:00:00Z", "2026-01-02T09:07:01Z", 0),
    ]
    assert runs[0].folder == str(folder)


@pytest.mark.parametrize("content", [b"{not json", b'{"runs": 3}', b'{"runs": [{"started_at": "x"}]}'])
def test_bad_manifest_is_an_input_error(tmp_path: Path, content: bytes) -> None:
    """A manifest that is not the contract's JSON fails with InputError naming it."""
    out = write_folder(tmp_path / "out", [ROWS])
    (out / "_manifest.json").write_bytes(content)
    with pytest.raises(InputError) as info:
        load_runs([out])
    assert info.value.file == str(out / "_manifest.json")


def test_totals_match_hand_computed_costs(report: Report) -> None:
    """Grand totals: every row's cost at its own tier, thinking as output, cache reads at the cached rate."""
    check({("total",): report.totals})


def test_by_model_matches_hand_computed_costs(report: Report) -> None:
    """Per model; r5 alone is long-tier (r6's 300k prompt was two 150k responses)."""
    assert [line.key for line in report.by_model] == [(FLASH,), (PRO,)]
    check({line.key: line for line in report.by_model})


def test_by_status_matches_hand_computed_costs(report: Report) -> None:
    """Per status, usable rows first; a failed row without usage counts as a row that cost nothing."""
    assert [line.key for line in report.by_status] == [
        ("ok",),
        ("invalid_json",),
        ("truncated",),
        ("failed",),
    ]
    check({line.key: line for line in report.by_status})


def test_by_run_matches_hand_computed_costs(report: Report) -> None:
    """Per run, in run-id (start time) order."""
    assert [line.key for line in report.by_run] == [(RUN_A,), (RUN_B,)]
    check({line.key: line for line in report.by_run})


def test_by_day_uses_the_utc_date_of_finished_at(report: Report) -> None:
    """r3 finished at 00:10 UTC on the 2nd and counts on the 2nd, not with the rest of run A."""
    assert [line.key for line in report.by_day] == [(DAY1,), (DAY2,)]
    check({line.key: line for line in report.by_day})


def test_by_day_and_model_adds_up_to_each_day(report: Report) -> None:
    """The day x model cells (the charts' stacks) sum to the day totals; pro ran on day 1 (r7) and day 2."""
    cells = {line.key: line for line in report.by_day_model}
    assert set(cells) == {(DAY1, FLASH), (DAY1, PRO), (DAY2, FLASH), (DAY2, PRO)}
    # day 1 pro = r7 alone: 0.09442; day 2 pro = r5 + r6: 0.5575 + 0.395125 = 0.952625
    assert cells[(DAY1, PRO)].cost.total == pytest.approx(0.09442)
    assert cells[(DAY2, PRO)].cost.total == pytest.approx(0.952625)
    for day in (DAY1, DAY2):
        assert cells[(day, FLASH)].cost.total + cells[(day, PRO)].cost.total == pytest.approx(EXPECTED[(day,)][-1])


def test_fresh_input_is_prompt_minus_cached(report: Report) -> None:
    """Fresh input excludes the cached part of the prompt."""
    assert report.totals.fresh_input == 565_400 - 51_500


def test_unknown_model_fails_the_report_never_zero(tmp_path: Path, prices: PriceTable) -> None:
    """A model the table lacks makes the report fail, even when its rows hold no tokens."""
    rows = [ROWS[0], ("x1", "gemini-9-ultra", "failed", RUN_A, "2026-01-01T11:00", *([None] * 5), 0, 1, 10.0)]
    table = load_results([write_folder(tmp_path / "out", [rows])])
    with pytest.raises(ConfigError, match="gemini-9-ultra"):
        build_report(table, prices)


def test_user_price_override_changes_the_cost(folder: Path, tmp_path: Path) -> None:
    """With flash output at $5 instead of $2.50, flash's output cost doubles: 2 * 0.03325 = 0.0665."""
    path = tmp_path / "mine.toml"
    path.write_text(PRICES.replace("output = 2.50", "output = 5.0"), encoding="utf-8")
    by_model = {line.key: line for line in build_report(load_results([folder]), PriceTable.load(path)).by_model}
    assert by_model[(FLASH,)].cost.output == pytest.approx(0.0665)
    assert by_model[(PRO,)].cost.total == pytest.approx(1.047045)


def test_dated_model_names_are_priced_and_listed_as_written(tmp_path: Path, prices: PriceTable) -> None:
    """A results model `models/gemini-2.5-flash-preview-09-2025` is priced as gemini-2.5-flash."""
    name = "models/gemini-2.5-flash-preview-09-2025"
    table = load_results([write_folder(tmp_path / "out", [[(*ROWS[0][:1], name, *ROWS[0][2:])]])])
    report = build_report(table, prices)
    assert [line.key for line in report.by_model] == [(name,)]
    assert report.prices[name].model == FLASH
    assert report.totals.cost.total == pytest.approx(0.0083)


def test_empty_results_give_a_zero_report(tmp_path: Path, prices: PriceTable) -> None:
    """Part files without rows report zeros, not an error."""
    report = build_report(load_results([write_folder(tmp_path / "out", [[]])]), prices)
    assert report.totals.rows == 0
    assert report.by_model == ()


def test_rows_are_priced_at_the_tier_they_were_served_at(tmp_path: Path, prices: PriceTable) -> None:
    """Batch and flex rows cost half, priority twice; rows of folders written before `traffic` existed (and
    rows never sent) are standard. Each line says what it would have cost at standard, and the notes the saving."""
    old = write_folder(tmp_path / "old", [ROWS[:2]])  # r1 + r2: $0.021745, no traffic column
    new = tmp_path / "new"
    new.mkdir()
    rows = [ROWS[0], ROWS[1], ROWS[0], ROWS[1]]
    table = contract_table(rows).append_column("traffic", pa.array(["batch", "batch", "flex", "priority"]))
    pq.write_table(table, new / "part-00000.parquet")
    report = build_report(load_results([old, new]), prices)
    tiers = {line.key[0]: line for line in report.by_tier}
    assert list(tiers) == ["standard", "batch", "flex", "priority"]
    assert tiers["standard"].cost.total == pytest.approx(0.021745)
    assert tiers["batch"].cost.total == pytest.approx(0.021745 / 2)
    assert tiers["flex"].cost.total == pytest.approx(0.0083 / 2)
    assert tiers["priority"].cost.total == pytest.approx(0.013445 * 2)
    assert tiers["batch"].at_standard.total == pytest.approx(0.021745)
    total = report.totals
    assert total.cost.total == pytest.approx(0.021745 * 1.5 + 0.0083 / 2 + 0.013445 * 2)
    assert total.at_standard.total == pytest.approx(0.021745 * 3)
    assert total.saving == pytest.approx(total.at_standard.total - total.cost.total)
    note = next(line for line in render(report, "table").splitlines() if line.startswith("Service tiers"))
    assert "batch rows at 0.5x, flex rows at 0.5x, priority rows at 2x" in note
    assert f"${total.at_standard.total:,.6f} at standard" in note
    document = orjson.loads(render(report, "json"))
    assert [entry["tier"] for entry in document["by_tier"]] == list(tiers)
    assert document["totals"]["cost_at_standard_usd"] == pytest.approx(total.at_standard.total)


def test_a_report_at_standard_says_nothing_about_tiers(report: Report) -> None:
    assert [line.key for line in report.by_tier] == [("standard",)]
    assert report.totals.saving == 0
    assert "Service tiers" not in render(report, "table")


# Formats --------------------------------------------------------------------------------------------------


def test_json_holds_every_breakdown_at_full_precision(report: Report) -> None:
    """The JSON document parses and carries the same figures, keyed by dimension."""
    document = orjson.loads(render(report, "json"))
    assert document["totals"]["cost_usd"] == pytest.approx(1.08151)
    assert document["totals"]["fresh_input_tokens"] == 513_900
    assert [entry["model"] for entry in document["by_model"]] == [FLASH, PRO]
    assert document["by_model"][1]["cost_input_usd"] == pytest.approx(0.887625)
    assert {entry["status"] for entry in document["by_status"]} == {
        "ok",
        "invalid_json",
        "truncated",
        "failed",
    }
    assert [entry["run_id"] for entry in document["by_run"]] == [RUN_A, RUN_B]
    assert [entry["day"] for entry in document["by_day"]] == [DAY1, DAY2]
    assert len(document["by_day_model"]) == 4
    assert document["runs"][1]["ended_at"] == "2026-01-02T09:07:01Z"
    assert document["prices"][PRO]["input_long"] == 2.5


def test_csv_reads_back_to_the_same_figures(report: Report) -> None:
    """Every breakdown line is one CSV record with exact figures."""
    records = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    keyed = {(record["breakdown"], record["key"]): record for record in records}
    assert len(records) == 1 + 2 + 4 + 2 + 2 + 1
    for (breakdown, key), expected in [
        (("total", "total"), EXPECTED[("total",)]),
        (("model", PRO), EXPECTED[(PRO,)]),
        (("status", "ok"), EXPECTED[("ok",)]),
        (("run_id", RUN_B), EXPECTED[(RUN_B,)]),
        (("day", DAY2), EXPECTED[(DAY2,)]),
    ]:
        record = keyed[(breakdown, key)]
        assert int(record["rows"]) == expected[0]
        assert int(record["thoughts_tokens"]) == expected[4]
        assert float(record["cost_usd"]) == pytest.approx(expected[-1])
    assert keyed[("total", "total")]["cost_cached_usd"] == "0.012545"  # no float noise (0.012544999999999999)


def test_table_shows_every_section_and_cost(report: Report) -> None:
    """The terminal table names every breakdown and shows dollars rounded for reading."""
    text = render(report, "table")
    for expected in (
        "By model",
        "By status",
        "By run",
        "By day",
        "Runs",
        "Prices applied",
        FLASH,
        RUN_B,
        DAY2,
    ):
        assert expected in text
    assert "$1.081510" in text  # the grand total, to the micro-dollar
    assert "$0.000045" in text  # flash's cache reads: small runs do not round to $0.00
    assert "$1.25 / $0.125 / $10.00; above 200,000: $2.50 / $0.25 / $15.00" in text  # pro's prices
    assert "\x1b[" not in text  # no terminal escapes in a string meant for files too
    assert all(line == line.rstrip() for line in text.splitlines())


def test_markdown_tables_are_well_formed(report: Report) -> None:
    """Markdown has one pipe table per section, each row with as many cells as its heading."""
    text = render(report, "markdown")
    assert "## By model" in text and "## By day (UTC)" in text
    tables = [block for block in text.split("\n\n") if block.startswith("|")]
    assert len(tables) == 8  # total, model, status, run, day, tier, runs, prices
    for block in tables:
        widths = {line.count(" | ") for line in block.splitlines()}
        assert len(widths) == 1, block
    assert f"| {PRO} | 3 | 560,000 |" in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders(report: Report, fmt: Any) -> None:
    """Each advertised format produces non-empty text ending in a newline."""
    assert render(report, fmt).endswith("\n")


def test_unknown_format_is_rejected(report: Report) -> None:
    """A format name outside FORMATS is a programming error, not an empty report."""
    with pytest.raises(ValueError, match="unknown report format"):
        render(report, "yaml")  # type: ignore[arg-type]


# HTML -----------------------------------------------------------------------------------------------------


@pytest.fixture
def html(report: Report, folder: Path) -> str:
    return render_html(report, load_results([folder]))


def test_html_is_self_contained(html: str) -> None:
    """The page fetches nothing: no script, no stylesheet link, no URL in src/href/url(), no http at all."""
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(", html, re.IGNORECASE)
    assert not re.search(r"""\b(?:src|href)\s*=""", html, re.IGNORECASE)
    assert "http:" not in html and "https:" not in html


def test_html_has_the_five_charts(html: str) -> None:
    """Tokens and cost by day and model, status, latency and attempts, each an inline SVG."""
    labels = re.findall(r'<svg class="chart"[^>]*aria-label="([^"]+)"', html)
    assert labels == ["tokens", "cost", "status", "latency", "attempts"]
    assert html.count("</svg>") == 5


def test_html_stacks_each_day_by_model(html: str) -> None:
    """Each (day, model) cell is one coloured bar segment whose tooltip gives the exact figure."""
    flash, pro = MODEL_COLOURS[0], MODEL_COLOURS[1]
    # day 2 pro = r5 + r6: 253_000 + 302_100 = 555_100 tokens, costing 0.5575 + 0.395125 = 0.952625
    assert f'fill="{pro}"><title>2026-01-02, {PRO}: 555k</title>' in html
    assert f'fill="{pro}"><title>2026-01-02, {PRO}: $0.952625</title>' in html
    # day 1 flash = r1 + r2: 4_200 + 7_300 = 11_500 tokens
    assert f'fill="{flash}"><title>2026-01-01, {FLASH}: 11.5k</title>' in html
    for status in ("ok", "invalid_json", "truncated", "failed"):
        assert f'fill="{STATUS_COLOURS[status]}"><title>{status}:' in html


def test_html_shows_the_figures_and_runs(html: str) -> None:
    """The summary and tables carry the same figures as the text formats, and the runs' start and end."""
    assert "$1.081510" in html
    assert "<td>2026-01-02T09:07:01Z</td>" in html
    assert '<td class="n">573,292</td>' in html  # pro's total tokens


def test_html_escapes_names(tmp_path: Path) -> None:
    """Model names come from data: they are escaped, never markup."""
    name = "<b>evil</b>"
    prices_file = tmp_path / "p.toml"
    prices_file.write_text(f'[models."{name}"]\ninput = 1\noutput = 1\ncached_input = 1\n', encoding="utf-8")
    table = load_results([write_folder(tmp_path / "out", [[(*ROWS[0][:1], name, *ROWS[0][2:])]])])
    page = render_html(build_report(table, PriceTable.load(prices_file)), table)
    assert name not in page and "&lt;b&gt;evil&lt;/b&gt;" in page


def test_latency_histogram_bins_by_round_widths(folder: Path) -> None:
    """Latencies 1.2, 3.4, 5.1, 9, 30, 41, 52 s: the 99th percentile (52 s) over 20 bins gives 5 s bins."""
    labels, counts = latency_histogram(load_results([folder])["latency_ms"])
    assert labels == [f"{5 * k} s" for k in range(11)]
    # floor(v / 5000): 0, 0, 1, 1 (9 s), 6, 8, 10
    assert counts == [2, 2, 0, 0, 0, 0, 1, 0, 1, 0, 1]


def test_latency_histogram_puts_stragglers_in_one_tail_bin() -> None:
    """199 rows at 100 ms and one at 60 s: 5 ms bins up to the 100 ms bin, then one '≥ 105 ms' bar."""
    labels, counts = latency_histogram(pa.chunked_array([[100.0] * 199 + [60_000.0, None]]))
    assert len(labels) == 22 and labels[-1] == "≥ 105 ms" and labels[20] == "100 ms"
    assert counts[20] == 199 and counts[21] == 1 and sum(counts) == 200


def test_attempts_histogram_counts_each_number_of_attempts(folder: Path) -> None:
    """Attempts 1, 2, 2, 5, 1, 2, 1: three rows took 1, three took 2, one took 5."""
    assert attempts_histogram(load_results([folder])["attempts"]) == (
        ["1", "2", "3", "4", "5"],
        [3, 3, 0, 0, 1],
    )
    labels, counts = attempts_histogram(pa.chunked_array([[1, 40, 41]], pa.int32()))
    assert labels[-1] == "> 20" and counts[-1] == 2


def test_histograms_of_nothing_are_empty() -> None:
    """No latency or attempts recorded: empty histograms, and the page still renders."""
    nothing = pa.chunked_array([[None, None]], pa.float64())
    assert latency_histogram(nothing) == ([], [])
    assert attempts_histogram(nothing.cast(pa.int32())) == ([], [])


def test_write_html_writes_the_page(report: Report, folder: Path, tmp_path: Path) -> None:
    """write_html puts render_html's page in the file."""
    table = load_results([folder])
    write_html(tmp_path / "r.html", report, table)
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == render_html(report, table)


def test_write_html_to_an_unwritable_place_is_an_output_error(report: Report, folder: Path, tmp_path: Path) -> None:
    """A page that cannot be written fails with OutputError naming the path."""
    target = tmp_path / "missing-dir" / "r.html"
    with pytest.raises(OutputError) as info:
        write_html(target, report, load_results([folder]))
    assert info.value.path == str(target)


CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
    None,
)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (CI installs the `chromium` apt package)")
def test_html_renders_its_charts_in_headless_chromium(report: Report, folder: Path, tmp_path: Path) -> None:
    """Chromium renders the page offline and the screenshot shows every chart's colours in solid areas."""
    pytest.importorskip("PIL", reason="pillow is in the dev extra")
    from PIL import Image

    page, shot = tmp_path / "report.html", tmp_path / "shot.png"
    write_html(page, report, load_results([folder]))
    assert CHROMIUM is not None
    subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    with Image.open(shot) as image:
        pixels = {rgb: n for n, rgb in image.convert("RGB").getcolors(maxcolors=1 << 24) or []}

    def area(colour: str) -> int:
        return pixels.get(tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5)), 0)

    # Solid bars are thousands of pixels; a missing or unrendered chart leaves (near) none.
    assert area(MODEL_COLOURS[1]) > 20_000  # pro's stacks in the tokens and cost charts
    assert area(MODEL_COLOURS[0]) > 1_000  # flash's thin stacks and legend swatches
    assert area(STATUS_COLOURS["ok"]) > 2_000  # the status chart's longest bar
    assert area(STATUS_COLOURS["failed"]) > 500
    assert area(LATENCY_COLOUR) > 5_000
    assert area(ATTEMPTS_COLOUR) > 5_000
