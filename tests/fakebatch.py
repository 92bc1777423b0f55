"""Helpers for tests of the fake server's Files and Batch APIs: plain aiohttp calls in Google's wire format."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import orjson

KEY = "batch-key"
MODEL = "gemini-2.5-flash"
TERMINAL = {"BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"}


def request(text: str, **extra: Any) -> dict[str, Any]:
    """A GenerateContentRequest with one user text."""
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def jsonl(lines: Iterable[Mapping[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    payload: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """One JSON call with the test key; returns (status, parsed body or None when empty)."""
    data = None if payload is None else orjson.dumps(payload)
    sent = {"x-goog-api-key": KEY, "Content-Type": "application/json"} if headers is None else dict(headers)
    async with session.request(method, url, data=data, headers=sent) as response:
        body = await response.read()
        return response.status, orjson.loads(body) if body else None


async def start_upload(
    session: aiohttp.ClientSession, base: str, size: int | None, metadata: Mapping[str, Any] | None = None
) -> str:
    """Start a resumable upload; returns the session URL."""
    headers = {
        "x-goog-api-key": KEY,
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "Content-Type": "application/json",
    }
    if size is not None:
        headers["X-Goog-Upload-Header-Content-Length"] = str(size)
    body = {"file": dict(metadata or {"displayName": "input", "mimeType": "application/jsonl"})}
    async with session.post(f"{base}/upload/v1beta/files", data=orjson.dumps(body), headers=headers) as response:
        assert response.status == 200, await response.text()
        return response.headers["X-Goog-Upload-URL"]


async def send_chunk(
    session: aiohttp.ClientSession, url: str, data: bytes, offset: int, command: str = "upload, finalize"
) -> aiohttp.ClientResponse:
    """One session request; the response is read before it is returned."""
    headers = {"X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(offset)}
    async with session.post(url, data=data, headers=headers) as response:
        await response.read()
        return response


async def upload(session: aiohttp.ClientSession, base: str, data: bytes, **metadata: Any) -> dict[str, Any]:
    """Upload `data` in one finalizing request; returns the File."""
    url = await start_upload(session, base, len(data), metadata or None)
    async with session.post(
        url, data=data, headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"}
    ) as response:
        assert response.status == 200, await response.text()
        assert response.headers["X-Goog-Upload-Status"] == "final"
        file: dict[str, Any] = (await response.json())["file"]
        return file


async def create(
    session: aiohttp.ClientSession, base: str, input_config: Mapping[str, Any], name: str = "job", **batch: Any
) -> tuple[int, Any]:
    payload = {"batch": {"displayName": name, "inputConfig": dict(input_config), **batch}}
    return await call(session, "POST", f"{base}/v1beta/models/{MODEL}:batchGenerateContent", payload)


async def create_from_lines(
    session: aiohttp.ClientSession, base: str, lines: Iterable[Mapping[str, Any]], name: str = "job"
) -> dict[str, Any]:
    """Upload `lines` as JSONL and create a job from the file; returns its operation."""
    file = await upload(session, base, jsonl(lines))
    status, operation = await create(session, base, {"fileName": file["name"]}, name)
    assert status == 200, operation
    return dict(operation)


async def wait_done(session: aiohttp.ClientSession, base: str, name: str) -> dict[str, Any]:
    """Poll a job until its operation is done (a few seconds at most)."""
    async with asyncio.timeout(5):
        while True:
            status, operation = await call(session, "GET", f"{base}/v1beta/{name}")
            assert status == 200, operation
            if operation.get("done"):
                return dict(operation)
            await asyncio.sleep(0.02)


async def download(session: aiohttp.ClientSession, base: str, name: str) -> bytes:
    async with session.get(f"{base}/download/v1beta/{name}:download?alt=media", headers={"x-goog-api-key": KEY}) as r:
        assert r.status == 200, await r.text()
        return await r.read()


async def results(session: aiohttp.ClientSession, base: str, operation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The lines of a finished job's results file."""
    data = await download(session, base, operation["response"]["responsesFile"])
    return [orjson.loads(line) for line in data.splitlines()]


async def stats(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(f"{base}/_fake/stats") as response:
        body: dict[str, Any] = await response.json()
        return body
