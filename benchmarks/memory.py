"""Peak memory against input size: `batchgen run` on 10k, 100k and 1M rows of JSONL and of Parquet.

Each size is a separate run of the real CLI (no `--limit`) against the local server at zero latency; its peak
RSS is the child's own `ru_maxrss`. Memory must not follow the input: the 1M-row peak is compared with the
100k-row one. Inputs are generated once under the data folder (outside the repository).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from benchmarks import procs
from benchmarks.speed import CLI
from benchmarks.workload import API_KEY, KEY_ENV, write_job, write_jsonl, write_parquet

FULL_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000, 10_000, 50_000)
KINDS = ("jsonl", "parquet")
LIMIT_MB = 300.0
GROWTH = 0.10  # largest run's peak may exceed the middle run's by at most this fraction


def run_one(server: procs.Server, input_path: Path, work: Path) -> dict[str, Any]:
    output = work / "out"
    shutil.rmtree(output, ignore_errors=True)
    job = write_job(work, input_path=input_path, output=output, concurrency=64)
    argv = [sys.executable, "-c", CLI, "run", str(job), "--base-url", server.url]
    usage = procs.measure(argv, env=procs.child_env() | {KEY_ENV: API_KEY})
    if usage.exit_code != 0:
        raise RuntimeError(f"batchgen failed on {input_path}: exit {usage.exit_code}: {usage.stderr}")
    rows = int(orjson.loads((output / "_manifest.json").read_bytes())["runs"][-1]["rows"])
    shutil.rmtree(output, ignore_errors=True)
    return {
        "rows": rows,
        "max_rss_mb": usage.max_rss_mb,
        "wall_s": usage.wall_s,
        "rows_per_s": rows / usage.wall_s,
        "cpu_s_per_1k": usage.cpu_s / max(1, rows) * 1000,
    }


def main(*, quick: bool = False, data: Path | None = None, sizes: Sequence[int] | None = None) -> dict[str, Any]:
    """Run every kind at every size; print the table; return the figures and the verdicts."""
    sizes = tuple(sizes or (QUICK_SIZES if quick else FULL_SIZES))
    folder = data or Path(tempfile.gettempdir()) / "batchgen-bench"
    folder.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"sizes": list(sizes), "limit_mb": LIMIT_MB, "growth_allowed": GROWTH, "runs": {}}
    with procs.server(0) as server, tempfile.TemporaryDirectory(prefix="bench-memory-") as work:
        for kind in KINDS:
            runs: dict[str, Any] = {}
            for size in sizes:
                write = write_jsonl if kind == "jsonl" else write_parquet
                input_path = write(folder / f"reviews-{size}.{kind}", size)
                runs[str(size)] = run_one(server, input_path, Path(work))
                row = runs[str(size)]
                print(
                    f"  memory {kind:7} {size:>9,} rows: peak RSS {row['max_rss_mb']:6.1f} MB, "
                    f"{row['rows_per_s']:6.0f} rows/s",
                    file=sys.stderr,
                    flush=True,
                )
            figures["runs"][kind] = runs
    figures["verdicts"] = _verdicts(figures, sizes)
    print_table(figures)
    return figures


def _verdicts(figures: dict[str, Any], sizes: Sequence[int]) -> dict[str, Any]:
    verdicts: dict[str, Any] = {}
    largest, middle = str(sizes[-1]), str(sizes[-2])
    for kind, runs in figures["runs"].items():
        peak, reference = runs[largest]["max_rss_mb"], runs[middle]["max_rss_mb"]
        verdicts[kind] = {
            "growth": peak / reference - 1,
            "under_limit": peak < LIMIT_MB,
            "flat": peak <= reference * (1 + GROWTH),
        }
    return verdicts


def print_table(figures: dict[str, Any]) -> None:
    sizes = figures["sizes"]
    print("\nPeak RSS of `batchgen run` by input size (local server, 0 ms)")
    print("{:8} ".format("input") + " ".join(f"{size:>12,}" for size in sizes) + "   growth  verdict")
    for kind, runs in figures["runs"].items():
        verdict = figures["verdicts"][kind]
        ok = "ok" if verdict["under_limit"] and verdict["flat"] else "MISSED"
        peaks = " ".join(f"{runs[str(size)]['max_rss_mb']:9.1f} MB" for size in sizes)
        print(f"{kind:8} {peaks}  {verdict['growth']:+6.1%}  {ok}")
    print(f"(target: under {figures['limit_mb']:.0f} MB at the largest size, within {figures['growth_allowed']:.0%} of")
    print(" the middle size)")
