"""Where `batchgen run` spends its CPU: the real CLI sampled with py-spy, samples summed by area.

The run goes against the fixed-answer server (benchmarks/fixed_server.py) in its own process, so the profile
is the client's alone. py-spy samples without stopping the process (`--nonblocking`) and reports stacks only
for threads on a CPU; each sample is then put in one area by its innermost batchgen frame and the library
its leaf frame belongs to (an aiohttp leaf is HTTP handling whoever called it). Needs py-spy (the `dev`
extra) and permission to trace a child process; the part is skipped, with the reason, when either is missing.
"""

from __future__ import annotations

import collections
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import procs
from benchmarks.speed import CLI
from benchmarks.workload import API_KEY, KEY_ENV, write_job, write_jsonl

RATE_HZ = 250
SCENARIOS = ((200.0, 512), (0.0, 64))  # (server latency ms, concurrency), as in the speed part

HTTP = "HTTP client (aiohttp, yarl, multidict)"
LOOP = "event loop, tasks, thread hand-offs"
RESPONSE = "responses: JSON decode, parse, validate, judge"
INPUT = "input: read rows, build request bodies"
OUTPUT = "results: Arrow columns, Parquet parts, ledger"
LIMITER = "rate limiter"
RUNNER = "runner: attempts, accounting, progress"
STARTUP = "start-up: imports, job, input checks"
AREAS = (HTTP, LOOP, RESPONSE, INPUT, OUTPUT, LIMITER, RUNNER, STARTUP)

_HTTP_LIBS = {"aiohttp", "aiohappyeyeballs", "multidict", "yarl", "propcache"}
_LOOP_LIBS = {"asyncio", "uvloop", "anyio", "threading", "concurrent", "selectors", "socket"}
_BY_MODULE = {
    **dict.fromkeys(("gemini", "outcome", "schema", "thinking", "extras"), RESPONSE),
    **dict.fromkeys(("reader", "prompts"), INPUT),
    **dict.fromkeys(("writer", "ledger", "idhash"), OUTPUT),
    **dict.fromkeys(("limiter", "window", "clock"), LIMITER),
    **dict.fromkeys(
        ("runner", "retry", "execute", "budget", "stats", "progress", "logs", "records", "pricing"), RUNNER
    ),
    "client": HTTP,
}
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*?)(?::\d+)?\)$")
_IDLE = ("Condition.wait", "Queue.get", "Event.wait")


def _path(frame: str) -> str:
    match = _FRAME.match(frame)
    return match["path"] if match else frame


def _library(path: str) -> str:
    """The top-level package (or stdlib module) a frame's file belongs to; py-spy names files from there."""
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    return path.lstrip("/").split("/", 1)[0].removesuffix(".py")


def area(frames: Sequence[str]) -> str | None:
    """The area one sampled stack (outermost frame first) counts for; None for a thread only waiting."""
    if any("importlib._bootstrap" in frame for frame in frames):
        return STARTUP
    if frames[-1].startswith(_IDLE):
        return None
    leaf = _library(_path(frames[-1]))
    if leaf in _HTTP_LIBS:
        return HTTP
    modules = [_path(f).rsplit("batchgen/", 1)[1] for f in frames if "batchgen/" in _path(f)]
    inner = modules[-1].removesuffix(".py").replace("/", ".") if modules else None
    if inner is None or inner == "cli":
        return LOOP if leaf in _LOOP_LIBS or inner is None else STARTUP
    return _BY_MODULE.get(inner, STARTUP)


def summarise(lines: Iterable[str], rows: int) -> dict[str, Any]:
    """Samples per area and the hottest leaf functions, from py-spy's raw (collapsed-stack) output."""
    by_area: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        where = area(frames)
        if where is None:
            continue
        by_area[where] += int(count)
        leaves[re.sub(r":\d+\)$", ")", frames[-1])] += int(count)
    total = sum(by_area.values())
    ms_per_row = 1000 / RATE_HZ / max(1, rows)
    return {
        "rows": rows,
        "samples": total,
        "cpu_ms_per_row": total * ms_per_row,
        "areas": {
            name: {"share": by_area[name] / max(1, total), "ms_per_row": by_area[name] * ms_per_row} for name in AREAS
        },
        "hottest": [{"function": f, "share": n / max(1, total)} for f, n in leaves.most_common(12)],
    }


def run_one(latency_ms: float, concurrency: int, rows: int, data: Path, py_spy: str) -> dict[str, Any]:
    input_path = write_jsonl(data / f"reviews-{rows}.jsonl", rows)
    with procs.server(latency_ms, kind="fixed") as server, tempfile.TemporaryDirectory(prefix="bench-prof-") as work:
        folder = Path(work)
        job = write_job(folder, input_path=input_path, output=folder / "out", concurrency=concurrency)
        samples = folder / "samples.txt"
        argv = [py_spy, "record", "--nonblocking", "--rate", str(RATE_HZ), "--format", "raw", "-o", str(samples)]
        argv += ["--", sys.executable, "-c", CLI, "run", str(job), "--base-url", server.url, "--quiet"]
        usage = procs.measure(argv, env=procs.child_env() | {KEY_ENV: API_KEY})
        if usage.exit_code != 0 or not samples.exists():
            raise RuntimeError(f"py-spy run failed (exit {usage.exit_code}): {usage.stderr}")
        with samples.open() as lines:
            figures = summarise(lines, rows)
    return {"latency_ms": latency_ms, "concurrency": concurrency, "rows_per_s": rows / usage.wall_s, **figures}


def main(*, quick: bool = False, data: Path | None = None) -> dict[str, Any]:
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        return {"skipped": "py-spy is not installed (pip install py-spy, or the dev extra)"}
    folder = data or Path(tempfile.gettempdir()) / "batchgen-bench"
    folder.mkdir(parents=True, exist_ok=True)
    rows = 3_000 if quick else 20_000
    try:
        runs = [run_one(latency, concurrency, rows, folder, py_spy) for latency, concurrency in SCENARIOS]
    except RuntimeError as exc:  # typically: no permission to trace (ptrace) in this container
        return {"skipped": str(exc)}
    figures: dict[str, Any] = {"rate_hz": RATE_HZ, "server": "fixed", "runs": runs}
    print_table(figures)
    return figures


def print_table(figures: dict[str, Any]) -> None:
    for run in figures["runs"]:
        print(
            f"\nProfile: batchgen at {run['latency_ms']:g} ms, concurrency {run['concurrency']}, {run['rows']} rows "
            f"(fixed server; {run['cpu_ms_per_row']:.2f} ms of sampled CPU per row, {run['rows_per_s']:.0f} rows/s "
            "under py-spy)"
        )
        for name, share in run["areas"].items():
            print(f"  {share['share']:6.1%} {share['ms_per_row']:6.3f} ms/row  {name}")
        print("  hottest leaf functions:")
        for leaf in run["hottest"]:
            print(f"  {leaf['share']:6.1%}  {leaf['function']}")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
