"""Child processes for the benchmarks: the local server in its own process, and contenders measured one by one.

Each contender runs in a process of its own, so its CPU time and peak RSS are its own (`os.wait4` gives the
rusage of exactly that child). The server's CPU time is read from /proc before and after each contender.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.workload import ROOT

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Usage:
    """What one child process cost: wall seconds, CPU seconds (user + system), peak RSS in MB."""

    wall_s: float
    cpu_s: float
    user_s: float
    system_s: float
    max_rss_mb: float
    exit_code: int
    stdout: str
    stderr: str


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Byte-code caching as on a normal install: a sandbox that turns it off would make every child compile
    # its sources at start-up, which is not what a user's run pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def pin(cpus: set[int] | None) -> Any:
    """A preexec_fn restricting the child to `cpus` (None: no restriction)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def measure(argv: Sequence[str], *, cpus: set[int] | None = None, env: dict[str, str] | None = None) -> Usage:
    """Run `argv` to completion; its wall time, CPU time and peak RSS, from its own rusage."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(argv), stdout=out, stderr=err, cwd=ROOT, env=env or child_env(), preexec_fn=pin(cpus)
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
        out.seek(0)
        err.seek(0)
        return Usage(
            wall_s=wall,
            cpu_s=usage.ru_utime + usage.ru_stime,
            user_s=usage.ru_utime,
            system_s=usage.ru_stime,
            max_rss_mb=usage.ru_maxrss / 1024,
            exit_code=process.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace")[-4000:],
        )


@dataclass(frozen=True, slots=True)
class Server:
    """The local Gemini server running in a child process."""

    url: str
    pid: int

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_fake/stats", timeout=30) as answer:
            stats: dict[str, Any] = orjson.loads(answer.read())
        return stats


SERVERS = ("fake", "fixed")


@contextmanager
def server(
    latency_ms: float, *, kind: str = "fake", cpus: set[int] | None = None, flags: Sequence[str] = ()
) -> Iterator[Server]:
    """A server in its own process for the block's duration: `fake` is batchgen's local Gemini server
    (`python -m batchgen.fakeserver --latency-ms N`, then `flags`), `fixed` the minimal one in
    benchmarks/fixed_server.py."""
    if kind == "fake":
        argv = [sys.executable, "-m", "batchgen.fakeserver", "--port", "0", "--latency-ms", str(latency_ms), *flags]
    else:
        argv = [sys.executable, "-m", "benchmarks.fixed_server", "0", str(latency_ms)]
    # stderr goes to a file: an undrained pipe would fill up and stall the server mid-run.
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=errors, text=True, cwd=ROOT, env=child_env(), preexec_fn=pin(cpus)
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            if not line.startswith("http"):
                errors.seek(0)
                raise RuntimeError(f"local server did not start: {line!r} {errors.read().decode()}")
            yield Server(url=line, pid=process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()
