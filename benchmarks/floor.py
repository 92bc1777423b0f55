"""Contender `floor`: the least a client can do. A bare aiohttp loop, no parsing, no writing.

N workers share one session and one iterator of pre-built request bodies; each posts, reads the answer and
counts its status. What it reaches is the physical limit of this machine and server, the figure the others
are compared with.

    python -m benchmarks.floor URL INPUT.jsonl CONCURRENCY      # prints {"rows": ..., "ok": ...} as JSON
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson

from benchmarks.workload import API_KEY, MODEL, NON_STR, read_reviews, request_body, run_loop


async def _worker(session: aiohttp.ClientSession, url: str, bodies: Iterator[bytes], counts: dict[int, int]) -> None:
    for body in bodies:
        async with session.post(url, data=body) as response:
            await response.read()
            counts[response.status] = counts.get(response.status, 0) + 1


async def run(url: str, bodies: list[bytes], concurrency: int) -> dict[int, int]:
    endpoint = f"{url}/v1beta/models/{MODEL}:generateContent"
    headers = {"x-goog-api-key": API_KEY, "Content-Type": "application/json"}
    counts: dict[int, int] = {}
    shared = iter(bodies)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        await asyncio.gather(*(_worker(session, endpoint, shared, counts) for _ in range(concurrency)))
    return counts


def main(argv: list[str]) -> None:
    url, input_path, concurrency = argv[0], Path(argv[1]), int(argv[2])
    bodies = [request_body(review) for _, review in read_reviews(input_path)]
    counts = run_loop(run(url, bodies, concurrency))
    print(orjson.dumps({"rows": len(bodies), "ok": counts.get(200, 0), "statuses": counts}, option=NON_STR).decode())


if __name__ == "__main__":
    main(sys.argv[1:])
