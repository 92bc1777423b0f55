"""Servers for tests that run the real CLI: the local Gemini server in its own process, and a capture server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web


@contextmanager
def server_process(*flags: str) -> Iterator[str]:
    """Start `batchgen fake-server --port 0 FLAGS...`; yield its URL; stop it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "batchgen.fakeserver", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("http"):
            raise RuntimeError(f"fake server did not start: {line!r} {process.stderr.read() if process.stderr else ''}")
        yield line
    finally:
        process.terminate()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def server_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_fake/stats", timeout=10) as answer:
        stats: dict[str, Any] = orjson.loads(answer.read())
    return stats


@dataclass(frozen=True)
class Captured:
    """One request as it arrived: the method path (`models/M:generateContent`), query and decoded JSON body."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


CAPTURE_REPLY: dict[str, Any] = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "captured"}]}, "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 1, "totalTokenCount": 8},
    "modelVersion": "capture-1",
    "responseId": "capture-response",
}


class CaptureServer:
    """A loopback server, in a thread of its own, that records every request and answers it validly.

    For tests that check what goes on the wire: it serves `generateContent`, `streamGenerateContent` (one SSE
    event) and `countTokens`, so both an async test and the synchronous CLI can send to it. Use as a context
    manager; `url` is its base URL and `requests` what it received, in order.
    """

    def __init__(self, reply: dict[str, Any] | None = None) -> None:
        self.reply = CAPTURE_REPLY if reply is None else reply
        self.requests: list[Captured] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("capture server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
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
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        path = request.match_info["path"]
        self.requests.append(Captured(path, dict(request.query), dict(request.headers), body))
        if path.endswith(":countTokens"):
            return web.json_response({"totalTokens": 7})
        if path.endswith(":streamGenerateContent"):
            stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await stream.prepare(request)
            await stream.write(b"data: " + orjson.dumps(self.reply) + b"\r\n\r\n")
            await stream.write_eof()
            return stream
        return web.Response(body=orjson.dumps(self.reply), content_type="application/json")
