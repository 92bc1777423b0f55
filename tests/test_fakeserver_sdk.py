"""Google's own google-genai SDK, pointed at the fake server, reads its answers and errors, and drives its Files
and Batch APIs: an independent check of the wire format (the SDK shares no code with the fake or with
batchgen's client)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import orjson
import pytest
from google import genai
from google.genai import errors, types
from pydantic import BaseModel

from batchgen.fakeserver import BatchConfig, FakeServer, FilesConfig, ServerConfig

KEY = "sdk-key"
# The SDK subclasses aiohttp's ClientSession, which aiohttp warns about; that is the SDK's business.
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")


class Recipe(BaseModel):
    name: str
    minutes: int
    vegetarian: bool


@pytest.fixture
async def client() -> AsyncIterator[genai.Client]:
    async with FakeServer(ServerConfig(api_key=KEY)) as server:
        options = types.HttpOptions(base_url=server.url, api_version="v1beta")
        sdk = genai.Client(api_key=KEY, http_options=options)
        yield sdk
        await sdk.aio.aclose()


@pytest.mark.anyio
async def test_sdk_reads_text_thoughts_and_usage(client: genai.Client) -> None:
    """The SDK's .text skips thought parts and its usage_metadata carries every count."""
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True))
    response = await client.aio.models.generate_content(
        model="gemini-2.5-flash", contents="Tell me about tides", config=config
    )
    assert response.text and "Considering" not in response.text
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.thoughts_token_count
    assert usage.total_token_count == usage.prompt_token_count + (usage.candidates_token_count or 0) + (
        usage.thoughts_token_count
    )


@pytest.mark.anyio
async def test_sdk_parses_json_into_its_schema(client: genai.Client) -> None:
    """A pydantic response_schema comes back as parsed objects (the SDK would give None on a mismatch)."""
    config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=list[Recipe])
    response = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Recipes", config=config)
    assert isinstance(response.parsed, list) and response.parsed
    assert all(isinstance(recipe, Recipe) for recipe in response.parsed)


@pytest.mark.anyio
async def test_sdk_streams_and_counts_tokens(client: genai.Client) -> None:
    """The SDK's SSE reader gets several chunks whose last holds the final usage; count_tokens agrees with
    the prompt count."""
    chunks = [
        chunk
        async for chunk in await client.aio.models.generate_content_stream(
            model="gemini-3-flash-preview", contents="Stream a paragraph"
        )
    ]
    assert len(chunks) >= 2
    final = chunks[-1].usage_metadata
    assert final is not None and final.total_token_count
    counted = await client.aio.models.count_tokens(model="gemini-3-flash-preview", contents="Stream a paragraph")
    assert counted.total_tokens == final.prompt_token_count


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("prompt", "code"),
    [pytest.param("x [[fake:429]]", 429, id="429"), pytest.param("x [[fake:503]]", 503, id="503")],
)
async def test_sdk_maps_error_bodies(client: genai.Client, prompt: str, code: int) -> None:
    """google.rpc error bodies become the SDK's APIError with the same code and status."""
    with pytest.raises(errors.APIError) as caught:
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents=prompt)
    assert caught.value.code == code


@pytest.mark.anyio
async def test_sdk_sees_the_mid_stream_error(client: genai.Client) -> None:
    """The un-prefixed {"error": ...} object in a stream is raised by the SDK as a server error."""
    stream = await client.aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents="A long answer please [[fake:sse_error]]"
    )
    with pytest.raises(errors.ServerError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code == 503


# --- Files and Batch APIs, service tiers -------------------------------------------------------------------


@pytest.fixture
async def batch_client() -> AsyncIterator[genai.Client]:
    config = ServerConfig(api_key=KEY, batch=BatchConfig(turnaround_s=0.2), files=FilesConfig(download_uploads=True))
    async with FakeServer(config) as server:
        options = types.HttpOptions(base_url=server.url, api_version="v1beta")
        sdk = genai.Client(api_key=KEY, http_options=options)
        yield sdk
        await sdk.aio.aclose()


async def finished(client: genai.Client, name: str) -> types.BatchJob:
    """Poll with the SDK until the job has ended (the SDK's own `done`)."""
    for _ in range(250):
        job = await client.aio.batches.get(name=name)
        if job.done:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} did not finish")


@pytest.mark.anyio
async def test_sdk_uploads_runs_a_file_batch_and_downloads_its_results(batch_client: genai.Client) -> None:
    """files.upload (resumable protocol), batches.create from the file, batches.get until SUCCEEDED, and
    files.download of dest.file_name all parse our objects; the results are JSONL joined by key."""
    lines = [{"key": f"k{i}", "request": {"contents": [{"parts": [{"text": f"Topic {i}"}]}]}} for i in range(3)]
    data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    file = await batch_client.aio.files.upload(
        file=io.BytesIO(data), config=types.UploadFileConfig(mime_type="jsonl", display_name="batch-input")
    )
    assert file.name and file.name.startswith("files/") and file.size_bytes == len(data)
    assert file.state == types.FileState.ACTIVE and file.source == types.FileSource.UPLOADED
    assert (await batch_client.aio.files.get(name=file.name)).sha256_hash == file.sha256_hash
    job = await batch_client.aio.batches.create(model="gemini-2.5-flash", src=file.name, config={"display_name": "sdk"})
    assert job.state == types.JobState.JOB_STATE_PENDING and job.display_name == "sdk"
    assert job.name and job.model == "models/gemini-2.5-flash" and job.create_time is not None
    job = await finished(batch_client, job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED and job.end_time is not None and job.name is not None
    assert job.dest is not None and job.dest.file_name == f"files/batch-{job.name.removeprefix('batches/')}"
    results = await batch_client.aio.files.download(file=job.dest.file_name)
    rows = [orjson.loads(row) for row in results.splitlines()]
    assert sorted(row["key"] for row in rows) == ["k0", "k1", "k2"]
    assert await batch_client.aio.files.download(file=file.name) == data


@pytest.mark.anyio
async def test_sdk_reads_inline_responses(batch_client: genai.Client) -> None:
    """An inline batch: dest.inlined_responses are GenerateContentResponses, in order, with their metadata; a
    failed one carries a google.rpc error (INTERNAL is 13) that the SDK's JobError reads."""
    requests = [
        types.InlinedRequest(contents=f"Say something about {topic}", metadata={"key": topic})
        for topic in ("tides", "comets", "storms [[fake:500]]")
    ]
    job = await batch_client.aio.batches.create(model="gemini-2.5-flash", src=requests)
    assert job.name
    job = await finished(batch_client, job.name)
    assert job.dest is not None and job.dest.inlined_responses is not None
    answers = job.dest.inlined_responses
    assert [answer.metadata for answer in answers] == [
        {"key": "tides"},
        {"key": "comets"},
        {"key": "storms [[fake:500]]"},
    ]
    assert all(answer.response is not None and answer.response.text for answer in answers[:2])
    failed = answers[2]
    assert failed.response is None and failed.error is not None and failed.error.code == 13


@pytest.mark.anyio
async def test_sdk_lists_cancels_and_deletes(batch_client: genai.Client) -> None:
    """batches.list pages through `operations`; cancel leaves the job CANCELLED; delete removes it; the SDK
    lists and deletes files too."""
    requests = [types.InlinedRequest(contents="Hello")]
    names = []
    for _ in range(3):
        created = await batch_client.aio.batches.create(model="gemini-2.5-flash", src=requests)
        assert created.name
        names.append(created.name)
    listed = [job.name async for job in await batch_client.aio.batches.list(config={"page_size": 2})]
    assert listed == names[::-1]
    await batch_client.aio.batches.cancel(name=names[0])
    assert (await batch_client.aio.batches.get(name=names[0])).state == types.JobState.JOB_STATE_CANCELLED
    await batch_client.aio.batches.delete(name=names[0])
    with pytest.raises(errors.ClientError) as caught:
        await batch_client.aio.batches.get(name=names[0])
    assert caught.value.code == 404
    file = await batch_client.aio.files.upload(file=io.BytesIO(b"{}"), config={"mime_type": "application/jsonl"})
    assert file.name is not None and file.name in [f.name async for f in await batch_client.aio.files.list()]
    await batch_client.aio.files.delete(name=file.name)


@pytest.mark.anyio
async def test_sdk_sends_flex_and_sees_the_served_tier(client: genai.Client) -> None:
    """GenerateContentConfig(service_tier=FLEX) reaches the server as serviceTier; the answer's headers name
    the tier, where the cookbook reads it."""
    config = types.GenerateContentConfig(service_tier=types.ServiceTier.FLEX)
    response = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Hello", config=config)
    assert response.text
    assert response.sdk_http_response is not None and response.sdk_http_response.headers is not None
    assert response.sdk_http_response.headers["x-gemini-service-tier"] == "flex"
