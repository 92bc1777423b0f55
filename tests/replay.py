"""A replay server: answers batchgen's requests with real recorded Gemini responses, over loopback HTTP.

Not the local Gemini server (which composes answers of its own): this one only plays back `tests/recorded`.
The recording a request gets is named by its prompt: a row whose prompt is `gemini-2.5/stream-file-search.json`
is answered with that file. A recorded error is answered with its HTTP status and body (a JSON array when it
was recorded as one); a stream with its SSE text byte for byte when the recording kept it (`raw_sse`: CRLF
framing, a space after `data:`), else one `data: <event>\\n\\n` per event, as the API frames them; a unary
response with its body.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from types import TracebackType

import orjson
from aiohttp import web
from recorded_fixtures import Recording


class ReplayServer:
    """An aiohttp server on a free loopback port, for as long as an `async with` block lasts.

    `seen` counts the requests each recording was asked for, as they arrive (whatever the client then does).
    """

    def __init__(self, recordings: Mapping[str, Recording]) -> None:
        self.recordings = recordings
        self.seen: Counter[str] = Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> ReplayServer:
        app = web.Application()
        app.router.add_post("/v1beta/models/{call}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        payload = orjson.loads(await request.read())
        name = payload["contents"][-1]["parts"][-1]["text"]
        self.seen[name] += 1
        recording = self.recordings.get(name)
        if recording is None:
            error = {"error": {"code": 400, "message": f"no recording named {name!r}", "status": "INVALID_ARGUMENT"}}
            return web.Response(status=400, body=orjson.dumps(error), content_type=_JSON)
        if recording.kind == "error":
            return web.Response(status=recording.http_status, body=orjson.dumps(recording.body), content_type=_JSON)
        if not request.match_info["call"].endswith(":streamGenerateContent"):
            assert recording.kind == "unary", f"{name} is a {recording.kind}, asked for unary"
            return web.Response(body=orjson.dumps(recording.body), content_type=_JSON)
        assert recording.kind == "stream" and request.query.get("alt") == "sse", name
        if recording.raw_sse is not None:
            sse = recording.raw_sse.encode()
        else:
            sse = b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in recording.events)
        return web.Response(body=sse, content_type="text/event-stream")


_JSON = "application/json"
