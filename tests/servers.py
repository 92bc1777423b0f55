"""Servers for tests that run the real CLI: the local Gemini server in its own process, and a capture server."""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import orjson
from aiohttp import web

# Server processes are forked from a process that has imported batchgen once: a start costs a fork, where a
# fresh interpreter spends over a second importing batchgen (pyarrow, aiohttp...) before it listens. Each
# server is still a process of its own, with its own GIL and event loop, so a test's client and server never
# compete inside one interpreter.
_FORKS = multiprocessing.get_context("forkserver")
_FORKS.set_forkserver_preload(["batchgen.fakeserver.cli"])


@contextmanager
def server_process(*flags: str) -> Iterator[str]:
    """Run the local Gemini server's command line (`python -m batchgen.fakeserver --port 0 FLAGS...`) in a
    process of its own; yield its URL; stop it with SIGTERM, as a user's Ctrl-C would."""
    receiver, sender = _FORKS.Pipe(duplex=False)
    process = _FORKS.Process(target=_serve, args=(["--port", "0", *flags], sender), daemon=True)
    process.start()
    sender.close()
    try:
        line = _first_line(receiver, process)
        if not line.startswith("http"):
            raise RuntimeError(f"fake server did not start: {line}")
        yield line
    finally:
        process.terminate()
        process.join(10)
        receiver.close()


def _first_line(receiver: Connection, process: multiprocessing.process.BaseProcess) -> str:
    if not receiver.poll(30):
        return "no URL within 30 s"
    try:
        line: str = receiver.recv()
    except EOFError:
        process.join(10)
        return f"the process ended with exit code {process.exitcode}"
    return line


def _serve(argv: list[str], channel: Connection) -> None:
    """The server process: the command line's `main`, its first line of stdout (the URL) sent back on
    `channel`, or what it wrote on stderr if it stopped before printing one."""
    from batchgen.fakeserver.cli import main

    # stderr is kept in memory, not sent: a pipe nobody reads once the server is up would fill and stall it.
    errors = io.StringIO()
    sys.stderr = errors
    sys.stdout = _FirstLine(channel)
    try:
        code = main(argv)
    finally:
        if not channel.closed:
            channel.send(errors.getvalue() or "no URL printed")
            channel.close()
    raise SystemExit(code)


class _FirstLine(io.TextIOBase):
    """A stdout that sends its first complete line on `channel`, then closes it and drops what follows."""

    def __init__(self, channel: Connection) -> None:
        self._channel = channel
        self._line = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not self._channel.closed:
            self._line += text
            if "\n" in self._line:
                self._channel.send(self._line.split("\n", 1)[0].strip())
                self._channel.close()
        return len(text)


def server_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_fake/stats", timeout=10) as answer:
        stats: dict[str, Any] = orjson.loads(answer.read())
    return stats


@dataclass(frozen=True)
class Captured:
    """One exchange: the method path (`v1beta/models/M:generateContent`), query, headers, the body as sent
    (`raw`) and decoded, and what was answered (status and bytes)."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    body: Any
    status: int
    response: bytes


CAPTURE_REPLY: dict[str, Any] = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "captured"}]}, "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 1, "totalTokenCount": 8},
    "modelVersion": "capture-1",
    "responseId": "capture-response",
}


class CaptureServer:
    """A loopback server, in a thread of its own, that records every exchange.

    For tests that check what goes on the wire. Without `upstream` it answers by itself, validly:
    `generateContent` with `reply`, `streamGenerateContent` with one SSE event, `countTokens` with a count. With
    `upstream` (a base URL) it is a recording proxy: each request is forwarded as is and the upstream's answer
    returned unchanged. Being threaded, it serves an async test and the synchronous CLI alike. Use as a context
    manager; `url` is its base URL and `requests` what it saw, in order.
    """

    def __init__(
        self, reply: dict[str, Any] | None = None, *, upstream: str | None = None, sse: bytes | None = None
    ) -> None:
        self.reply = CAPTURE_REPLY if reply is None else reply
        self.upstream = upstream
        # A raw SSE body to answer streams with, written a few bytes at a time (framing tests).
        self.sse = sse
        self.requests: list[Captured] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("capture server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None and self._session is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def bodies(self, method: str = "generateContent") -> list[Any]:
        """The JSON bodies of the requests to `method`, in arrival order."""
        return [c.body for c in self.requests if c.path.endswith(f":{method}")]

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._session = self._loop.run_until_complete(_new_session())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        path = request.match_info["path"]
        if self.upstream is not None:
            status, answer, content_type = await self._forward(request, path, raw)
        elif path.endswith(":countTokens"):
            status, answer, content_type = 200, b'{"totalTokens":7}', "application/json"
        elif path.endswith(":streamGenerateContent"):
            if self.sse is not None:
                return await self._trickle(request, path, raw, self.sse)
            status, answer, content_type = 200, b"data: " + orjson.dumps(self.reply) + b"\r\n\r\n", "text/event-stream"
        else:
            status, answer, content_type = 200, orjson.dumps(self.reply), "application/json"
        headers = dict(request.headers)
        self.requests.append(Captured(path, dict(request.query), headers, raw, orjson.loads(raw), status, answer))
        return web.Response(status=status, body=answer, content_type=content_type)

    async def _trickle(self, request: web.Request, path: str, raw: bytes, body: bytes) -> web.StreamResponse:
        self.requests.append(
            Captured(path, dict(request.query), dict(request.headers), raw, orjson.loads(raw), 200, body)
        )
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        for start in range(0, len(body), 5):
            await stream.write(body[start : start + 5])
        await stream.write_eof()
        return stream

    async def _forward(self, request: web.Request, path: str, raw: bytes) -> tuple[int, bytes, str]:
        assert self._session is not None and self.upstream is not None
        passed = ("Content-Type", "x-goog-api-key", "Authorization")
        headers = {name: request.headers[name] for name in passed if name in request.headers}
        url = f"{self.upstream.rstrip('/')}/{path}"
        async with self._session.post(url, params=request.query, data=raw, headers=headers) as answer:
            return answer.status, await answer.read(), answer.content_type


async def _new_session() -> aiohttp.ClientSession:
    # Created inside the server's loop, which it must belong to.
    return aiohttp.ClientSession()
