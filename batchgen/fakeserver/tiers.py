"""Service tiers of generateContent: `serviceTier` read from a request, Flex's wait and shedding, and the tier
reported back.

Request: a top-level `serviceTier` (or `service_tier`) of "standard", "flex", "priority" or "unspecified".
The SDK sends its ServiceTier values lowercase (types.py); the REST example of the Flex docs sends "FLEX";
so case is ignored. Other values are 400 INVALID_ARGUMENT; absent or unspecified is standard.

Flex: a flex request waits `flex_latency_ms` before the quotas see it (Flex queues for spare capacity), and
`flex_fail_rate` of flex requests are shed with 503 UNAVAILABLE or 429 RESOURCE_EXHAUSTED (`flex_fail_weights`)
in the usual error shapes: "Flex is sheddable and fails with 503 errors" (cookbook quickstarts/
Inference_tiers.ipynb). Priority is served as standard is.

Reporting: the live API names the tier that served a request in the response header `x-gemini-service-tier`
("flex", "standard" or "priority"; cookbook Inference_tiers.ipynb at commit 48e689e8, before its rewrite for
the Interactions API, and a published benchmark that read it on requests sent without a tier). Only 200
answers carry it. Recorded Gemini API answers also carry it as `usageMetadata.serviceTier` ("standard", lower
case, on every stream event; absent from older recordings), which the SDK's response types lack; it is
written there too. The SDK's `GenerateContentResponseUsageMetadata` has `trafficType` (ON_DEMAND,
ON_DEMAND_FLEX, ON_DEMAND_PRIORITY), documented "not supported in Gemini API" and seen only on Vertex AI; with
`usage_traffic_type` on, usageMetadata carries it anyway, for clients that want to be ready (UNCONFIRMED).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from aiohttp import web

from batchgen.fakeserver import errors

TIERS = ("standard", "flex", "priority")
HEADER = "x-gemini-service-tier"
FLEX_FAULTS = ("503", "429")
TRAFFIC_TYPES = {"standard": "ON_DEMAND", "flex": "ON_DEMAND_FLEX", "priority": "ON_DEMAND_PRIORITY"}
# The request being answered and its tier. aiohttp runs each request in its own task, so the response hook
# sees the value its own handler set; the request is kept alongside so a later request on the same
# connection never reads an earlier one's tier.
_SERVED: contextvars.ContextVar[tuple[web.BaseRequest, str] | None] = contextvars.ContextVar("served", default=None)


@dataclass(frozen=True, slots=True)
class TierConfig:
    """How the fake treats the Flex tier and reports tiers."""

    flex_latency_ms: float = 0.0
    flex_fail_rate: float = 0.0
    flex_fail_weights: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(FLEX_FAULTS, 1.0))
    )
    header: bool = True
    usage_traffic_type: bool = False

    def __post_init__(self) -> None:
        if not (self.flex_latency_ms >= 0 and math.isfinite(self.flex_latency_ms)):
            raise ValueError(f"flex_latency_ms must be finite and >= 0, got {self.flex_latency_ms}")
        if not 0 <= self.flex_fail_rate <= 1:
            raise ValueError(f"flex_fail_rate must be in [0, 1], got {self.flex_fail_rate}")
        weights = dict(self.flex_fail_weights)
        unknown = sorted(set(weights) - set(FLEX_FAULTS))
        if unknown or any(not (w >= 0 and math.isfinite(w)) for w in weights.values()) or not any(weights.values()):
            raise ValueError(f"flex_fail_weights: 503 and 429 weights, finite, >= 0, not all 0; got {weights}")
        object.__setattr__(self, "flex_fail_weights", MappingProxyType(weights))


@dataclass(frozen=True, slots=True)
class TierStats:
    """Generate requests per tier: received, shed (Flex, by status) and answered 200."""

    requests: Mapping[str, int] = field(default_factory=dict)
    shed: Mapping[str, int] = field(default_factory=dict)
    answered: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "shed": dict(self.shed), "answered": dict(self.answered)}


class TierLedger:
    """Live per-tier counters, updated by `Tiers`."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.shed: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"<TierLedger requests={dict(self.requests)} shed={sum(self.shed.values())}>"

    def snapshot(self) -> TierStats:
        return TierStats(dict(self.requests), dict(self.shed), dict(self.answered))


def service_tier(payload: Mapping[str, Any]) -> str:
    """The tier a generateContent body asks for; raises 400 for a value the API does not know."""
    value = payload.get("serviceTier", payload.get("service_tier"))
    if value is None:
        return "standard"
    tier = value.lower() if isinstance(value, str) else value
    if tier == "unspecified":
        return "standard"
    if tier not in TIERS:
        raise errors.bad_enum("service_tier", "ServiceTier", value)
    return str(tier)


class Tiers:
    """Admits generate requests by tier and reports the tier on their answers."""

    def __init__(self, config: TierConfig, ledger: TierLedger, *, seed: int, retry_delay_s: float) -> None:
        self._config = config
        self._ledger = ledger
        self._retry_delay_s = retry_delay_s
        self._draws = random.Random(seed ^ 0xF1E7)

    def __repr__(self) -> str:
        return f"<Tiers flex_fail_rate={self._config.flex_fail_rate} {self._ledger!r}>"

    def install(self, app: web.Application) -> None:
        app.on_response_prepare.append(self._report)

    async def admit(self, request: web.BaseRequest, payload: Mapping[str, Any]) -> None:
        """Note the request's tier; a flex request waits its extra latency, or is shed (raises RpcError)."""
        tier = service_tier(payload)
        _SERVED.set((request, tier))
        self._ledger.requests[tier] += 1
        if tier != "flex":
            return
        shed = self._shed()
        if shed is not None:
            self._ledger.shed[str(shed.http_status)] += 1
            raise shed
        if self._config.flex_latency_ms:
            await asyncio.sleep(self._config.flex_latency_ms / 1000.0)

    def label(self, request: web.BaseRequest, answer: dict[str, Any]) -> dict[str, Any]:
        """`answer` (a GenerateContentResponse) with usageMetadata.serviceTier, and trafficType when configured."""
        tier = _served(request)
        usage = answer.get("usageMetadata")
        if tier is not None and usage is not None:
            usage["serviceTier"] = tier
            if self._config.usage_traffic_type:
                usage["trafficType"] = TRAFFIC_TYPES[tier]
        return answer

    def _shed(self) -> errors.RpcError | None:
        config = self._config
        if not config.flex_fail_rate or self._draws.random() >= config.flex_fail_rate:
            return None
        names = list(config.flex_fail_weights)
        fault = self._draws.choices(names, weights=[config.flex_fail_weights[n] for n in names])[0]
        return errors.unavailable() if fault == "503" else errors.shared_capacity(self._retry_delay_s)

    async def _report(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        tier = _served(request)
        if tier is None or response.status != 200:
            return
        self._ledger.answered[tier] += 1
        if self._config.header:
            response.headers[HEADER] = tier


def _served(request: web.BaseRequest) -> str | None:
    served = _SERVED.get()
    return served[1] if served is not None and served[0] is request else None
