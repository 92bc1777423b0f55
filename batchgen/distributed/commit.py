"""The driver's side of the results folder: what the workers answer, written once as ordinary parts.

Workers write nothing. Every block's results reach the driver through Ray Data, which delivers a retried
block's output once, and `Committer` writes them as parts of this run (`results/folder.py`: same names, same
atomic writes, same columns), flushed every `flush_rows` rows or `flush_seconds` seconds as a local run's
sink does. It counts the run's rows and prices them as they are committed, so the summary, the manifest and
the cost shown are those of the rows in the folder, and logs each row that did not end `ok`, with the worker
that made it.

Should an id ever arrive twice (a delivery Ray repeated), the compaction every run on Ray ends with keeps one
row per id by the usual rule (newest first): the folder holds one row per id whatever happened on the way.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import anyio
import pyarrow as pa

from batchgen.distributed.worker import WORKER
from batchgen.records import Result, RunStats, Status
from batchgen.report.budget import Budget
from batchgen.results.columns import USAGE_COLUMNS, usage_of
from batchgen.results.folder import part_name, write_part

log = logging.getLogger("batchgen.distributed")

_COUNTED = ["id", "status", "attempts", "responses", "reasks", "http_status", "error", WORKER] + [
    column for column, _ in USAGE_COLUMNS
]


class Committer:
    """Buffers the tables workers answer and writes them as this run's parts; counts and prices each row."""

    def __init__(
        self,
        folder: Path,
        run_id: str,
        stats: RunStats,
        budget: Budget | None,
        *,
        flush_rows: int,
        flush_seconds: float,
    ) -> None:
        self._folder = folder
        self._run_id = run_id
        self._stats = stats
        self._budget = budget
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._parts = 0
        self._flushed_at = time.monotonic()
        self._lock = anyio.Lock()
        self.rows = 0
        self.by_worker: Counter[str] = Counter()
        """Rows received from each worker (by the name it tags its rows with)."""

    def __repr__(self) -> str:
        return f"Committer({str(self._folder)!r}, rows={self.rows}, buffered={self._buffered}, parts={self._parts})"

    async def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        self._count(table)
        self._buffer.append(table.drop_columns([WORKER]))
        self._buffered += table.num_rows
        if self._buffered >= self._flush_rows or time.monotonic() - self._flushed_at >= self._flush_seconds:
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered as one part (nothing when empty)."""
        async with self._lock:
            self._flushed_at = time.monotonic()
            if not self._buffer:
                return
            table = pa.concat_tables(self._buffer)
            self._buffer, self._buffered = [], 0
            name = part_name(self._run_id, self._parts)
            self._parts += 1
            await anyio.to_thread.run_sync(write_part, self._folder, name, table)
            self.rows += table.num_rows

    async def flush_periodically(self) -> None:
        """Flush every `flush_seconds`, so rows wait no longer than that when blocks come slowly."""
        while True:
            await anyio.sleep(self._flush_seconds)
            await self.flush()

    def _count(self, table: pa.Table) -> None:
        stats, budget = self._stats, self._budget
        rows = table.select(_COUNTED).to_pylist()
        self.by_worker.update(row[WORKER] for row in rows)
        for row in rows:
            result = Result(
                row["id"],
                Status(row["status"]),
                usage=usage_of(row),
                attempts=row["attempts"] or 0,
                responses=row["responses"] or 0,
                reasks=row["reasks"] or 0,
                error=row["error"],
                http_status=row["http_status"],
            )
            stats.record(result)
            if budget is not None:
                budget.charge(result)
            if result.status is not Status.OK:
                _log_problem(result, row[WORKER])


def _log_problem(result: Result, worker: str) -> None:
    http = f" (HTTP {result.http_status})" if result.http_status is not None else ""
    log.warning(
        "row %s %s%s: %s [worker %s]",
        result.id,
        result.status.value,
        http,
        result.error,
        worker,
        extra={
            "event": "row_error",
            "id": result.id,
            "status": result.status.value,
            "http_status": result.http_status,
            "error": result.error,
            "attempts": result.attempts,
            "reasks": result.reasks,
            "worker": worker,
        },
    )
