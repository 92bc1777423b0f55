"""Google's own google-genai SDK, pointed at the fake server, reads its answers and errors: an independent
check of the wire format (the SDK shares no code with the fake or with batchgen's client)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google import genai
from google.genai import errors, types
from pydantic import BaseModel

from batchgen.fakeserver import FakeServer, ServerConfig

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
