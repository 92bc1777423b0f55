"""The Files and Batch API client over real HTTP against the local server: a resumable upload in chunks, a job
created, polled, found by its display name, cancelled, its results downloaded; errors mapped, the key hidden."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio
import pytest

from batchgen.batch.client import BatchClient
from batchgen.errors import AuthError, RateLimited, RequestRejected, Unreachable
from batchgen.fakeserver import BatchConfig, FakeServer, FilesConfig, ServerConfig
from batchgen.gemini.batch import parse_result_line, request_line
from batchgen.gemini.request import RequestTemplate, user_contents
from batchgen.online.retry import Retrier, RetryPolicy
from batchgen.secret import ApiKey

KEY = "batch-client-key-71c3"
T = TypeVar("T")

pytestmark = pytest.mark.anyio


async def no_sleep(seconds: float) -> None:
    await anyio.lowlevel.checkpoint()


RETRY = Retrier(RetryPolicy(max_attempts=2), sleep=no_sleep)


@pytest.fixture
def server_config() -> ServerConfig:
    return ServerConfig(
        api_key=KEY,
        files=FilesConfig(upload_granularity=256),
        batch=BatchConfig(turnaround_s=0.1, max_concurrent=2),
    )


def client(server: FakeServer, *, key: str = KEY, **options: Any) -> BatchClient:
    return BatchClient(server.url, "gemini-2.5-flash", ApiKey(key), retry=options.pop("retry", RETRY), **options)


def input_file(folder: Path, rows: int) -> Path:
    template = RequestTemplate({})
    path = folder / "in.jsonl"
    path.write_bytes(b"".join(request_line(f"k{i}", template.render(user_contents(f"row {i}"))) for i in range(rows)))
    return path


async def finished(batches: BatchClient, name: str) -> Any:
    with anyio.fail_after(5):
        # A remote job has no event to wait on: its state is only known by asking.
        while not (operation := await batches.get(name)).terminal:  # noqa: ASYNC110
            await anyio.sleep(0.02)
    return operation


async def test_a_file_uploaded_in_chunks_becomes_a_job_whose_results_download(
    server: FakeServer, tmp_path: Path
) -> None:
    """Upload in 1 KiB chunks (a multiple of the server's granularity), create, poll to SUCCEEDED, download:
    one results line per key, each answered."""
    path = input_file(tmp_path, 40)
    async with client(server, chunk_bytes=1000) as batches:
        name = await batches.upload(path, "batchgen t s00001")
        operation = await batches.create("batchgen t s00001", name)
        assert operation.state == "PENDING" and operation.counts["requestCount"] == 40
        done = await finished(batches, operation.name)
        assert done.state == "SUCCEEDED" and done.responses_file is not None
        size = await batches.download(done.responses_file, tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert size == (tmp_path / "out.jsonl").stat().st_size
    assert sorted(parse_result_line(line).key or "" for line in lines) == sorted(f"k{i}" for i in range(40))
    assert all(parse_result_line(line).response for line in lines)
    assert server.stats.batch.files["uploaded_bytes"] == path.stat().st_size


class LostAnswer:
    """A Retry whose `lose`-th call sends once, loses the answer, and tries again: as a dropped connection after
    the server got the chunk."""

    def __init__(self, lose: int) -> None:
        self.calls = 0
        self.lose = lose

    async def call(self, attempt: Callable[[int], Awaitable[T]]) -> T:
        self.calls += 1
        if self.calls == self.lose:
            await attempt(1)
            return await attempt(2)
        return await attempt(1)


async def test_a_chunk_whose_answer_was_lost_resumes_where_the_server_stands(
    server: FakeServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """After a failed chunk the client asks the session how much arrived and goes on from there: the file is
    whole, not doubled."""
    path = input_file(tmp_path, 40)
    async with client(server, chunk_bytes=1000, retry=LostAnswer(lose=2)) as batches:
        name = await batches.upload(path, "resumed")
    async with session.get(f"{server.url}/v1beta/{name}", headers={"x-goog-api-key": KEY}) as answer:
        file = await answer.json()
    assert int(file["sizeBytes"]) == path.stat().st_size


async def test_a_job_is_found_by_its_display_name_and_cancelled(server: FakeServer, tmp_path: Path) -> None:
    """A rerun that does not know whether its create reached the API looks the job up by name."""
    async with client(server) as batches:
        name = await batches.upload(input_file(tmp_path, 3), "x")
        created = await batches.create("batchgen t s00007", name)
        await batches.create("batchgen t s00008", name)
        found = await batches.find("batchgen t s00007")
        assert found is not None and found.name == created.name
        assert await batches.find("batchgen t s00009") is None
        await batches.cancel(created.name)
        assert (await batches.get(created.name)).state == "CANCELLED"


async def test_more_jobs_than_the_limit_is_rate_limited(server: FakeServer, tmp_path: Path) -> None:
    async with client(server) as batches:
        name = await batches.upload(input_file(tmp_path, 3), "x")
        for number in range(2):
            await batches.create(f"job {number}", name)
        with pytest.raises(RateLimited):
            await batches.create("one too many", name)


async def test_an_unknown_job_is_rejected_and_a_wrong_key_is_an_auth_error_without_the_key(server: FakeServer) -> None:
    async with client(server) as batches:
        with pytest.raises(RequestRejected) as missing:
            await batches.get("batches/nosuchjob")
    assert missing.value.http_status == 404
    async with client(server, key="wrong-key-0042") as batches:
        with pytest.raises(AuthError) as caught:
            await batches.get("batches/nosuchjob")
    assert "wrong-key-0042" not in str(caught.value)


async def test_an_address_nothing_answers_at_is_unreachable_at_once() -> None:
    """No connection before the API ever answered: a wrong base_url or a server down, which retries would only
    wait on; the run stops at once with the address."""
    counting = LostAnswer(lose=0)
    async with BatchClient("http://127.0.0.1:9", "gemini-2.5-flash", ApiKey(KEY), retry=counting) as batches:
        with pytest.raises(Unreachable, match=r"no connection to http://127\.0\.0\.1:9"):
            await batches.get("batches/x")
    assert counting.calls == 1
