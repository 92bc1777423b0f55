"""The fake server's Batch API over real HTTP: jobs from files and inline requests, their states and
operations, results that match online answers, injected line and job faults, cancel, delete, list, the
concurrency limit, keys, and the ledger. Jobs turn around in a fraction of a second."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import orjson
import pytest
from fakebatch import (
    KEY,
    MODEL,
    call,
    create,
    create_from_lines,
    request,
    results,
    stats,
    upload,
    wait_done,
)

from batchgen.fakeserver import BatchConfig, FakeServer, ServerConfig

# Jobs are waited for in real time: `slow` starts the module first under pytest-xdist.
pytestmark = pytest.mark.slow
TOPICS = ["tides", "volcanoes", "glaciers", "comets", "rivers", "deserts", "forests", "storms", "reefs", "caves"]


def serve(**batch: Any) -> FakeServer:
    settings = {"turnaround_s": 0.1, **batch}
    return FakeServer(ServerConfig(api_key=KEY, seed=3, batch=BatchConfig(**settings)))


def lines(count: int = len(TOPICS), prompt: str = "Tell me about {}") -> list[dict[str, Any]]:
    return [
        {"key": f"k{i}", "request": request(prompt.format(TOPICS[i % len(TOPICS)]) + f" ({i})")} for i in range(count)
    ]


def by_key(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in rows}


# --- lifecycle ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_file_job_goes_pending_running_succeeded(session: aiohttp.ClientSession) -> None:
    """Create answers the operation PENDING with requestCount and pendingRequestCount only; polling sees it
    RUNNING, then done: SUCCEEDED with the results file in both metadata.output and response."""
    async with serve(turnaround_s=0.3) as server:
        operation = await create_from_lines(session, server.url, lines(4), name="my-job")
        seen = set()
        while not operation.get("done"):
            seen.add(operation["metadata"]["state"])
            await asyncio.sleep(0.02)
            operation = (await call(session, "GET", f"{server.url}/v1beta/{operation['name']}"))[1]
    name = operation["name"]
    batch_id = name.removeprefix("batches/")
    assert len(batch_id) == 36 and batch_id.isalnum() and batch_id.islower()
    assert seen == {"BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"}
    metadata = operation["metadata"]
    assert metadata["@type"] == "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
    assert (metadata["model"], metadata["displayName"], metadata["name"]) == (f"models/{MODEL}", "my-job", name)
    assert metadata["inputConfig"]["fileName"].startswith("files/")
    assert metadata["state"] == "BATCH_STATE_SUCCEEDED"
    assert metadata["batchStats"] == {"requestCount": "4", "successfulRequestCount": "4"}
    assert metadata["createTime"] < metadata["endTime"] == metadata["updateTime"]
    assert metadata["output"] == {"responsesFile": f"files/batch-{batch_id}"}
    assert operation["response"] == {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput",
        "responsesFile": f"files/batch-{batch_id}",
    }


@pytest.mark.anyio
async def test_create_shows_the_pending_operation(session: aiohttp.ClientSession) -> None:
    """The create answer is the new job, not done, counting its requests."""
    async with serve() as server:
        operation = await create_from_lines(session, server.url, lines(3))
    assert "done" not in operation and "response" not in operation
    assert operation["metadata"]["state"] == "BATCH_STATE_PENDING"
    assert operation["metadata"]["batchStats"] == {"requestCount": "3", "pendingRequestCount": "3"}


@pytest.mark.anyio
async def test_results_joined_by_key_are_the_online_answers(session: aiohttp.ClientSession) -> None:
    """Each line is answered as generateContent answers the same body: same candidates, same usage. The file
    is shuffled, so it must be joined on key; the generated File is downloadable JSONL."""
    inputs = lines()
    async with serve() as server:
        operation = await wait_done(session, server.url, (await create_from_lines(session, server.url, inputs))["name"])
        rows = await results(session, server.url, operation)
        online = {}
        for line in inputs:
            async with session.post(
                f"{server.url}/v1beta/models/{MODEL}:generateContent",
                data=orjson.dumps(line["request"]),
                headers={"x-goog-api-key": KEY},
            ) as response:
                online[line["key"]] = await response.json()
        generated = (await call(session, "GET", f"{server.url}/v1beta/{operation['response']['responsesFile']}"))[1]
    assert [row["key"] for row in rows] != [line["key"] for line in inputs]
    joined = by_key(rows)
    assert joined.keys() == online.keys()
    for key, answer in online.items():
        batch = joined[key]["response"]
        assert batch["candidates"] == answer["candidates"]
        # An online answer names the tier that served it; what a batch results line says is not recorded.
        online_usage = {k: v for k, v in answer["usageMetadata"].items() if k != "serviceTier"}
        assert batch["usageMetadata"] == online_usage
        assert batch["modelVersion"] == answer["modelVersion"] == MODEL
    assert (generated["source"], generated["mimeType"]) == ("GENERATED", "application/jsonl")
    assert generated["downloadUri"].endswith(f"{operation['response']['responsesFile']}:download?alt=media")


@pytest.mark.anyio
async def test_results_keep_the_input_order_when_shuffle_is_off(session: aiohttp.ClientSession) -> None:
    async with serve(shuffle=False) as server:
        operation = await wait_done(
            session, server.url, (await create_from_lines(session, server.url, lines()))["name"]
        )
        rows = await results(session, server.url, operation)
    assert [row["key"] for row in rows] == [f"k{i}" for i in range(len(TOPICS))]


@pytest.mark.anyio
async def test_an_inline_job_answers_inline_in_input_order(session: aiohttp.ClientSession) -> None:
    """Inline requests come back as inlinedResponses, in input order, each with its metadata; the output is in
    metadata.output and response; there is no inputConfig in the metadata."""
    requests = [{"request": request(f"About {topic}"), "metadata": {"key": topic}} for topic in TOPICS[:4]]
    async with serve() as server:
        status, created = await create(session, server.url, {"requests": {"requests": requests}})
        operation = await wait_done(session, server.url, created["name"])
    assert status == 200 and "inputConfig" not in created["metadata"]
    answers = operation["response"]["inlinedResponses"]["inlinedResponses"]
    assert operation["metadata"]["output"]["inlinedResponses"]["inlinedResponses"] == answers
    assert [answer["metadata"] for answer in answers] == [{"key": topic} for topic in TOPICS[:4]]
    assert all(answer["response"]["candidates"][0]["content"]["parts"] for answer in answers)


# --- line faults -------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("shape", "codes"),
    [
        pytest.param("error", {(429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL"), (503, "UNAVAILABLE")}, id="error"),
        pytest.param("status", {(8, None), (13, None), (14, None)}, id="status"),
    ],
)
async def test_error_lines_in_either_shape(
    session: aiohttp.ClientSession, shape: str, codes: set[tuple[int, str | None]]
) -> None:
    """error_rate 1 fails every line (with 429, 500 or 503) in the configured shape: the HTTP code and status
    name under "error", or the google.rpc code number under "status"; batchStats counts them failed."""
    async with serve(error_rate=1.0, error_shape=shape) as server:
        operation = await create_from_lines(session, server.url, lines(12))
        operation = await wait_done(session, server.url, operation["name"])
        rows = await results(session, server.url, operation)
    assert operation["metadata"]["batchStats"] == {"requestCount": "12", "failedRequestCount": "12"}
    for row in rows:
        assert set(row) == {"key", shape}
        assert row[shape]["message"]
        assert (row[shape]["code"], row[shape].get("status")) in codes


@pytest.mark.anyio
async def test_mixed_error_shapes_use_both(session: aiohttp.ClientSession) -> None:
    """ "mixed" draws a shape per line; drawn errors are 429, 500 or 503."""
    async with serve(error_rate=1.0, error_shape="mixed") as server:
        operation = await wait_done(
            session, server.url, (await create_from_lines(session, server.url, lines(30)))["name"]
        )
        rows = await results(session, server.url, operation)
    assert {"error", "status"} <= {key for row in rows for key in row}
    assert {row["error"]["code"] for row in rows if "error" in row} <= {429, 500, 503}


@pytest.mark.anyio
async def test_directives_pick_what_a_line_becomes(session: aiohttp.ClientSession) -> None:
    """[[fake:missing]] leaves the key out, error_line / status_line fail in that shape, a 503 directive
    fails with UNAVAILABLE, an output fault breaks the response, and other lines are answered."""
    prompts = {
        "gone": "x [[fake:missing]]",
        "err": "x [[fake:error_line]]",
        "stat": "x [[fake:status_line]]",
        "busy": "x [[fake:503]]",
        "blocked": "x [[fake:blocked]]",
        "fine": "Tell me about reefs",
    }
    async with serve() as server:
        inputs = [{"key": key, "request": request(text)} for key, text in prompts.items()]
        operation = await wait_done(session, server.url, (await create_from_lines(session, server.url, inputs))["name"])
        rows = by_key(await results(session, server.url, operation))
        ledger = await stats(session, server.url)
    assert "gone" not in rows
    assert rows["err"]["error"]["status"] == "INTERNAL"
    assert rows["stat"]["status"]["code"] == 13
    assert rows["busy"]["error"] == {"code": 503, "message": rows["busy"]["error"]["message"], "status": "UNAVAILABLE"}
    assert rows["blocked"]["response"]["promptFeedback"]["blockReason"] == "SAFETY"
    assert rows["fine"]["response"]["candidates"]
    # The missing line counts as successful: the API does not know it lost it.
    assert operation["metadata"]["batchStats"] == {
        "requestCount": "6",
        "successfulRequestCount": "3",
        "failedRequestCount": "3",
    }
    assert ledger["batches"]["lines"][operation["name"]] == {"succeeded": 2, "failed": 3, "missing": 1}
    assert ledger["faults"]["missing"] == 1


@pytest.mark.anyio
async def test_malformed_lines_become_error_lines(session: aiohttp.ClientSession) -> None:
    """A line that is not JSON, has no request, or holds a request the API refuses is failed alone with
    INVALID_ARGUMENT (a line without a key has none); the rest of the batch is answered."""
    good = orjson.dumps({"key": "good", "request": request("Tell me about caves")})
    data = b"\n".join(
        [
            b"this is not json",
            b'{"key": "norequest"}',
            orjson.dumps({"key": "badfield", "request": {**request("hi"), "bogus": 1}}),
            good,
        ]
    )
    async with serve(error_shape="error") as server:
        file = await upload(session, server.url, data)
        operation = await wait_done(
            session, server.url, (await create(session, server.url, {"fileName": file["name"]}))[1]["name"]
        )
        rows = await results(session, server.url, operation)
    failed = [row for row in rows if "error" in row]
    assert len(failed) == 3 and {row["error"]["status"] for row in failed} == {"INVALID_ARGUMENT"}
    assert {row.get("key") for row in failed} == {None, "norequest", "badfield"}
    assert [row["key"] for row in rows if "response" in row] == ["good"]


@pytest.mark.anyio
async def test_missing_rate_silently_drops_keys(session: aiohttp.ClientSession) -> None:
    """missing_rate leaves some keys out of the file while batchStats counts every line successful."""
    async with serve(missing_rate=0.5) as server:
        operation = await wait_done(
            session, server.url, (await create_from_lines(session, server.url, lines(40)))["name"]
        )
        rows = await results(session, server.url, operation)
        ledger = await stats(session, server.url)
    assert 5 < len(rows) < 35
    assert operation["metadata"]["batchStats"] == {"requestCount": "40", "successfulRequestCount": "40"}
    assert ledger["batches"]["lines"][operation["name"]]["missing"] == 40 - len(rows)


@pytest.mark.anyio
async def test_each_key_is_answered_once_across_batches(session: aiohttp.ClientSession) -> None:
    """The ledger counts answers per key over all jobs. A line with [[fake:500*1]] fails in the first job and,
    resubmitted (same request, so its next attempt), is answered in the second."""
    first = [*lines(5), {"key": "flaky", "request": request("Tell me about storms [[fake:500*1]]")}]
    async with serve() as server:
        one = await wait_done(session, server.url, (await create_from_lines(session, server.url, first))["name"])
        failed = [row["key"] for row in await results(session, server.url, one) if "response" not in row]
        retry = [line for line in first if line["key"] in failed]
        await wait_done(session, server.url, (await create_from_lines(session, server.url, retry))["name"])
        ledger = (await stats(session, server.url))["batches"]
    assert failed == ["flaky"]
    assert ledger["answers_by_key"] == {line["key"]: 1 for line in first}
    assert ledger["errors_by_key"] == {"flaky": 1}


# --- job faults --------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("settings", "name", "state", "code"),
    [
        pytest.param({}, "job [[fake:batch_failed]]", "BATCH_STATE_FAILED", 13, id="failed-directive"),
        pytest.param({"fail_rate": 1.0}, "job", "BATCH_STATE_FAILED", 13, id="failed-rate"),
        pytest.param({}, "job [[fake:batch_expired]]", "BATCH_STATE_EXPIRED", 4, id="expired-directive"),
        pytest.param({"expire_rate": 1.0}, "job", "BATCH_STATE_EXPIRED", 4, id="expired-rate"),
    ],
)
async def test_failed_and_expired_jobs_end_with_an_error_and_no_output(
    session: aiohttp.ClientSession, settings: dict[str, Any], name: str, state: str, code: int
) -> None:
    """A failed job stops halfway through its lines, an expired one never runs; both are done with a
    google.rpc error, no response and no output, and the ledger counts no line of theirs."""
    async with serve(**settings) as server:
        operation = await wait_done(
            session, server.url, (await create_from_lines(session, server.url, lines(6), name=name))["name"]
        )
        ledger = (await stats(session, server.url))["batches"]
    assert operation["metadata"]["state"] == state
    assert operation["error"]["code"] == code and operation["error"]["message"]
    assert "response" not in operation and "output" not in operation["metadata"]
    assert "endTime" in operation["metadata"]
    pending = operation["metadata"]["batchStats"]["pendingRequestCount"]
    assert pending == ("3" if state == "BATCH_STATE_FAILED" else "6")
    assert ledger["ended"] == {state: 1} and ledger["lines"] == {} and ledger["answers_by_key"] == {}


@pytest.mark.anyio
@pytest.mark.parametrize("cancel_output", ["none", "partial"])
async def test_cancel_ends_a_running_job_at_once(session: aiohttp.ClientSession, cancel_output: str) -> None:
    """Cancel answers {} and the job is CANCELLED and done at once with a CANCELLED (1) error; by default it
    has no output, with cancel_output "partial" the lines answered so far are in metadata.output."""
    async with serve(turnaround_s=1.0, pending_share=0.0, cancel_output=cancel_output, shuffle=False) as server:
        operation = await create_from_lines(session, server.url, lines(20))
        await asyncio.sleep(0.25)
        cancelled = await call(session, "POST", f"{server.url}/v1beta/{operation['name']}:cancel", {})
        operation = (await call(session, "GET", f"{server.url}/v1beta/{operation['name']}"))[1]
        rows = (
            await results(session, server.url, {"response": operation["metadata"]["output"]})
            if cancel_output == "partial"
            else []
        )
        ledger = (await stats(session, server.url))["batches"]
    assert cancelled == (200, {})
    assert operation["metadata"]["state"] == "BATCH_STATE_CANCELLED"
    assert operation["done"] is True and operation["error"]["code"] == 1
    stats_done = int(operation["metadata"]["batchStats"]["successfulRequestCount"])
    assert 0 < stats_done < 20
    if cancel_output == "none":
        assert "output" not in operation["metadata"] and ledger["lines"] == {}
    else:
        assert [row["key"] for row in rows] == [f"k{i}" for i in range(stats_done)]
    assert ledger["cancelled"] == 1 and ledger["ended"] == {"BATCH_STATE_CANCELLED": 1}


@pytest.mark.anyio
async def test_an_ended_job_cannot_be_cancelled(session: aiohttp.ClientSession) -> None:
    async with serve() as server:
        operation = await wait_done(
            session, server.url, (await create_from_lines(session, server.url, lines(2)))["name"]
        )
        status, body = await call(session, "POST", f"{server.url}/v1beta/{operation['name']}:cancel", {})
    assert status == 400 and body["error"]["status"] == "FAILED_PRECONDITION"


@pytest.mark.anyio
async def test_output_lag_shows_succeeded_before_the_output(session: aiohttp.ClientSession) -> None:
    """With output_lag_s, a job is SUCCEEDED for a while without output and not done (a live quirk)."""
    async with serve(turnaround_s=0.05, output_lag_s=0.3) as server:
        operation = await create_from_lines(session, server.url, lines(2))
        await asyncio.sleep(0.15)
        early = (await call(session, "GET", f"{server.url}/v1beta/{operation['name']}"))[1]
        late = await wait_done(session, server.url, operation["name"])
    assert early["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    assert "done" not in early and "output" not in early["metadata"]
    assert late["response"]["responsesFile"]


# --- management --------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_delete_forgets_the_job_but_keeps_its_results(session: aiohttp.ClientSession) -> None:
    async with serve() as server:
        operation = await wait_done(
            session, server.url, (await create_from_lines(session, server.url, lines(2)))["name"]
        )
        deleted = await call(session, "DELETE", f"{server.url}/v1beta/{operation['name']}")
        again = await call(session, "GET", f"{server.url}/v1beta/{operation['name']}")
        listed = await call(session, "GET", f"{server.url}/v1beta/batches")
        rows = await results(session, server.url, operation)
        running = await create_from_lines(session, server.url, lines(2))
        running_deleted = await call(session, "DELETE", f"{server.url}/v1beta/{running['name']}")
        ledger = (await stats(session, server.url))["batches"]
    assert deleted == running_deleted == (200, {})
    assert again[0] == 404 and again[1]["error"]["status"] == "NOT_FOUND"
    assert listed == (200, {})
    assert len(rows) == 2
    assert ledger["deleted"] == {"BATCH_STATE_SUCCEEDED": 1, "BATCH_STATE_PENDING": 1}


@pytest.mark.anyio
async def test_list_pages_newest_first(session: aiohttp.ClientSession) -> None:
    async with serve() as server:
        names = [(await create_from_lines(session, server.url, lines(1)))["name"] for _ in range(3)]
        first = (await call(session, "GET", f"{server.url}/v1beta/batches?pageSize=2"))[1]
        token = first["nextPageToken"]
        second = (await call(session, "GET", f"{server.url}/v1beta/batches?pageSize=2&pageToken={token}"))[1]
        bad = await call(session, "GET", f"{server.url}/v1beta/batches?pageToken=nonsense")
    assert [op["name"] for op in first["operations"]] == names[:0:-1]
    assert [op["name"] for op in second["operations"]] == names[:1] and "nextPageToken" not in second
    assert bad[0] == 400


@pytest.mark.anyio
@pytest.mark.parametrize(("limit_status", "rpc"), [(429, "RESOURCE_EXHAUSTED"), (400, "FAILED_PRECONDITION")])
async def test_concurrent_jobs_are_limited(session: aiohttp.ClientSession, limit_status: int, rpc: str) -> None:
    """Past max_concurrent jobs pending or running, a create is refused (429 with a Help link by default);
    once a job ends there is room again."""
    async with serve(max_concurrent=1, limit_status=limit_status) as server:
        first = await create_from_lines(session, server.url, lines(1))
        file = await upload(session, server.url, orjson.dumps(lines(1)[0]))
        status, refused = await create(session, server.url, {"fileName": file["name"]})
        await wait_done(session, server.url, first["name"])
        again, _ = await create(session, server.url, {"fileName": file["name"]})
    assert status == limit_status and refused["error"]["status"] == rpc
    if limit_status == 429:
        assert refused["error"]["details"][0]["@type"] == "type.googleapis.com/google.rpc.Help"
    assert again == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("input_config", "status"),
    [
        pytest.param({"fileName": "files/nosuchfile"}, 403, id="unknown-file"),
        pytest.param({}, 400, id="no-input"),
        pytest.param({"fileName": "files/x", "requests": {"requests": []}}, 400, id="both-inputs"),
        pytest.param({"requests": {"requests": []}}, 400, id="no-requests"),
        pytest.param({"requests": {"requests": [{"metadata": {"key": "a"}}]}}, 400, id="inline-without-request"),
        pytest.param({"requests": {"requests": [{"request": {}, "extra": 1}]}}, 400, id="inline-unknown-field"),
    ],
)
async def test_bad_creates_are_refused(
    session: aiohttp.ClientSession, input_config: dict[str, Any], status: int
) -> None:
    async with serve() as server:
        got, body = await create(session, server.url, input_config)
    assert got == status, body


@pytest.mark.anyio
async def test_inline_batches_over_20_mb_are_refused(session: aiohttp.ClientSession) -> None:
    big = [{"request": request("x" * 1_000_000)} for _ in range(21)]
    payload = io.BytesIO(orjson.dumps({"batch": {"inputConfig": {"requests": {"requests": big}}}}))
    async with (
        serve() as server,
        session.post(
            f"{server.url}/v1beta/models/{MODEL}:batchGenerateContent", data=payload, headers={"x-goog-api-key": KEY}
        ) as response,
    ):
        status, body = response.status, await response.json()
    assert status == 400 and "payload size exceeds" in body["error"]["message"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "status"),
    [pytest.param({}, 403, id="no-key"), pytest.param({"x-goog-api-key": "wrong"}, 400, id="wrong-key")],
)
async def test_batch_routes_check_the_key(session: aiohttp.ClientSession, headers: dict[str, str], status: int) -> None:
    async with serve() as server:
        url = f"{server.url}/v1beta/models/{MODEL}:batchGenerateContent"
        created = await call(session, "POST", url, {"batch": {}}, headers=headers)
        listed = await call(session, "GET", f"{server.url}/v1beta/batches", headers=headers)
        got = await call(session, "GET", f"{server.url}/v1beta/batches/abc", headers=headers)
    assert created[0] == listed[0] == got[0] == status


@pytest.mark.anyio
async def test_unknown_model_and_unknown_job_are_404(session: aiohttp.ClientSession) -> None:
    async with serve() as server:
        model = await call(session, "POST", f"{server.url}/v1beta/models/gpt-4o:batchGenerateContent", {"batch": {}})
        job = await call(session, "GET", f"{server.url}/v1beta/batches/nosuchjob")
    assert model[0] == job[0] == 404
    assert "models/gpt-4o" in model[1]["error"]["message"]


@pytest.mark.anyio
async def test_batch_tokens_are_billed_apart_from_online_ones(session: aiohttp.ClientSession) -> None:
    """The batch ledger bills the usage of the responses written; the online ledger bills none of it."""
    async with serve() as server:
        operation = await wait_done(
            session, server.url, (await create_from_lines(session, server.url, lines(3)))["name"]
        )
        rows = await results(session, server.url, operation)
        ledger = await stats(session, server.url)
    total = sum(row["response"]["usageMetadata"]["totalTokenCount"] for row in rows)
    assert ledger["batches"]["billed"]["totalTokenCount"] == total
    assert ledger["billed_responses"] == 0 and ledger["billed"]["totalTokenCount"] == 0
    assert ledger["requests_by_method"]["batchGenerateContent"] == 1
