"""Edge: one shared aiohttp session that carries request bodies to a Gemini endpoint.

Every aiohttp and timeout error is mapped here to the `errors` tree, with the API key redacted; nothing from
aiohttp escapes this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import aiohttp

from batchgen.errors import ApiError, AuthError, BatchgenError, TransportError
from batchgen.gemini.errors import error_from_response
from batchgen.gemini.response import decode_json
from batchgen.gemini.stream import SseDecoder, merge_stream
from batchgen.secret import ApiKey

Auth = Literal["x-goog-api-key", "bearer"]
# The live API names the tier that served a call in this header of its 200 answers (recorded in vercel/ai
# fixture google-threshold-live.json, beside usageMetadata.serviceTier with the same value).
SERVICE_TIER_HEADER = "x-gemini-service-tier"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how requests go: `{base_url}/v1beta/models/{model}:generateContent`."""

    base_url: str
    model: str
    auth: Auth = "x-goog-api-key"
    stream: bool = False
    timeout_s: float = 120.0

    def url(self, method: str) -> str:
        base = self.base_url.rstrip("/")
        if not base.endswith("/v1beta"):
            base += "/v1beta"
        return f"{base}/models/{self.model.removeprefix('models/')}:{method}"


class GeminiClient:
    """Sends request bodies; an async context manager owning the session. Implements `records.Generate`."""

    def __init__(self, endpoint: Endpoint, key: ApiKey, *, connections: int = 100) -> None:
        self.endpoint = endpoint
        self._key = key
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=endpoint.timeout_s)
        method = "streamGenerateContent?alt=sse" if endpoint.stream else "generateContent"
        self._generate_url = endpoint.url(method)
        self._headers = {"Content-Type": "application/json", **_auth_header(endpoint.auth, key)}

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __repr__(self) -> str:
        return f"GeminiClient({self._generate_url!r}, auth={self.endpoint.auth!r}, key={self._key!r})"

    async def __call__(self, body: bytes, /) -> Mapping[str, Any]:
        """POST one generateContent request; returns the decoded response (streams merged)."""
        if self.endpoint.stream:
            return await self._post(self._generate_url, body, _read_stream)
        return await self._post(self._generate_url, body, _read_json)

    async def count_tokens(self, request_body: bytes) -> int:
        """Exact input tokens for a full request body, via `:countTokens` with a generateContentRequest."""
        model = f"models/{self.endpoint.model.removeprefix('models/')}"
        wrapped = b'{"generateContentRequest":{"model":"' + model.encode() + b'",' + request_body[1:] + b"}"
        answer = await self._post(self.endpoint.url("countTokens"), wrapped, _read_json)
        return int(answer.get("totalTokens", 0))

    async def _post(self, url: str, body: bytes, read: Any) -> Mapping[str, Any]:
        if self._session is None:
            raise RuntimeError("GeminiClient used outside `async with`")
        try:
            async with self._session.post(url, data=body, timeout=self._timeout) as response:
                if response.status != 200:
                    payload = await response.read()
                    raise error_from_response(response.status, payload, response.headers.get("Retry-After"))
                result: Mapping[str, Any] = await read(response)
                return _with_served_tier(result, response.headers.get(SERVICE_TIER_HEADER))
        except ApiError as exc:
            raise self._redacted(exc) from None
        except TimeoutError as exc:
            raise TransportError(f"no complete answer within {self.endpoint.timeout_s:g}s") from exc
        except aiohttp.ClientConnectorError as exc:
            # Refused, DNS, TLS (the certificate and SSL errors subclass it): no connection was made at all.
            # A connect timeout is a TimeoutError above: a slow server, not a wrong address.
            raise TransportError(self._key.redact(f"{type(exc).__name__}: {exc}"), connect=True) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(self._key.redact(f"{type(exc).__name__}: {exc}")) from exc

    def _redacted(self, exc: ApiError) -> ApiError:
        """The error without the key in its message or details (a google.rpc.DebugInfo detail can say "Invalid
        API key: <key>"); an auth error also says which key was refused."""
        text = str(exc)
        clean = self._key.redact(text)
        if isinstance(exc, AuthError) and self._key.source:
            clean += f" (the key in {self._key.source})"
        if clean != text:
            exc.args = (clean,)
        if exc.details is not None:
            exc.details = self._key.redact(exc.details)
        return exc


def _with_served_tier(result: Mapping[str, Any], tier: str | None) -> Mapping[str, Any]:
    """The response with the header's tier in `usageMetadata.serviceTier` when the body does not say it, so that
    one field carries the tier a row was served at, whichever way the API reported it."""
    usage = result.get("usageMetadata") if tier else None
    if isinstance(usage, dict) and "serviceTier" not in usage:
        usage["serviceTier"] = tier
    return result


def _auth_header(auth: Auth, key: ApiKey) -> dict[str, str]:
    if auth == "bearer":
        return {"Authorization": f"Bearer {key.reveal()}"}
    return {"x-goog-api-key": key.reveal()}


async def _read_json(response: aiohttp.ClientResponse) -> Any:
    return decode_json(await response.read())


async def _read_stream(response: aiohttp.ClientResponse) -> Any:
    decoder = SseDecoder()
    events: list[Any] = []
    try:
        async for chunk in response.content.iter_any():
            events.extend(decoder.feed(chunk))
        events.extend(decoder.close())
    except BatchgenError:
        raise
    except (aiohttp.ClientPayloadError, asyncio.IncompleteReadError) as exc:
        raise TransportError("stream cut before its final event") from exc
    return merge_stream(events)
