"""A minimal Gemini stand-in: every generateContent POST gets the same valid answer, after an optional delay.

The local server (`batchgen.fakeserver`) is a full implementation and costs about half a millisecond of CPU per
request, so on a small machine it, not the client, sets the pace. This one does nothing but read the body
and write a fixed response (the kind of server the issue's scale figures were measured against), which
leaves the client as the bottleneck: the figure that shows what batchgen's own overhead is.

    python -m benchmarks.fixed_server PORT LATENCY_MS     # prints its URL, serves until SIGTERM
"""

from __future__ import annotations

import asyncio
import signal
import sys

import orjson
from aiohttp import web

from benchmarks.workload import run_loop

# A JSON-mode answer that conforms to the workload's schema, with usageMetadata like the API's.
BODY = orjson.dumps(
    {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": '{"sentiment":"positive","confidence":0.92,"aspects":["battery","price"]}'}],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 112, "candidatesTokenCount": 21, "totalTokenCount": 133},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "fixed-response",
    }
)


def application(latency_s: float) -> web.Application:
    served = [0]

    async def generate(request: web.Request) -> web.Response:
        await request.read()
        served[0] += 1
        if latency_s:
            await asyncio.sleep(latency_s)
        return web.Response(body=BODY, content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        # The one figure the benchmark reads from the local server's ledger, at the same path.
        return web.json_response({"requests": served[0]})

    app = web.Application()
    app.router.add_post("/v1beta/models/{call}", generate)
    app.router.add_get("/_fake/stats", stats)
    return app


async def serve(port: int, latency_s: float) -> None:
    runner = web.AppRunner(application(latency_s), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = next(a for a in runner.addresses if isinstance(a, tuple))[1]
    print(f"http://127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    run_loop(serve(int(sys.argv[1]), float(sys.argv[2]) / 1000))
