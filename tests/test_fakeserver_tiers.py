"""Service tiers on the fake server over real HTTP: `serviceTier` parsing, the tier reported in the
`x-gemini-service-tier` header (and optionally usageMetadata.trafficType), Flex's extra wait and its 503/429
sheds, and the ledger's per-tier counts."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson
import pytest

from batchgen.fakeserver import FakeServer, ServerConfig, TierConfig

KEY = "tier-key"
URL = "/v1beta/models/gemini-2.5-flash:generateContent"


def serve(**tiers: Any) -> FakeServer:
    return FakeServer(ServerConfig(api_key=KEY, tiers=TierConfig(**tiers)))


def body(text: str = "Tell me about tides", **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


async def generate(
    session: aiohttp.ClientSession, server: FakeServer, payload: dict[str, Any], path: str = URL
) -> tuple[int, dict[str, str], Any]:
    async with session.post(
        f"{server.url}{path}", data=orjson.dumps(payload), headers={"x-goog-api-key": KEY}
    ) as response:
        raw = await response.read()
        return response.status, dict(response.headers), raw


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("tier", "reported"),
    [
        pytest.param(None, "standard", id="absent"),
        pytest.param("unspecified", "standard", id="unspecified"),
        pytest.param("flex", "flex", id="flex"),
        pytest.param("FLEX", "flex", id="flex-upper-case-as-the-rest-docs"),
        pytest.param("priority", "priority", id="priority"),
    ],
)
async def test_the_served_tier_is_in_the_response_header(
    session: aiohttp.ClientSession, tier: str | None, reported: str
) -> None:
    """Every 200 answer names its tier in x-gemini-service-tier, as the live API does."""
    payload = body() if tier is None else body(serviceTier=tier)
    async with serve() as server:
        status, headers, _ = await generate(session, server, payload)
    assert status == 200
    assert headers["x-gemini-service-tier"] == reported


@pytest.mark.anyio
async def test_snake_case_field_and_streams_are_reported_too(session: aiohttp.ClientSession) -> None:
    async with serve() as server:
        status, headers, raw = await generate(
            session, server, body(service_tier="flex"), "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        )
    assert status == 200 and raw.startswith(b"data: ")
    assert headers["x-gemini-service-tier"] == "flex"


@pytest.mark.anyio
async def test_an_unknown_tier_is_400(session: aiohttp.ClientSession) -> None:
    async with serve() as server:
        status, headers, raw = await generate(session, server, body(serviceTier="turbo"))
    assert status == 400 and orjson.loads(raw)["error"]["status"] == "INVALID_ARGUMENT"
    assert "x-gemini-service-tier" not in headers


@pytest.mark.anyio
async def test_the_header_can_be_turned_off_and_traffic_type_on(session: aiohttp.ClientSession) -> None:
    """header=False sends no tier header; usage_traffic_type adds the SDK's (Vertex) trafficType spelling."""
    async with serve(header=False, usage_traffic_type=True) as server:
        _, headers, raw = await generate(session, server, body(serviceTier="flex"))
        _, _, standard = await generate(session, server, body())
    assert "x-gemini-service-tier" not in headers
    assert orjson.loads(raw)["usageMetadata"]["trafficType"] == "ON_DEMAND_FLEX"
    assert orjson.loads(standard)["usageMetadata"]["trafficType"] == "ON_DEMAND"


@pytest.mark.anyio
async def test_flex_waits_its_extra_latency(session: aiohttp.ClientSession) -> None:
    """A flex request takes at least flex_latency_ms longer; a standard one does not wait."""
    async with serve(flex_latency_ms=300) as server:
        started = time.monotonic()
        await generate(session, server, body(serviceTier="flex"))
        flex = time.monotonic() - started
        started = time.monotonic()
        await generate(session, server, body())
        standard = time.monotonic() - started
    assert flex >= 0.3 > standard


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("weights", "status", "rpc"),
    [({"503": 1.0, "429": 0.0}, 503, "UNAVAILABLE"), ({"503": 0.0, "429": 1.0}, 429, "RESOURCE_EXHAUSTED")],
)
async def test_flex_sheds_in_the_usual_error_shapes(
    session: aiohttp.ClientSession, weights: dict[str, float], status: int, rpc: str
) -> None:
    """flex_fail_rate sheds flex requests with 503 UNAVAILABLE or 429 RESOURCE_EXHAUSTED (google.rpc bodies);
    standard requests are never shed; the ledger counts requests, sheds and answers per tier."""
    async with serve(flex_fail_rate=1.0, flex_fail_weights=weights) as server:
        shed = await generate(session, server, body(serviceTier="flex"))
        standard = await generate(session, server, body())
        ledger = server.stats.to_json()["tiers"]
    error = orjson.loads(shed[2])["error"]
    assert (shed[0], error["code"], error["status"]) == (status, status, rpc)
    assert standard[0] == 200
    assert ledger == {
        "requests": {"flex": 1, "standard": 1},
        "shed": {str(status): 1},
        "answered": {"standard": 1},
    }


def test_tier_config_is_checked() -> None:
    with pytest.raises(ValueError, match="flex_fail_rate"):
        TierConfig(flex_fail_rate=2.0)
    with pytest.raises(ValueError, match="flex_fail_weights"):
        TierConfig(flex_fail_weights={"500": 1.0})
