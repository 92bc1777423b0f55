"""How the Files and Batch routes answer: JSON bodies, google.rpc errors, and the server ledger's counts.

Each route is wrapped by `Routes.counted`, which counts the request under its method name (as the model
routes count `generateContent`) and the answer by status, and renders an `RpcError` the way the model routes
do, so every endpoint of the fake fails in the same shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from batchgen.fakeserver.errors import RpcError
from batchgen.fakeserver.request import load_body
from batchgen.fakeserver.stats import Ledger

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Authenticate = Callable[[web.Request], None]
_READ_CHUNK = 256 * 1024


def json_response(payload: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=200, body=orjson.dumps(payload), content_type="application/json", charset="UTF-8", headers=headers
    )


def error_response(error: RpcError, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=error.http_status, body=error.body(), content_type="application/json", charset="UTF-8", headers=headers
    )


def origin(request: web.Request) -> str:
    """The scheme and host the client used, for URIs in answers (`uri`, `downloadUri`, the upload URL)."""
    return str(request.url.origin())


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The request body, or its first `limit` bytes when it is longer (the rest is left unread)."""
    data = bytearray()
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        data += chunk
        if len(data) >= limit:
            return bytes(data[:limit])
    return bytes(data)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The JSON object in a request body (an empty body is an empty object), or 400 as the API answers."""
    return load_body(await request.read())


class Routes:
    """Route wrappers bound to the server's ledger and its key check."""

    def __init__(self, ledger: Ledger, authenticate: Authenticate) -> None:
        self._ledger = ledger
        self.authenticate = authenticate

    def counted(self, method: str, handler: Handler, *, auth: bool = True) -> Handler:
        """`handler` with the key checked first (unless `auth` is False), counted, and errors rendered."""

        async def handle(request: web.Request) -> web.StreamResponse:
            ledger = self._ledger
            ledger.requests += 1
            ledger.by_method[method] += 1
            try:
                if auth:
                    self.authenticate(request)
                response = await handler(request)
            except RpcError as error:
                response = error_response(error)
            ledger.by_status[response.status] += 1
            return response

        return handle
