"""The runner's contract, driven by plain async functions: no network, no files."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import orjson
import pytest
from conftest import response

from batchgen.errors import (
    AuthError,
    JobRejected,
    QuotaExhausted,
    RateLimited,
    RequestRejected,
    ServerError,
    TransportError,
    Unreachable,
)
from batchgen.gemini.request import RequestTemplate, user_contents
from batchgen.online.retry import Retrier, RetryPolicy
from batchgen.online.runner import Runner, RunPolicy
from batchgen.records import Admission, Prompt, Result, Status, Usage
from batchgen.results.verdict import judge


class OpenLimiter:
    """Admits everything at once; records what the runner tells it."""

    def __init__(self) -> None:
        self.acquired = 0
        self.settled: list[tuple[int, int | None]] = []
        self.limited: list[tuple[str | None, float | None]] = []

    async def acquire(self, tokens: int) -> None:
        self.acquired += 1

    def settle(self, estimated: int, actual: int | None) -> None:
        self.settled.append((estimated, actual))

    def rate_limited(self, quota_id: str | None, retry_after: float | None) -> None:
        self.limited.append((quota_id, retry_after))


class ListSink:
    def __init__(self) -> None:
        self.results: list[Result] = []

    async def write(self, result: Result) -> None:
        self.results.append(result)

    def by_id(self) -> dict[str, Result]:
        return {r.id: r for r in self.results}


async def no_sleep(seconds: float) -> None:
    await anyio.lowlevel.checkpoint()


class Validator:
    def validate(self, value: Any) -> str | None:
        return None if isinstance(value, dict) and "label" in value else "/label: required"


def make_runner(
    generate: Callable[[bytes], Any],
    *,
    json_mode: bool = True,
    limiter: OpenLimiter | None = None,
    request: Mapping[str, Any] | None = None,
    admission: Admission | None = None,
    **policy: Any,
) -> Runner:
    return Runner(
        generate,
        template=RequestTemplate(request or {"generationConfig": {"responseMimeType": "application/json"}}),
        limiter=limiter or OpenLimiter(),
        retrier=Retrier(RetryPolicy(max_attempts=3), sleep=no_sleep),
        judge=lambda reply: judge(reply, json_mode=json_mode, validator=Validator()),
        policy=RunPolicy(**{"concurrency": 4, **policy}),
        admission=admission,
    )


async def prompts(*texts: str) -> AsyncIterator[Prompt]:
    for i, text in enumerate(texts):
        yield Prompt(id=f"r{i}", where=f"in.jsonl line {i + 1}", contents=user_contents(text), keep={"n": i})


def prompt_text(body: bytes) -> str:
    return str(orjson.loads(body)["contents"][0]["parts"][0]["text"])


@pytest.mark.anyio
async def test_every_prompt_becomes_exactly_one_result_with_its_status() -> None:
    """Each reply kind maps to its status; kept columns ride along."""
    answers = {
        "ok": response('{"label": "x"}'),
        "bad-json": response("{"),
        "mismatch": response('{"other": 1}'),
        "cut": response('{"lab', finish="MAX_TOKENS"),
        "blocked": response(block="SAFETY"),
    }

    async def generate(body: bytes) -> Any:
        return answers[prompt_text(body)]

    sink = ListSink()
    stats = await make_runner(generate, max_reasks=0).run(prompts(*answers), sink)
    statuses = [r.status for r in sorted(sink.results, key=lambda r: r.id)]
    assert statuses == [Status.OK, Status.INVALID_JSON, Status.SCHEMA_MISMATCH, Status.TRUNCATED, Status.BLOCKED]
    assert stats.done == 5
    assert sink.by_id()["r0"].keep == {"n": 0}
    assert sink.by_id()["r0"].output == {"label": "x"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("request_fields", "traffic"),
    [
        pytest.param({}, "standard", id="no-tier"),
        pytest.param({"serviceTier": "FLEX"}, "flex", id="flex-any-case"),
        pytest.param({"serviceTier": "unspecified"}, "standard", id="unspecified"),
        pytest.param({"serviceTier": "priority"}, "priority", id="priority"),
    ],
)
async def test_rows_are_labelled_with_the_tier_their_requests_ask_for(
    request_fields: dict[str, Any], traffic: str
) -> None:
    """`traffic` says how a row was sent: the request's serviceTier (standard when absent); it prices the row."""

    async def generate(body: bytes) -> Any:
        return response('{"label": "x"}') if "ok" in prompt_text(body) else response("{")

    request = {"generationConfig": {"responseMimeType": "application/json"}, **request_fields}
    sink = ListSink()
    await make_runner(generate, request=request, max_reasks=0).run(prompts("ok", "bad"), sink)
    assert {r.traffic for r in sink.results} == {traffic}


@pytest.mark.anyio
async def test_bad_input_row_fails_without_a_request() -> None:
    calls: list[bytes] = []

    async def generate(body: bytes) -> Any:
        calls.append(body)
        return response('{"label": "x"}')

    async def rows() -> AsyncIterator[Prompt]:
        yield Prompt(id="line:3", where="in.jsonl line 3", contents=b"", problem="malformed JSON line")
        async for p in prompts("fine"):
            yield p

    sink = ListSink()
    await make_runner(generate).run(rows(), sink)
    bad = sink.by_id()["line:3"]
    assert bad.status is Status.FAILED and bad.attempts == 0
    assert bad.error == "in.jsonl line 3: malformed JSON line"
    assert len(calls) == 1


@pytest.mark.anyio
async def test_reask_counts_tokens_of_every_attempt() -> None:
    """A re-ask after invalid JSON bills both responses; the final status is the last response's."""
    replies = iter(
        [
            response("{", usage={"promptTokenCount": 10, "totalTokenCount": 12}),
            response(
                '{"label": "y"}', usage={"promptTokenCount": 10, "candidatesTokenCount": 4, "totalTokenCount": 14}
            ),
        ]
    )

    async def generate(body: bytes) -> Any:
        return next(replies)

    sink = ListSink()
    await make_runner(generate, max_reasks=1).run(prompts("a"), sink)
    (result,) = sink.results
    assert result.status is Status.OK
    assert result.reasks == 1 and result.attempts == 2 and result.responses == 2
    assert result.usage == Usage(prompt=20, candidates=4, thoughts=0, cached=0, tool_use=0, total=26)


@pytest.mark.anyio
async def test_reask_after_truncation_raises_max_output_tokens() -> None:
    seen: list[Any] = []

    async def generate(body: bytes) -> Any:
        config = orjson.loads(body)["generationConfig"]
        seen.append(config.get("maxOutputTokens"))
        return response('{"label": "y"}') if len(seen) > 1 else response('{"la', finish="MAX_TOKENS")

    request = {"generationConfig": {"responseMimeType": "application/json", "maxOutputTokens": 50}}
    sink = ListSink()
    await make_runner(generate, request=request, reask_max_output_tokens=500).run(prompts("a"), sink)
    assert seen == [50, 500]
    assert sink.results[0].status is Status.OK


@pytest.mark.anyio
async def test_retries_then_fails_with_attempts_and_http_status() -> None:
    async def generate(body: bytes) -> Any:
        raise ServerError("overloaded", http_status=503)

    sink = ListSink()
    await make_runner(generate).run(prompts("a"), sink)
    (result,) = sink.results
    assert result.status is Status.FAILED
    assert result.attempts == 3 and result.http_status == 503
    assert "overloaded" in (result.error or "")


@pytest.mark.anyio
async def test_429_informs_the_limiter_and_the_response_settles_the_tokens() -> None:
    attempts: list[int] = []

    async def generate(body: bytes) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise RateLimited("quota", quota_id="GenerateRequestsPerMinutePerProjectPerModel", retry_after=2.0)
        return response('{"label": "x"}', usage={"promptTokenCount": 7, "totalTokenCount": 9})

    limiter = OpenLimiter()
    sink = ListSink()
    await make_runner(generate, limiter=limiter).run(prompts("a"), sink)
    assert limiter.limited == [("GenerateRequestsPerMinutePerProjectPerModel", 2.0)]
    assert [actual for _, actual in limiter.settled] == [7]
    assert sink.results[0].attempts == 2 and sink.results[0].status is Status.OK


@pytest.mark.anyio
async def test_auth_failure_on_the_first_request_stops_the_job() -> None:
    calls: list[int] = []

    async def generate(body: bytes) -> Any:
        calls.append(1)
        raise AuthError("API key not valid", http_status=400, reason="API_KEY_INVALID")

    runner = make_runner(generate)
    sink = ListSink()
    await runner.run(prompts(*"abcdefgh"), sink)
    assert isinstance(runner.stopped_by, AuthError)
    assert calls == [1]
    assert sink.results == []


@pytest.mark.anyio
async def test_same_400_on_the_first_rows_stops_the_job_after_a_handful() -> None:
    calls: list[int] = []

    async def generate(body: bytes) -> Any:
        calls.append(1)
        raise RequestRejected('Invalid JSON payload received. Unknown name "foo"', http_status=400)

    runner = make_runner(generate)
    sink = ListSink()
    await runner.run(prompts(*"abcdefghij"), sink)
    assert isinstance(runner.stopped_by, JobRejected)
    assert len(calls) == 3
    assert [r.status for r in sink.results] == [Status.FAILED] * 3


@pytest.mark.anyio
async def test_unknown_model_stops_at_the_first_request() -> None:
    async def generate(body: bytes) -> Any:
        raise RequestRejected("models/gemini-9 is not found", http_status=404)

    runner = make_runner(generate)
    await runner.run(prompts(*"abc"), ListSink())
    assert isinstance(runner.stopped_by, JobRejected)


@pytest.mark.anyio
async def test_a_row_specific_400_fails_only_that_row() -> None:
    async def generate(body: bytes) -> Any:
        if prompt_text(body) == "b":
            raise RequestRejected("image too large", http_status=400)
        return response('{"label": "x"}')

    runner = make_runner(generate)
    sink = ListSink()
    await runner.run(prompts(*"abcdef"), sink)
    assert runner.stopped_by is None
    assert sink.by_id()["r1"].status is Status.FAILED
    assert sum(r.status is Status.OK for r in sink.results) == 5


@pytest.mark.anyio
async def test_daily_quota_stops_the_run_and_keeps_finished_rows() -> None:
    served: list[int] = []

    async def generate(body: bytes) -> Any:
        if len(served) >= 5:
            raise QuotaExhausted("daily quota", quota_id="GenerateRequestsPerDayPerProjectPerModel")
        served.append(1)
        return response('{"label": "x"}')

    runner = make_runner(generate, concurrency=1)
    sink = ListSink()
    await runner.run(prompts(*"abcdefghij"), sink)
    assert isinstance(runner.stopped_by, QuotaExhausted)
    assert len(sink.results) == 5
    assert len({r.id for r in sink.results}) == 5


@pytest.mark.anyio
async def test_daily_quota_spent_lets_the_rows_in_flight_finish() -> None:
    """Rows the server accepted before the day's quota ran out are written, not cancelled: they are paid for.
    The row that met the spent quota is not written (the next run sends it) and no new row is started."""
    accepted: list[str] = []
    refused: list[str] = []

    async def generate(body: bytes) -> Any:
        text = prompt_text(body)
        if len(accepted) >= 6:
            refused.append(text)
            raise QuotaExhausted("daily quota", quota_id="GenerateRequestsPerDayPerProjectPerModel")
        accepted.append(text)
        await anyio.sleep(0.05)  # still in flight when the next request meets the spent quota
        return response('{"label": "x"}')

    runner = make_runner(generate, concurrency=4)
    sink = ListSink()
    await runner.run(prompts(*[str(i) for i in range(40)]), sink)
    assert isinstance(runner.stopped_by, QuotaExhausted)
    assert sorted(str(r.keep["n"]) for r in sink.results) == sorted(accepted)
    assert len(refused) <= 4  # each worker meets the spent quota at most once, then stops


@pytest.mark.anyio
async def test_concurrency_is_bounded() -> None:
    in_flight = 0
    peak = 0

    async def generate(body: bytes) -> Any:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.001)
        in_flight -= 1
        return response('{"label": "x"}')

    sink = ListSink()
    await make_runner(generate, concurrency=3).run(prompts(*[str(i) for i in range(40)]), sink)
    assert peak == 3
    assert len(sink.results) == 40


@pytest.mark.anyio
async def test_stop_takes_no_new_rows_and_lets_in_flight_rows_finish() -> None:
    started: list[str] = []
    runner: Runner

    async def generate(body: bytes) -> Any:
        started.append(prompt_text(body))
        if len(started) == 3:
            runner.stop()
        await anyio.sleep(0.01)
        return response('{"label": "x"}')

    runner = make_runner(generate, concurrency=2)
    sink = ListSink()
    await runner.run(prompts(*[str(i) for i in range(50)]), sink)
    assert runner.stopping
    assert len(sink.results) == len(started) < 10


@pytest.mark.anyio
async def test_a_fatal_error_mid_run_lets_the_rows_in_flight_finish_and_be_written() -> None:
    """A spent daily quota stops the run, but answers already on their way are paid for: they are written,
    and no new row is sent."""
    sent: list[str] = []
    others_out = anyio.Event()
    quota_spent = anyio.Event()

    async def generate(body: bytes) -> Any:
        text = prompt_text(body)
        sent.append(text)
        if text == "b":
            await others_out.wait()
            quota_spent.set()
            raise QuotaExhausted("daily quota", quota_id="GenerateRequestsPerDayPerProjectPerModel")
        if text in ("c", "d"):
            if {"c", "d"} <= set(sent):
                others_out.set()
            await quota_spent.wait()
            await anyio.sleep(0.01)  # their answers arrive after the quota error
        return response('{"label": "x"}')

    runner = make_runner(generate, concurrency=3)
    sink = ListSink()
    with anyio.fail_after(5):
        await runner.run(prompts(*"abcdefgh"), sink)
    assert isinstance(runner.stopped_by, QuotaExhausted)
    assert sorted(sent) == ["a", "b", "c", "d"]
    assert sorted(r.id for r in sink.results) == ["r0", "r2", "r3"]


@pytest.mark.parametrize("stalled_from", [pytest.param(0, id="first-request"), pytest.param(1, id="fan-out")])
@pytest.mark.anyio
async def test_rows_in_flight_after_stop_are_cancelled_when_the_grace_period_ends(stalled_from: int) -> None:
    """The grace period bounds a stop whether the first request is still out alone or many are; rows it cuts
    off are not written (the next run sends them)."""
    runner: Runner
    sent: list[str] = []

    async def generate(body: bytes) -> Any:
        sent.append(prompt_text(body))
        if len(sent) > stalled_from:
            if len(sent) == stalled_from + 1:
                runner.stop()
            await anyio.sleep_forever()
        return response('{"label": "x"}')

    runner = make_runner(generate, concurrency=2, grace_s=0.05)
    sink = ListSink()
    with anyio.fail_after(5):
        await runner.run(prompts(*"abcdef"), sink)
    assert runner.stopping and runner.stopped_by is None
    assert len(sink.results) == stalled_from


# --- A job that cannot connect, and stopping ---------------------------------------------------------------------


def refused() -> TransportError:
    return TransportError(
        "ClientConnectorError: Cannot connect to host 127.0.0.1:9 [Connect call failed]", connect=True
    )


@pytest.mark.anyio
async def test_no_connection_on_the_first_rows_stops_the_job_after_one_attempt_each() -> None:
    """Refused (or DNS, TLS) on every one of the first rows means a wrong base URL or a server that is down:
    the job stops with `Unreachable` after one attempt per probe row, not six per row for every row, and the
    rows are not written (a rerun sends them)."""
    calls: list[str] = []

    async def generate(body: bytes) -> Any:
        calls.append(prompt_text(body))
        raise refused()

    runner = make_runner(generate)
    sink = ListSink()
    await runner.run(prompts(*"abcdefgh"), sink)
    assert isinstance(runner.stopped_by, Unreachable)
    assert "no connection on any of the first 3 request(s)" in str(runner.stopped_by)
    assert "127.0.0.1:9" in str(runner.stopped_by) and "base_url" in str(runner.stopped_by)
    assert calls == ["a", "b", "c"]
    assert sink.results == []


@pytest.mark.anyio
async def test_a_probe_row_that_could_not_connect_is_sent_again_once_one_gets_through() -> None:
    """One refused connection among the first rows is a blip: the job goes on and the row goes out again."""
    calls: list[str] = []

    async def generate(body: bytes) -> Any:
        calls.append(prompt_text(body))
        if len(calls) == 1:
            raise refused()
        return response('{"label": "x"}')

    runner = make_runner(generate)
    sink = ListSink()
    await runner.run(prompts(*"abcd"), sink)
    assert runner.stopped_by is None
    assert sorted(r.id for r in sink.results) == ["r0", "r1", "r2", "r3"]
    assert {r.status for r in sink.results} == {Status.OK}
    assert calls.count("a") == 2


@pytest.mark.anyio
async def test_connection_errors_after_the_first_rows_are_retried_as_usual() -> None:
    calls: list[str] = []

    async def generate(body: bytes) -> Any:
        text = prompt_text(body)
        calls.append(text)
        if text == "c" and calls.count("c") == 1:
            raise refused()
        return response('{"label": "x"}')

    runner = make_runner(generate)
    sink = ListSink()
    await runner.run(prompts(*"abcd"), sink)
    assert runner.stopped_by is None
    assert sink.by_id()["r2"].status is Status.OK and sink.by_id()["r2"].attempts == 2


class GatedLimiter(OpenLimiter):
    """Admits the first `free` requests at once; the rest wait until `gate` is set."""

    def __init__(self, free: int) -> None:
        super().__init__()
        self.free = free
        self.gate = anyio.Event()

    async def acquire(self, tokens: int) -> None:
        self.acquired += 1
        if self.acquired > self.free:
            await self.gate.wait()


@pytest.mark.parametrize("opens", [pytest.param(True, id="admitted-after-stop"), pytest.param(False, id="never")])
@pytest.mark.anyio
async def test_after_stop_rows_waiting_for_admission_are_not_sent(opens: bool) -> None:
    """Stopping sends nothing more: rows queued at the limiter are dropped unsent and unwritten (the next run
    sends them), whether the limiter admits them during the grace period or not at all (the run does not
    wait out the grace period for them); the request out finishes and is written."""
    sent: list[str] = []
    limiter = GatedLimiter(free=2)
    runner: Runner

    async def generate(body: bytes) -> Any:
        sent.append(prompt_text(body))
        if len(sent) == 2:
            await anyio.sleep(0.01)  # meanwhile the other workers take rows and queue at the limiter
            assert limiter.acquired == 2 + 7
            runner.stop()
            if opens:
                limiter.gate.set()  # admission opens just after the stop
            await anyio.sleep(0.01)
        return response('{"label": "x"}')

    runner = make_runner(generate, limiter=limiter, concurrency=8, grace_s=5)
    sink = ListSink()
    with anyio.fail_after(2):  # well inside the grace period: nothing waits for it
        await runner.run(prompts(*"abcdefghijkl"), sink)
    assert sent == ["a", "b"]
    assert sorted(r.id for r in sink.results) == ["r0", "r1"]
    assert runner.stats.in_flight == 0


@pytest.mark.anyio
async def test_after_stop_a_failed_attempt_is_not_retried_and_its_row_is_not_written() -> None:
    sent: list[str] = []
    runner: Runner

    async def generate(body: bytes) -> Any:
        text = prompt_text(body)
        sent.append(text)
        if text == "b":
            runner.stop()
            raise ServerError("overloaded", http_status=503)
        return response('{"label": "x"}')

    runner = make_runner(generate)
    sink = ListSink()
    with anyio.fail_after(2):
        await runner.run(prompts(*"abcdef"), sink)
    assert sent.count("b") == 1
    assert "r1" not in sink.by_id()


@pytest.mark.anyio
async def test_after_stop_a_reask_is_not_sent_and_the_row_keeps_the_answer_it_paid_for() -> None:
    sent: list[str] = []
    runner: Runner

    async def generate(body: bytes) -> Any:
        sent.append(prompt_text(body))
        runner.stop()
        return response("{")

    runner = make_runner(generate, max_reasks=2)
    sink = ListSink()
    await runner.run(prompts(*"ab"), sink)
    (result,) = sink.results
    assert sent == ["a"]
    assert result.status is Status.INVALID_JSON and result.responses == 1 and result.reasks == 0


@pytest.mark.anyio
async def test_abort_cancels_the_requests_out_at_once_and_run_returns() -> None:
    """A second signal does not wait out the grace period, but `run` still returns what was answered."""
    runner: Runner
    sent: list[str] = []

    async def generate(body: bytes) -> Any:
        sent.append(prompt_text(body))
        if len(sent) == 1:
            return response('{"label": "x"}')
        if len(sent) == 3:
            runner.stop()
            await anyio.sleep(0.01)
            runner.abort()
        await anyio.sleep_forever()

    runner = make_runner(generate, concurrency=2, grace_s=60)
    sink = ListSink()
    with anyio.fail_after(2):
        await runner.run(prompts(*"abcdef"), sink)
    assert [r.id for r in sink.results] == ["r0"]


@pytest.mark.anyio
async def test_a_server_that_answered_is_not_unreachable() -> None:
    """A 400 is an answer: connection failures beside it on the first rows do not make the job Unreachable,
    and the rows that could not connect go out again once the probe is over."""
    calls: list[str] = []

    async def generate(body: bytes) -> Any:
        text = prompt_text(body)
        calls.append(text)
        if text == "a":
            raise RequestRejected("prompt too long", http_status=400)
        if calls.count(text) == 1:
            raise refused()
        return response('{"label": "x"}')

    runner = make_runner(generate)
    sink = ListSink()
    await runner.run(prompts(*"abcd"), sink)
    assert runner.stopped_by is None
    assert {r.id: r.status for r in sink.results} == {
        "r0": Status.FAILED,
        "r1": Status.OK,
        "r2": Status.OK,
        "r3": Status.OK,
    }


def _fatal_on(texts: str, error: Exception, sent: list[str]) -> Callable[[bytes], Any]:
    async def generate(body: bytes) -> Any:
        text = prompt_text(body)
        sent.append(text)
        if text in texts:
            raise error
        return response('{"label": "x"}')

    return generate


@pytest.mark.parametrize(
    ("fatal_on", "error"),
    [
        pytest.param(
            "a", AuthError("API key not valid", http_status=400, reason="API_KEY_INVALID"), id="first-row-400"
        ),
        pytest.param("a", AuthError("forbidden", http_status=403), id="first-row-403"),
        pytest.param("a", RequestRejected("models/gemini-9 is not found", http_status=404), id="first-row-404"),
        pytest.param("abc", RequestRejected("bad field", http_status=400), id="same-400-thrice"),
        pytest.param("d", QuotaExhausted("daily quota", quota_id="PerDay"), id="mid-run-daily-quota"),
    ],
)
@pytest.mark.anyio
async def test_attempts_count_every_request_sent_whatever_stops_the_run(fatal_on: str, error: Exception) -> None:
    """The run's attempts are the requests that went out, including the one whose fatal answer stopped the run
    (its row is not written: the next run sends it again)."""
    sent: list[str] = []
    runner = make_runner(_fatal_on(fatal_on, error, sent), concurrency=1)
    stats = await runner.run(prompts(*"abcdefgh"), ListSink())
    assert runner.stopped_by is not None
    assert stats.attempts == len(sent) >= 1


@pytest.mark.anyio
async def test_attempts_and_responses_of_rows_cut_off_by_the_grace_period_are_counted() -> None:
    """A row cancelled when the grace period ends was sent (and may have had a response before a re-ask): the
    run's counters keep both, though the row is not written."""
    runner: Runner
    sent: list[str] = []

    async def generate(body: bytes) -> Any:
        sent.append(prompt_text(body))
        if len(sent) == 1:
            return response("{")  # invalid JSON: re-asked
        runner.stop()
        await anyio.sleep_forever()

    runner = make_runner(generate, concurrency=1, grace_s=0.01)
    sink = ListSink()
    with anyio.fail_after(5):
        stats = await runner.run(prompts("a"), sink)
    assert sink.results == []
    assert (stats.attempts, stats.responses) == (2, 1)
    assert stats.usage.prompt == 10
