"""The HTTP routes of the fake Gemini API and the pipeline a request goes through.

    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:streamGenerateContent[?alt=sse]
    POST /v1beta/models/{model}:countTokens
    GET  /_fake/stats
    and the Files and Batch APIs' routes (`batch.api`)

A generate request is checked in the API's order (method, key, model, body), then its service tier is noted
(a Flex request may wait or be shed, see `tiers`), then it is admitted by the quotas, given its fault (if
any), delayed by the configured latency, and answered. Every step updates the ledger.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import random
from typing import Any

import orjson
from aiohttp import web

from batchgen.fakeserver import errors
from batchgen.fakeserver.batch.api import BatchApis
from batchgen.fakeserver.config import OUTPUT_FAULTS, ServerConfig
from batchgen.fakeserver.content import answer_rng, compose
from batchgen.fakeserver.faults import FaultPlanner, request_key
from batchgen.fakeserver.quota import Quotas
from batchgen.fakeserver.request import GenerateRequest, count_tokens, load_body, parse_generate
from batchgen.fakeserver.response import no_candidates_body, stream_events, unary_body
from batchgen.fakeserver.schema import SchemaCache
from batchgen.fakeserver.stats import Ledger
from batchgen.fakeserver.tiers import Tiers
from batchgen.fakeserver.tokens import Usage
from batchgen.fakeserver.wire import StreamWriter, hang_up, send_body, send_cut_body

_METHODS = frozenset({"generateContent", "streamGenerateContent", "countTokens"})
# Gemini accepts requests up to 20 MB; leave room for base64 overhead.
_MAX_BODY = 32 * 1024 * 1024
_NON_JSON = b"<html><head><title>502 Bad Gateway</title></head><body>upstream connect error</body></html>"
# Default limit quoted in a 429day fault when no rpd is configured (the free-tier figure in real 429s).
_DEFAULT_RPD = 250


class FakeGemini:
    """The routes and the state they share: ledger, quotas, fault planner and schema cache."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.ledger = Ledger()
        self.quotas = Quotas(config)
        self.faults = FaultPlanner(config)
        self.schemas = SchemaCache()
        self.tiers = Tiers(config.tiers, self.ledger.tiers, seed=config.seed, retry_delay_s=config.retry_delay_s)
        self.batch = BatchApis(config, self.ledger, self.faults, self.schemas, self._authenticate, self._serves)
        self._latency = random.Random(config.seed)
        self._track_attempts = bool(config.fail_rate or config.violate_rate)

    def __repr__(self) -> str:
        return f"<FakeGemini {self.ledger!r} {self.quotas!r}>"

    def application(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        # First: the model route below would take models/{model}:batchGenerateContent too.
        self.batch.install(app)
        self.tiers.install(app)
        app.router.add_post("/v1beta/models/{call}", self.model_call)
        app.router.add_get("/_fake/stats", self.stats)
        return app

    async def stats(self, request: web.Request) -> web.Response:
        body = orjson.dumps(self.ledger.snapshot().to_json())
        return web.Response(body=body, content_type="application/json")

    async def model_call(self, request: web.Request) -> web.StreamResponse:
        ledger = self.ledger
        ledger.requests += 1
        model, _, method = request.match_info["call"].rpartition(":")
        ledger.by_method[method if method in _METHODS else "other"] += 1
        try:
            return await self._dispatch(request, model, method)
        except errors.RpcError as error:
            return await self._send(request, error.http_status, error.body())
        except asyncio.CancelledError:
            # The client hung up (aiohttp cancels the handler): nothing more is sent or billed.
            ledger.disconnects += 1
            raise

    async def _dispatch(self, request: web.Request, model: str, method: str) -> web.StreamResponse:
        if method not in _METHODS or not model:
            raise errors.method_not_found(request.path)
        self._authenticate(request)
        if not self._serves(model):
            raise errors.model_not_found(model, method)
        body = await request.read()
        payload = load_body(body)
        if method == "countTokens":
            return await self._send(request, 200, orjson.dumps(count_tokens(model, payload, self.schemas)))
        parsed = parse_generate(model, payload, self.schemas)
        await self.tiers.admit(request, payload)
        return await self._generate(request, parsed, body, stream=method == "streamGenerateContent")

    def _authenticate(self, request: web.Request) -> None:
        key = request.headers.get("x-goog-api-key")
        if not key:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        key = key or request.query.get("key")
        if not key:
            raise errors.permission_denied()
        if not hmac.compare_digest(key.encode(), self.config.api_key.encode()):
            raise errors.api_key_invalid()

    def _serves(self, model: str) -> bool:
        return model in self.config.models if self.config.models else model.startswith("gemini-")

    async def _send(
        self, request: web.Request, status: int, body: bytes, content_type: str = "application/json"
    ) -> web.Response:
        return (await self._write(request, status, body, content_type))[0]

    async def _write(
        self, request: web.Request, status: int, body: bytes, content_type: str = "application/json"
    ) -> tuple[web.Response, bool]:
        self.ledger.by_status[status] += 1
        response, sent = await send_body(request, status, body, content_type)
        if not sent:
            self.ledger.disconnects += 1
        return response, sent

    async def _generate(
        self, request: web.Request, parsed: GenerateRequest, body: bytes, *, stream: bool
    ) -> web.StreamResponse:
        self._admit(parsed)
        key = request_key(parsed.model, body)
        fault = self._choose_fault(key, parsed, stream=stream)
        latency = self._draw_latency()
        stall = self.config.slow_s if fault == "slow" else 0.0
        # A stream spends half its latency before the first event and spreads the rest between events.
        await _sleep(stall + (latency / 2 if stream else latency))
        response_id = self._response_id(key)
        rng = answer_rng(self.config.seed, key)
        error = self._error_fault(fault, parsed.model, stream=stream)
        if error is not None:
            raise error
        broken = await self._broken_answer(request, parsed, fault, response_id, rng, stream=stream)
        if broken is not None:
            return broken
        outcome = compose(parsed, rng, fault if fault in OUTPUT_FAULTS else None)
        if stream:
            events = [self.tiers.label(request, e) for e in stream_events(outcome, parsed.model, response_id)]
            return await self._stream(request, events, outcome.usage, fault, latency / 2)
        answer = self.tiers.label(request, unary_body(outcome, parsed.model, response_id))
        response, sent = await self._write(request, 200, orjson.dumps(answer))
        if sent:
            self.ledger.bill(outcome.usage)
        return response

    def _admit(self, parsed: GenerateRequest) -> None:
        rejection = self.quotas.admit(parsed.model, parsed.prompt_tokens)
        if rejection is not None:
            self.ledger.quota_rejections[rejection.quota_id] += 1
            raise errors.quota_exceeded(rejection.quota_id, parsed.model, rejection.limit, rejection.retry_after)
        self.ledger.admit(parsed.prompt_tokens)

    def _choose_fault(self, key: int, parsed: GenerateRequest, *, stream: bool) -> str | None:
        # Attempts are only counted when something depends on them, so a plain benchmark keeps no state.
        if not (self._track_attempts or parsed.directives):
            return None
        attempt = self.faults.next_attempt(key)
        fault = self.faults.choose(key, attempt, parsed.directives, stream=stream, json_mode=parsed.json_mode)
        if fault is not None:
            self.ledger.faults[fault] += 1
        return fault

    def _error_fault(self, fault: str | None, model: str, *, stream: bool) -> errors.RpcError | None:
        """The error answer a fault calls for, if it is one."""
        if fault == "429":
            return errors.shared_capacity(self.config.retry_delay_s)
        if fault == "429help":
            return errors.shared_capacity(None)
        if fault == "429day":
            limit = self.config.rpd or _DEFAULT_RPD
            return errors.quota_exceeded(errors.RPD_QUOTA_ID, model, limit, self.quotas.until_next_day())
        if fault == "500" or (fault == "sse_error" and not stream):
            return errors.internal()
        if fault == "503":
            return errors.unavailable()
        return None

    async def _broken_answer(
        self,
        request: web.Request,
        parsed: GenerateRequest,
        fault: str | None,
        response_id: str,
        rng: random.Random,
        *,
        stream: bool,
    ) -> web.StreamResponse | None:
        """Answer with a transport fault that is not an error status; None when the request goes on."""
        if fault == "drop":
            return hang_up(request)
        if fault == "nonjson":
            return await self._send(request, 200, _NON_JSON, "text/html")
        if fault == "nocandidates":
            empty = no_candidates_body(parsed.model, response_id)
            if stream:
                return await self._stream(request, [empty], None, None, 0.0)
            return await self._send(request, 200, orjson.dumps(empty))
        if fault == "sse_cut" and not stream:
            self.ledger.by_status[200] += 1
            outcome = compose(parsed, rng, None)
            return await send_cut_body(request, orjson.dumps(unary_body(outcome, parsed.model, response_id)))
        return None

    async def _stream(
        self,
        request: web.Request,
        events: list[dict[str, Any]],
        usage: Usage | None,
        fault: str | None,
        spread: float,
    ) -> web.StreamResponse:
        """Write a stream; bill `usage` once if every event went out."""
        writer = StreamWriter(request, sse=request.query.get("alt") == "sse", pause=spread / len(events))
        self.ledger.by_status[200] += 1
        if fault in ("sse_cut", "sse_error"):
            await writer.write_broken(events, errors.unavailable() if fault == "sse_error" else None)
        elif not await writer.write_all(events):
            self.ledger.disconnects += 1
        elif usage is not None:
            self.ledger.bill(usage)
        return writer.response

    def _draw_latency(self) -> float:
        config = self.config
        if not config.latency_ms and not config.latency_jitter_ms:
            return 0.0
        return max(0.0, self._latency.gauss(config.latency_ms, config.latency_jitter_ms)) / 1000.0

    def _response_id(self, key: int) -> str:
        # Unique per response, like the API's: the request hash plus the request counter.
        raw = key.to_bytes(8, "little") + self.ledger.requests.to_bytes(8, "little")
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
