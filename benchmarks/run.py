"""`make bench`: every benchmark in one session, printed as tables and saved as JSON for comparing runs.

    python benchmarks/run.py            # full run, about 10 minutes on 2 cores
    python benchmarks/run.py --quick    # small sizes, about 2 minutes: a smoke test of the whole bench
    python benchmarks/run.py --memory   # also peak RSS of `batchgen run` on 10k/100k/1M rows (20-30 minutes more)

Parts: `speed` (batchgen vs a bare aiohttp loop and the google-genai SDK loop, at 0 ms and 200 ms, on the
local Gemini server and on a minimal fixed-answer server), `profile` (where batchgen's CPU goes, by area,
sampled with py-spy), `pipeline` (batchgen's own CPU per row without HTTP), `validators`, `limits` (the
rate limiter in virtual time), `quota_http` (real-HTTP quota runs), `ray` (`--engine ray` with 1, 2 and 4
workers, and the shared rate-limit actor's admissions per second) and, with --memory, `memory`. Results go
to benchmarks/results/<UTC time>.json and benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script (`python benchmarks/run.py`), the package is one level up

import orjson  # noqa: E402

from benchmarks import memory, pipeline, procs, profile, quota_http, speed  # noqa: E402

PARTS = ("speed", "profile", "pipeline", "validators", "limits", "quota_http", "ray", "memory")
PACKAGES = ("aiohttp", "anyio", "google-genai", "orjson", "pyarrow", "tenacity", "uvloop", "jsonschema-rs", "ray")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the bench works, in minutes")
    parser.add_argument("--memory", action="store_true", help="also the peak-RSS runs (1M rows: long)")
    parser.add_argument("--only", metavar="PARTS", help=f"comma-separated subset of: {', '.join(PARTS)}")
    parser.add_argument("--servers", default=",".join(procs.SERVERS), help="speed: fake, fixed or both")
    parser.add_argument("--repeat", type=int, default=1, help="speed: runs per contender, the best is kept")
    parser.add_argument("--pin", action="store_true", help="speed: server on one CPU, clients on the others")
    parser.add_argument("--data", type=Path, default=Path("/tmp/batchgen-bench"), help="generated inputs")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="JSON output")
    return parser


def _parts(args: argparse.Namespace) -> list[str]:
    if args.only:
        chosen = [p.strip() for p in args.only.split(",") if p.strip()]
        unknown = sorted(set(chosen) - set(PARTS))
        if unknown:
            raise SystemExit(f"unknown part(s): {', '.join(unknown)}")
        return chosen
    return [p for p in PARTS if p != "memory" or args.memory]


def _runners(args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    return {
        "speed": lambda: speed.main(
            quick=args.quick, pinned=args.pin, repeat=args.repeat, data=args.data, servers=servers
        ),
        "profile": lambda: profile.main(quick=args.quick, data=args.data),
        "pipeline": lambda: pipeline.main(2_000 if args.quick else 20_000),
        "validators": lambda: importlib.import_module("benchmarks.validators").main(),
        "limits": lambda: importlib.import_module("benchmarks.limits").main(),
        "quota_http": quota_http.main,
        "ray": lambda: importlib.import_module("benchmarks.ray_scale").main(quick=args.quick),
        "memory": lambda: memory.main(quick=args.quick, data=args.data),
    }


def _meta() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg(),
        "packages": versions,
    }


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the figure measured and whether it was met."""
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float, goal: float, *, at_most: bool = False) -> None:
        met = value <= goal if at_most else value >= goal
        checks.append({"target": name, "value": value, "goal": goal, "met": met})

    for name, scenario in figures.get("speed", {}).get("scenarios", {}).items():
        ratios = scenario["ratios"]
        if scenario["latency_ms"] == 0:
            if "batchgen/floor" in ratios:
                check(f"{name}: batchgen/floor rows/s", ratios["batchgen/floor"], 0.70)
            if "batchgen/sdk" in ratios:
                check(f"{name}: batchgen/sdk rows/s", ratios["batchgen/sdk"], 5.0)
        elif "batchgen/ideal" in ratios:
            check(f"{name} c{scenario['concurrency']}: batchgen/ideal rows/s", ratios["batchgen/ideal"], 0.90)
    for kind, runs in figures.get("memory", {}).get("runs", {}).items():
        verdict = figures["memory"]["verdicts"][kind]
        largest = str(figures["memory"]["sizes"][-1])
        check(f"memory {kind}: peak RSS MB at {int(largest):,} rows", runs[largest]["max_rss_mb"], 300, at_most=True)
        check(f"memory {kind}: growth over the middle size", verdict["growth"], 0.10, at_most=True)
    return checks


def _print_targets(checks: list[dict[str, Any]]) -> None:
    if not checks:
        return
    print("\nTargets")
    for c in checks:
        sign = "<=" if c["target"].startswith("memory") else ">="
        print(f"  {'met   ' if c['met'] else 'MISSED'} {c['target']}: {c['value']:.2f} ({sign} {c['goal']:g})")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    parts = _parts(args)
    runners = _runners(args)
    figures: dict[str, Any] = {"meta": _meta() | {"quick": args.quick, "parts": parts}}
    for part in parts:
        print(f"\n== {part} ==", flush=True)
        started = time.perf_counter()
        figures[part] = runners[part]()
        figures["meta"].setdefault("seconds", {})[part] = round(time.perf_counter() - started, 1)
    figures["meta"]["load_average_at_end"] = os.getloadavg()
    figures["targets"] = targets(figures)
    _print_targets(figures["targets"])
    _save(args.results, figures)
    return figures


def _save(folder: Path, figures: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    body = orjson.dumps(figures, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    (folder / f"{stamp}.json").write_bytes(body)
    (folder / "latest.json").write_bytes(body)
    print(f"\nresults: {folder / f'{stamp}.json'} (and latest.json)")


if __name__ == "__main__":
    main()
