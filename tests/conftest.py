"""Shared fixtures: anyio on asyncio, a clean environment, and helpers to build replies."""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from batchgen.fakeserver import FakeServer, ServerConfig

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules marked `slow` (they wait on servers, subprocesses and rate windows in real time) go first:
    pytest-xdist hands modules out in this order, so the long ones start at once rather than end the run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server_config() -> ServerConfig:
    """The local server's settings for the `server` fixture; a module overrides this fixture to change them."""
    return ServerConfig(api_key="test-key")


@pytest.fixture
async def server(server_config: ServerConfig) -> AsyncIterator[FakeServer]:
    """The local Gemini server, in this process, on a free loopback port."""
    async with FakeServer(server_config) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session, for tests that speak to the local server directly."""
    async with aiohttp.ClientSession() as client:
        yield client


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove any real API key and proxy setting from the environment (for the test, or a module fixture)."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test may see a real API key or go through a proxy."""
    clean_environment(monkeypatch)
    yield


def response(
    text: str | None = "hello",
    *,
    finish: str | None = "STOP",
    usage: dict[str, int] | None = None,
    thought: str | None = None,
    block: str | None = None,
) -> dict[str, Any]:
    """A GenerateContentResponse as the API sends it."""
    body: dict[str, Any] = {
        "usageMetadata": usage or {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp-1",
    }
    if block:
        body["promptFeedback"] = {"blockReason": block}
        return body
    parts: list[dict[str, Any]] = []
    if thought is not None:
        parts.append({"text": thought, "thought": True})
    if text is not None:
        parts.append({"text": text})
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body["candidates"] = [candidate]
    return body


def job_copy(folder: Path, source: Path, **limits: Any) -> Path:
    """`source` (a job file of the repo) copied into `folder`, its `../` paths made absolute and the given
    `[limits]` keys set, replaced or added."""
    text = re.sub(r'"\.\./', f'"{ROOT}/', source.read_text())
    for key, value in limits.items():
        entry = f"{key} = {json.dumps(value)}"
        text, found = re.subn(rf"(?m)^{key} = .*$", entry, text)
        if not found:
            text = text.replace("[limits]\n", f"[limits]\n{entry}\n", 1)
    copy = folder / source.name
    copy.write_text(text)
    return copy


def demo_tree(folder: Path, edits: Mapping[str, str] | None = None, reviews: bytes | None = None) -> Path:
    """The demo job with its schema and input under `folder` (jobs/, schemas/, data/: its relative paths
    intact), each key of `edits` replaced by its value in the job file; `reviews` stands in for the input."""
    for name in ("jobs", "data", "schemas"):
        (folder / name).mkdir(exist_ok=True)
    (folder / "schemas" / "sentiment.json").write_bytes((ROOT / "schemas" / "sentiment.json").read_bytes())
    data = reviews if reviews is not None else (ROOT / "data" / "reviews.jsonl").read_bytes()
    (folder / "data" / "reviews.jsonl").write_bytes(data)
    text = (ROOT / "jobs" / "demo.toml").read_text()
    for old, new in (edits or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    job = folder / "jobs" / "demo.toml"
    job.write_text(text)
    return job


def closed_port() -> str:
    """The URL of a loopback port nothing listens on (bound, then released): every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


RAY_KEY_ENV = "BATCHGEN_RAY_TEST_KEY"
RAY_KEY = "ray-test-key-7f3a"


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """One local Ray instance for the whole session (starting one costs seconds and a few hundred MB), with two
    CPUs and a small object store; yields the address a second driver joins it at.

    Its workers get `RAY_KEY_ENV` from the environment the instance starts in, as a cluster's workers get a key
    from theirs (docs/scale-out.md).
    """
    import ray

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(RAY_KEY_ENV, RAY_KEY)
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024**2, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
