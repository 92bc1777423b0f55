"""Logs for schedulers: one JSON object per line with its event and fields, row errors with id and HTTP status,
and never the API key."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from conftest import job_copy, response
from servers import server_process

from batchgen.cli import main
from batchgen.console import logs
from batchgen.errors import ServerError
from batchgen.gemini.request import RequestTemplate, user_contents
from batchgen.online.retry import Retrier, RetryPolicy
from batchgen.online.runner import Runner, RunPolicy
from batchgen.records import Prompt, Result
from batchgen.report.breakdown import build_report, load_results
from batchgen.report.pricing import PriceTable
from batchgen.results.verdict import judge
from batchgen.secret import ApiKey

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "jobs" / "demo.toml"
KEY = "log-test-key-51c9e0"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """batchgen's logger writing JSON into a buffer; the handler is removed afterwards."""
    buffer = io.StringIO()
    logs.configure("json", "debug", stream=buffer, secrets=[ApiKey(KEY)])
    yield buffer
    logging.getLogger(logs.LOGGER).handlers.clear()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]


class OpenLimiter:
    async def acquire(self, tokens: int) -> None:
        pass

    def settle(self, estimated: int, actual: int | None) -> None:
        pass

    def rate_limited(self, quota_id: str | None, retry_after: float | None) -> None:
        pass


class ListSink:
    def __init__(self) -> None:
        self.results: list[Result] = []

    async def write(self, result: Result) -> None:
        self.results.append(result)


async def no_sleep(seconds: float) -> None:
    await anyio.lowlevel.checkpoint()


async def rows(*texts: str) -> AsyncIterator[Prompt]:
    for i, text in enumerate(texts):
        yield Prompt(id=f"r{i}", where=f"in.jsonl line {i + 1}", contents=user_contents(text))


def test_a_record_is_one_json_object_with_its_event_and_fields(stream: io.StringIO) -> None:
    logging.getLogger("batchgen.test").warning(
        "row %s failed", "r7", extra={"event": "row_error", "id": "r7", "http_status": 503, "counts": {"ok": 1}}
    )
    (line,) = json_lines(stream.getvalue())
    assert line["event"] == "row_error" and line["id"] == "r7" and line["http_status"] == 503
    assert line["counts"] == {"ok": 1}
    assert line["level"] == "warning" and line["logger"] == "batchgen.test"
    assert line["message"] == "row r7 failed"
    assert line["time"].endswith("Z")


def test_a_record_without_an_event_is_a_plain_log_event(stream: io.StringIO) -> None:
    logging.getLogger("batchgen").info("hello %d", 3)
    (line,) = json_lines(stream.getvalue())
    assert line["event"] == "log" and line["message"] == "hello 3"


def test_the_key_is_redacted_even_from_a_message_that_carries_it(stream: io.StringIO) -> None:
    """A second line of defence: the key never reaches the log, even if some message were to hold it."""
    logging.getLogger("batchgen").error("url https://x/?key=%s", KEY, extra={"detail": f"k={KEY}"})
    text = stream.getvalue()
    assert KEY not in text
    assert "***" in json_lines(text)[0]["message"] and json_lines(text)[0]["detail"] == "k=***"


def test_text_format_is_time_level_message() -> None:
    buffer = io.StringIO()
    logs.configure("text", "info", stream=buffer)
    try:
        logging.getLogger("batchgen.x").warning("row %s blocked", "a", extra={"event": "row_error"})
        logging.getLogger("batchgen.x").debug("not shown")
    finally:
        logging.getLogger(logs.LOGGER).handlers.clear()
    (line,) = buffer.getvalue().splitlines()
    stamp, level, message = line.split(maxsplit=2)
    assert stamp.endswith("Z") and level == "WARNING" and message == "row a blocked"


def test_configuring_again_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure("text", stream=first)
    logs.configure("json", stream=second)
    try:
        logging.getLogger("batchgen").info("once")
    finally:
        logging.getLogger(logs.LOGGER).handlers.clear()
    assert first.getvalue() == "" and len(second.getvalue().splitlines()) == 1


@pytest.mark.anyio
async def test_runner_logs_each_unusable_row_with_id_status_and_http_status(stream: io.StringIO) -> None:
    """A failed row carries its HTTP status; a row with bad output carries status and reason; ok rows are
    not logged."""

    async def generate(body: bytes) -> Any:
        text = orjson.loads(body)["contents"][0]["parts"][0]["text"]
        if text == "down":
            raise ServerError("The model is overloaded", http_status=503)
        return response("not json" if text == "garbled" else '{"label": 1}')

    runner = Runner(
        generate,
        template=RequestTemplate({"generationConfig": {"responseMimeType": "application/json"}}),
        limiter=OpenLimiter(),
        retrier=Retrier(RetryPolicy(max_attempts=2), sleep=no_sleep),
        judge=lambda reply: judge(reply, json_mode=True, validator=None),
        policy=RunPolicy(concurrency=2, max_reasks=0),
    )
    await runner.run(rows("fine", "down", "garbled"), ListSink())
    by_id = {line["id"]: line for line in json_lines(stream.getvalue()) if line["event"] == "row_error"}
    assert set(by_id) == {"r1", "r2"}
    assert by_id["r1"]["status"] == "failed" and by_id["r1"]["http_status"] == 503
    assert by_id["r1"]["attempts"] == 2 and "overloaded" in by_id["r1"]["error"]
    assert by_id["r2"]["status"] == "invalid_json" and by_id["r2"]["http_status"] is None
    assert by_id["r1"]["level"] == "warning"


def test_a_json_run_log_has_run_events_and_row_errors_and_never_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--log-format json` against a server injecting faults: every stderr line is a JSON object; the run's
    start and end are events with counts, rates and cost; each unusable row is an event with its id and HTTP
    status; progress lines come between; the key appears nowhere."""
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    out = tmp_path / "o"
    flags = ["--fail-rate", "0.4", "--violate-rate", "0.2", "--seed", "5", "--fault-weights", "500=1,503=1"]
    with server_process("--api-key", KEY, *flags) as url:
        job = job_copy(tmp_path, DEMO, max_attempts=2)
        flags = ["--limit", "40", "--log-format", "json", "--progress-interval", "0.05"]
        code = main(["run", str(job), "--base-url", url, "--output", str(out), *flags])
    captured = capsys.readouterr()
    assert code in (0, 1)
    assert KEY not in captured.out + captured.err
    lines = json_lines(captured.err)
    events = [line["event"] for line in lines]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    finished = lines[-1]
    assert finished["rows"] == 40 and sum(finished["counts"].values()) == 40
    assert {"rows_per_s", "input_tokens_per_s", "output_tokens_per_s", "tokens", "exit_code"} <= set(finished)
    # the running cost is what `batchgen report` charges for the same rows
    reported = build_report(load_results([out]), PriceTable.load()).totals.cost.total
    assert finished["cost_usd"] == pytest.approx(reported, abs=1e-9)
    assert "progress" in events
    problems = [line for line in lines if line["event"] == "row_error"]
    assert problems and all(line["id"].startswith("r") and "http_status" in line for line in problems)
    assert any(line["http_status"] in (500, 503) for line in problems)
