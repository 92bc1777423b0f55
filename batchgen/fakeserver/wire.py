"""Writing answers to the socket: whole bodies, streams (SSE or JSON array), and the broken variants.

Each writer reports whether the answer went out in full, so the ledger bills only what was sent. A client
that hangs up mid-write shows as a ConnectionError from aiohttp, which these functions absorb.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from batchgen.fakeserver.errors import RpcError

JSON = "application/json"
# Google frames SSE events with CRLF line ends, so an event ends with an empty CRLF line.
SSE_END = b"\r\n\r\n"
_ARRAY_SEPARATOR = b",\r\n"


async def send_body(
    request: web.Request, status: int, body: bytes, content_type: str = JSON
) -> tuple[web.Response, bool]:
    """Write a complete response now; the flag is False if the client was gone.

    The handler returns the written response: aiohttp then sees it prepared and finished, and adds nothing.
    """
    response = web.Response(status=status, body=body, content_type=content_type, charset="UTF-8")
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        return response, False
    return response, True


def hang_up(request: web.Request) -> web.Response:
    """Close the connection without answering; the returned response is never written."""
    if request.transport is not None:
        request.transport.close()
    return web.Response()


async def send_cut_body(request: web.Request, body: bytes) -> web.StreamResponse:
    """Promise the whole body in Content-Length, send half of it, then close the connection."""
    response = web.StreamResponse(status=200, headers={"Content-Type": f"{JSON}; charset=UTF-8"})
    response.content_length = len(body)
    try:
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
    except ConnectionError:
        return response
    hang_up(request)
    return response


def frame(event: dict[str, Any], sse: bool) -> bytes:
    """One stream event as written: `data: <json>` plus a blank CRLF line, or a bare JSON array element."""
    data = orjson.dumps(event)
    return b"data: " + data + SSE_END if sse else data


class StreamWriter:
    """Writes one streamGenerateContent answer, optionally breaking it at a chosen event."""

    def __init__(self, request: web.Request, *, sse: bool, pause: float) -> None:
        self._request = request
        self._sse = sse
        self._pause = pause
        self._response = web.StreamResponse(status=200)
        self._response.content_type = "text/event-stream" if sse else JSON
        self._written = 0

    @property
    def response(self) -> web.StreamResponse:
        return self._response

    async def write_all(self, events: Sequence[dict[str, Any]]) -> bool:
        """Send every event and end the stream; False if the client was gone."""
        try:
            await self._start()
            for event in events:
                await self._event(frame(event, self._sse))
            await self._finish()
        except ConnectionError:
            return False
        return True

    async def write_broken(self, events: Sequence[dict[str, Any]], error: RpcError | None) -> None:
        """Send the first half of the events, then either half an event and a hang-up (`error` None) or an
        `{"error": ...}` object that is not `data:`-prefixed, the way the API reports a mid-stream failure."""
        cut_at = len(events) // 2
        try:
            await self._start()
            for event in events[:cut_at]:
                await self._event(frame(event, self._sse))
            if error is None:
                partial = frame(events[cut_at], self._sse)
                await self._event(partial[: len(partial) // 2])
                hang_up(self._request)
                return
            # Google pretty-prints the error object over several lines; clients must gather it by braces.
            await self._event(error.body() + (b"\r\n" if self._sse else b""))
            await self._finish()
        except ConnectionError:
            return

    async def _start(self) -> None:
        await self._response.prepare(self._request)
        if not self._sse:
            await self._response.write(b"[")

    async def _event(self, data: bytes) -> None:
        if self._written and self._pause:
            await asyncio.sleep(self._pause)
        if self._written and not self._sse:
            data = _ARRAY_SEPARATOR + data
        self._written += 1
        await self._response.write(data)

    async def _finish(self) -> None:
        if not self._sse:
            await self._response.write(b"]")
        await self._response.write_eof()
