"""The HTTP client against the local Gemini server: auth, streaming, and every failure mapped to our errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import closed_port

from batchgen.errors import (
    AuthError,
    MalformedResponse,
    RateLimited,
    RequestRejected,
    ServerError,
    TransportError,
)
from batchgen.fakeserver import FakeServer, ServerConfig
from batchgen.gemini.request import RequestTemplate, user_contents
from batchgen.gemini.response import parse_response
from batchgen.online.client import Endpoint, GeminiClient
from batchgen.secret import ApiKey

KEY = "test-key-5f1c9a"


@pytest.fixture
def server_config() -> ServerConfig:
    return ServerConfig(api_key=KEY, slow_s=5.0)


def body(text: str, **request: object) -> bytes:
    return RequestTemplate(request).render(user_contents(text))


async def call(url: str, text: str, *, key: str = KEY, **endpoint: object) -> object:
    settings = {"base_url": url, "model": "gemini-2.5-flash", **endpoint}
    async with GeminiClient(Endpoint(**settings), ApiKey(key)) as client:  # type: ignore[arg-type]
        return await client(body(text))


@pytest.mark.anyio
@pytest.mark.parametrize("auth", ["x-goog-api-key", "bearer"])
async def test_both_auth_styles_are_accepted(server: FakeServer, auth: str) -> None:
    reply = parse_response(await call(server.url, "hello", auth=auth))
    assert reply.text and reply.usage.prompt


@pytest.mark.anyio
async def test_wrong_key_is_an_auth_error_that_never_shows_the_key(server: FakeServer) -> None:
    with pytest.raises(AuthError) as caught:
        await call(server.url, "hello", key="wrong-key-123456")
    assert caught.value.reason == "API_KEY_INVALID"
    assert "wrong-key-123456" not in str(caught.value) and "wrong-key-123456" not in repr(caught.value)


@pytest.mark.anyio
async def test_unknown_model_is_rejected_with_404(server: FakeServer) -> None:
    with pytest.raises(RequestRejected) as caught:
        await call(server.url, "hello", model="no-such-model")
    assert caught.value.http_status == 404


@pytest.mark.anyio
async def test_stream_gives_the_same_result_as_the_unary_call(server: FakeServer) -> None:
    """Same request, same server output: streamed and unary calls parse to the same reply."""
    unary = parse_response(await call(server.url, "tell me a story about a lighthouse"))
    streamed = parse_response(await call(server.url, "tell me a story about a lighthouse", stream=True))
    assert streamed.text == unary.text
    assert streamed.usage == unary.usage
    assert streamed.finish_reason == unary.finish_reason == "STOP"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("directive", "stream", "error"),
    [
        pytest.param("500", False, ServerError, id="500"),
        pytest.param("503", False, ServerError, id="503"),
        pytest.param("429", False, RateLimited, id="429"),
        pytest.param("nonjson", False, MalformedResponse, id="non-json-200"),
        pytest.param("nocandidates", False, MalformedResponse, id="no-candidates"),
        pytest.param("drop", False, TransportError, id="dropped-connection"),
        pytest.param("sse_cut", True, TransportError, id="stream-cut"),
        pytest.param("sse_error", True, ServerError, id="stream-error-object"),
    ],
)
async def test_faults_map_to_errors(server: FakeServer, directive: str, stream: bool, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_response(await call(server.url, f"hello [[fake:{directive}]]", stream=stream))


@pytest.mark.anyio
async def test_429_carries_the_servers_retry_delay(server: FakeServer) -> None:
    with pytest.raises(RateLimited) as caught:
        await call(server.url, "hello [[fake:429]]")
    assert caught.value.retry_after is not None and caught.value.retry_after > 0


@pytest.mark.anyio
async def test_slow_answer_hits_the_total_timeout(server: FakeServer) -> None:
    """A slow server is not an unreachable one: a timeout is not a connection failure."""
    with pytest.raises(TransportError, match=r"within 0\.2s") as caught:
        await call(server.url, "hello [[fake:slow]]", timeout_s=0.2)
    assert caught.value.connect is False


@pytest.mark.anyio
@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda server: closed_port(), id="refused"),
        pytest.param(lambda server: server.url.replace("http://", "https://"), id="tls"),
    ],
)
async def test_no_connection_is_a_transport_error_of_the_connect_kind(
    server: FakeServer, where: Callable[[FakeServer], str]
) -> None:
    """Refused and TLS failures mean no connection was made at all: the runner's probe stops a job on them."""
    with pytest.raises(TransportError) as caught:
        await call(where(server), "hello")
    assert caught.value.connect is True


@pytest.mark.anyio
async def test_count_tokens_matches_the_prompt_token_count(server: FakeServer) -> None:
    endpoint = Endpoint(base_url=server.url, model="gemini-2.5-flash")
    request = body("count these words please", systemInstruction={"parts": [{"text": "be brief"}]})
    async with GeminiClient(endpoint, ApiKey(KEY)) as client:
        counted = await client.count_tokens(request)
        reply = parse_response(await client(request))
    assert counted == reply.usage.prompt


def test_repr_never_shows_the_key() -> None:
    client = GeminiClient(Endpoint(base_url="http://x", model="m"), ApiKey(KEY))
    assert KEY not in repr(client)
    assert KEY not in repr(ApiKey(KEY)) and KEY not in str(ApiKey(KEY))


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("tier", ["flex", "standard"])
async def test_the_tier_named_in_the_answer_header_lands_in_usage_metadata(
    server: FakeServer, stream: bool, tier: str
) -> None:
    """The `x-gemini-service-tier` header becomes usageMetadata.serviceTier when the body lacks it: the one
    place a row's served tier is read from."""
    settings = {"base_url": server.url, "model": "gemini-2.5-flash", "stream": stream}
    async with GeminiClient(Endpoint(**settings), ApiKey(KEY)) as client:  # type: ignore[arg-type]
        answer = await client(body("hello", serviceTier=tier))
    assert isinstance(answer, dict)
    assert answer["usageMetadata"]["serviceTier"] == tier
