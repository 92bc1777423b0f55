"""A local Gemini server in its own process, for tests that run the real CLI (in-process or as a subprocess)."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson


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
