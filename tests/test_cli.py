"""The command line end to end, over real HTTP against the local Gemini server."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

import duckdb
import orjson
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from conftest import clean_environment, closed_port, demo_tree
from servers import server_process, server_stats

from batchgen.cli import main
from batchgen.results.columns import CONTRACT, OPTIONAL

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "jobs" / "demo.toml"
KEY = "cli-test-key-8d0e"
FAST = ("--rpm", "60000")
"""Where the rate is not what a test checks: ten times the demo's pace (100 requests a second)."""

# Runs wait on servers and retries in real time: `slow` starts the module first under pytest-xdist.
pytestmark = pytest.mark.slow


def results(folder: Path) -> pa.Table:
    return ds.dataset(folder, format="parquet").to_table()


def test_demo_job_writes_one_typed_row_per_input_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["run", str(DEMO), "--local-server", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "240 rows" in printed
    table = results(out)
    assert table.num_rows == 240
    # Which row, what went in, what came out, whether it is usable; then the rest of the contract.
    first = ["id", "row_index", "review", "stars", "out_sentiment", "out_confidence", "out_aspects", "status"]
    assert table.column_names[: len(first)] == first
    assert set(CONTRACT.names) - OPTIONAL <= set(table.column_names)
    # A job without tools or citations (JSON mode) has no empty feature columns.
    assert not {"function_calls", "grounding_chunks", "citations", "url_context"} & set(table.column_names)
    assert sorted(table.column("id").to_pylist()) == [f"r{i:04d}" for i in range(240)]
    # row_index is the input position: sorting by it gives the input order back.
    ordered = table.sort_by("row_index")
    assert ordered.column("row_index").to_pylist() == list(range(240))
    assert ordered.column("id").to_pylist() == [f"r{i:04d}" for i in range(240)]
    assert table.column("status").unique().to_pylist() == ["ok"]
    # every tool a user reaches for reads it
    assert len(pd.read_parquet(out)) == 240
    assert pl.read_parquet(out / "*.parquet").height == 240
    count = duckdb.execute(f"select count(*) from '{out}/*.parquet' where prompt_token_count > 0").fetchall()
    assert count == [(240,)]
    assert (out / "_manifest.json").exists()


def test_rerun_resumes_and_sends_nothing_more(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["run", str(DEMO), "--local-server", "--output", str(out), "--limit", "50", *FAST]) == 0
    assert results(out).num_rows == 50
    assert main(["run", str(DEMO), "--local-server", "--output", str(out), *FAST]) == 0
    assert main(["run", str(DEMO), "--local-server", "--output", str(out), *FAST]) == 0
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


def test_check_runs_start_up_checks_without_sending(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(DEMO), "--local-server", "--output", str(tmp_path / "o")]) == 0
    assert "240 input rows" in capsys.readouterr().out


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"batchgen {version('batchgen')}"


@dataclass(frozen=True)
class Mistake:
    """A new user's mistake: edits to the demo job, extra flags, whether the key is set, and what the one-line
    error must say."""

    says: str
    edits: dict[str, str] | None = None
    flags: tuple[str, ...] = ()
    key_set: bool = True
    output_is_a_file: bool = False
    run_only: bool = False


MISTAKES = [
    pytest.param(
        Mistake("input.prompt_template: no column 'reveiw' (did you mean 'review'?)", {"{review}": "{reveiw}"}),
        id="template-column",
    ),
    pytest.param(
        Mistake("input.id_field: no column 'review_id'", {'id_field = "id"': 'id_field = "review_id"'}), id="id-field"
    ),
    pytest.param(Mistake("input: no prompt", {"prompt_template = ": "# prompt_template = "}), id="no-prompt-source"),
    pytest.param(
        Mistake("output.keep_columns: no column 'starz' (did you mean 'stars'?)", {'"stars"]': '"starz"]'}),
        id="keep-column",
    ),
    pytest.param(Mistake("environment variable GEMINI_API_KEY is not set", key_set=False), id="key-unset"),
    pytest.param(Mistake("output.path: ", output_is_a_file=True), id="output-is-a-file"),
    pytest.param(
        Mistake("--base-url: must be an http:// or https:// URL", flags=("--base-url", "not-a-url")), id="base-url"
    ),
    pytest.param(
        Mistake(
            "request.generationConfig.temprature: unknown field (did you mean 'temperature'?)",
            {"temperature": "temprature"},
        ),
        id="request-field-typo",
    ),
    pytest.param(Mistake("input.prompt_template: not a usable template", {"{review}": "{review"}), id="unclosed-brace"),
    pytest.param(
        Mistake("limits.concurency: unknown key (did you mean 'concurrency'?)", {"concurrency =": "concurency ="}),
        id="job-key-typo",
    ),
    pytest.param(
        Mistake("argument --concurrency: must be 1 or more, not 0", flags=("--concurrency", "0")), id="concurrency-0"
    ),
    pytest.param(
        Mistake("argument --limit: must be 1 or more, not 0", flags=("--limit", "0"), run_only=True), id="limit-0"
    ),
    pytest.param(
        Mistake("argument --limit: must be 1 or more, not -3", flags=("--limit", "-3"), run_only=True),
        id="limit-negative",
    ),
]


# Each mistake fed to `check` and to `run` (a flag of `run` only, to `run`).
MISTAKES_BY_COMMAND = [
    pytest.param(mistake, command, id=f"{param.id}-{command}")
    for param in MISTAKES
    for mistake in [cast(Mistake, param.values[0])]
    for command in (("run",) if mistake.run_only else ("check", "run"))
]


@pytest.mark.parametrize(("mistake", "command"), MISTAKES_BY_COMMAND)
def test_a_users_mistake_is_one_line_and_exit_2_before_anything_is_sent_or_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str, mistake: Mistake
) -> None:
    """`check` rejects what a run would (columns the job names, a prompt source, the key, the output path, the
    base URL, request field names, the template), and `run` makes the same checks before its first request:
    each mistake is one line naming the file, key or flag, exit 2, no traceback, no results folder made.
    (Nothing listens at the base URL: a mistake that got through would exit 3.)"""
    job = demo_tree(tmp_path, mistake.edits)
    out = tmp_path / "out" / "demo"
    if mistake.output_is_a_file:
        out.parent.mkdir()
        out.write_text("not a folder")
    if mistake.key_set:
        monkeypatch.setenv("GEMINI_API_KEY", KEY)
    assert main([command, str(job), "--base-url", closed_port(), *mistake.flags]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("batchgen: error: "), captured.err
    assert mistake.says in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert out.is_file() if mistake.output_is_a_file else not out.exists()
    if mistake.flags and "--base-url" not in mistake.flags:
        assert str(job) not in lines[0]  # a flag's value is not the job file's fault


def test_with_json_logs_a_usage_or_job_error_is_one_json_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scheduler reading `--log-format json` gets JSON for every stderr line, errors before the run too."""
    for arguments in (["--limit", "0"], ["--base-url", "not-a-url"]):
        assert main(["run", str(DEMO), "--local-server", "--log-format", "json", *arguments]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        event = orjson.loads(line)
        assert event["event"] == "error" and event["level"] == "error" and event["exit_code"] == 2


def test_check_counts_input_lines_that_cannot_be_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Latin-1 line is not a mistake in the job, but `check` says a run will fail it, where and why."""
    reviews = (ROOT / "data" / "reviews.jsonl").read_bytes() + b'{"id": "x", "review": "caf\xe9", "stars": 1}\n'
    job = demo_tree(tmp_path, reviews=reviews)
    assert main(["check", str(job), "--local-server"]) == 0
    out = capsys.readouterr().out
    assert "warning: 1 input line(s) are not rows and will be `failed` rows; first: " in out
    assert "line 241: not valid UTF-8: byte 0xe9" in out


def test_bad_job_exits_2_naming_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = demo_tree(tmp_path, {"concurrency = 32": "concurrency = -1"})
    assert main(["run", str(job), "--local-server"]) == 2
    err = capsys.readouterr().err
    assert str(job) in err and "limits.concurrency" in err


def test_missing_key_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(DEMO), "--base-url", "http://127.0.0.1:9"]) == 2
    assert "GEMINI_API_KEY is not set" in capsys.readouterr().err


def test_nothing_listening_at_the_base_url_stops_at_once_with_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Connections refused on every one of the first rows stop the job like a bad key does: exit 3 with the
    reason, one connection attempt per probe row, nothing written, not minutes of retries per row."""
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    out = tmp_path / "o"
    began = time.monotonic()
    assert main(["run", str(DEMO), "--base-url", closed_port(), "--output", str(out)]) == 3
    assert time.monotonic() - began < 10
    err = capsys.readouterr().err
    assert "no connection on any of the first 3 request(s)" in err and "is base_url right" in err
    assert not list(out.glob("part-*.parquet"))
    assert [run["exit_code"] for run in orjson.loads((out / "_manifest.json").read_bytes())["runs"]] == [3]


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
    assert "(the key in environment variable GEMINI_API_KEY)" in err  # which key was refused


def test_an_unpriced_model_says_its_cost_is_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The summary's cost line does not silently vanish for a model the price table lacks."""
    model = ["--model", "gemini-2.5-flash-image"]
    out = tmp_path / "o"
    assert main(["check", str(DEMO), "--local-server", "--output", str(out), *model]) == 0
    assert "no price for gemini-2.5-flash-image" in capsys.readouterr().out
    assert main(["run", str(DEMO), "--local-server", "--output", str(out), "--limit", "3", "--quiet", *model]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "cost: unknown: no price for gemini-2.5-flash-image (pass --prices FILE to price it)" in printed
    assert printed[-1].startswith("results: ")


@dataclass(frozen=True)
class FaultyRun:
    """The demo job run once, with the key set, against a server injecting 30 % faults of every kind."""

    code: int
    out: Path
    printed: str
    """What the run wrote on stdout and stderr (batchgen's own log lines go to stderr)."""
    logged: str
    """What any other library logged through the root logger."""
    ledger: dict[str, Any]


@contextmanager
def root_log() -> Iterator[io.StringIO]:
    """What the root logger receives meanwhile, as text (what `caplog` would hold)."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    logging.getLogger().addHandler(handler)
    try:
        yield text
    finally:
        logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> FaultyRun:
    # One run serves every test that reads it: it is the module's slowest scenario (retries back off). Under
    # pytest-xdist (--dist loadfile) the module's tests share a worker, so it still runs once.
    folder = tmp_path_factory.mktemp("faulty")
    job = demo_tree(folder, {"max_attempts = 6": "max_attempts = 4", "timeout_s = 120": "timeout_s = 1"})
    out = folder / "o"
    faults = ("--fail-rate", "0.3", "--violate-rate", "0.1", "--seed", "11", "--slow-s", "2", "--retry-delay-s", "0.05")
    # 429s stay under the limiter's shared-capacity threshold (5 % of requests), so they are absorbed by
    # retries rather than slowing the whole run; test_limiter covers the congested case.
    weights = "429=0.6,429help=0.4,500=1,503=2,drop=1,slow=1,nonjson=1,nocandidates=1"
    printed = io.StringIO()
    with (
        pytest.MonkeyPatch.context() as environment,
        server_process("--api-key", KEY, *faults, "--fault-weights", weights) as url,
        redirect_stdout(printed),
        redirect_stderr(printed),
        root_log() as logged,
    ):
        clean_environment(environment)
        environment.setenv("GEMINI_API_KEY", KEY)
        # Progress lines every 0.5 s, so the key scan reads them too.
        flags = ["--concurrency", "16", "--progress-interval", "0.5"]
        code = main(["run", str(job), "--base-url", url, "--output", str(out), *flags])
        ledger = server_stats(url)
    return FaultyRun(code, out, printed.getvalue(), logged.getvalue(), ledger)


def test_the_key_never_reaches_output_logs_or_manifest(faulty_run: FaultyRun) -> None:
    """Through retries, timeouts and failed rows, the API key appears in no printed line, no log record and no
    file of the results folder (parts, manifest)."""
    assert "240 rows" in faulty_run.printed and "progress:" in faulty_run.printed  # the run's output is scanned
    assert KEY not in faulty_run.printed + faulty_run.logged
    files = [file for file in faulty_run.out.rglob("*") if file.is_file()]
    assert any(file.name == "_manifest.json" for file in files)
    for file in files:
        assert KEY.encode() not in file.read_bytes(), file


def test_fault_injection_every_row_final_and_counts_match_the_server_ledger(faulty_run: FaultyRun) -> None:
    """30 % injected faults of every kind: every row ends with a final status, none lost or duplicated, and the
    tokens in the results equal what the server billed."""
    assert faulty_run.code in (0, 1)
    table = results(faulty_run.out)
    ids = table.column("id").to_pylist()
    assert sorted(ids) == [f"r{i:04d}" for i in range(240)]
    statuses = set(table.column("status").to_pylist())
    assert statuses <= {"ok", "invalid_json", "schema_mismatch", "blocked", "truncated", "failed"}
    ledger = faulty_run.ledger
    assert sum(table.column("responses").to_pylist()) == ledger["billed_responses"]
    billed = ledger["billed"]
    assert pa.compute.sum(table.column("prompt_token_count")).as_py() == billed["promptTokenCount"]
    assert pa.compute.sum(table.column("total_token_count")).as_py() == billed["totalTokenCount"]


def test_duplicate_ids_stop_before_sending_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = demo_tree(tmp_path)
    data = tmp_path / "data" / "reviews.jsonl"
    data.write_bytes(data.read_bytes() + data.read_bytes().splitlines(keepends=True)[0])
    out = tmp_path / "o"
    assert main(["run", str(job), "--local-server", "--output", str(out)]) == 2
    assert "duplicate ids: 'r0000' x2" in capsys.readouterr().err
    assert not out.exists() or not list(out.glob("*.parquet"))
    assert main(["run", str(job), "--local-server", "--output", str(out), "--allow-duplicate-ids", *FAST]) == 0
    ids = results(out).column("id").to_pylist()
    assert len(ids) == 241 and "r0000#2" in ids
