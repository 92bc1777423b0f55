"""Finished rows buffered and flushed as durable part files of the results folder.

Parts are flushed every `flush_rows` rows or `flush_seconds` seconds, whichever comes first, which bounds what
a crash can lose; each is written whole or not at all (`folder.write_part`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import anyio.abc

from batchgen.errors import OutputError
from batchgen.records import Result
from batchgen.results.folder import part_name, write_part
from batchgen.results.table import Layout, results_table


class ParquetSink:
    """Buffers results and flushes them as atomic part files; implements `records.Sink`."""

    def __init__(
        self,
        folder: Path,
        layout: Layout,
        *,
        run_id: str,
        model: str,
        flush_rows: int = 5000,
        flush_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self.layout = layout
        self.schema = layout.schema
        self.run_id = run_id
        self.model = model
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._clock = clock
        self._buffer: list[tuple[Result, float]] = []
        self._parts = 0
        self._lock = anyio.Lock()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._failure: OutputError | None = None
        self.rows_written = 0

    def __repr__(self) -> str:
        return f"ParquetSink({str(self.folder)!r}, buffered={len(self._buffer)}, parts={self._parts})"

    async def __aenter__(self) -> Self:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create the results folder: {exc.strerror or exc}", path=str(self.folder)
            ) from exc
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._flush_periodically)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)
        # Whatever was received is flushed even when the run failed: every paid-for response must survive.
        with anyio.CancelScope(shield=True):
            await self.flush()
        if self._failure is not None and exc is None:
            raise self._failure

    async def write(self, result: Result) -> None:
        if self._failure is not None:
            raise self._failure
        self._buffer.append((result, self._clock()))
        if len(self._buffer) >= self.flush_rows:
            await self.flush()

    async def flush(self) -> None:
        """Write the buffered rows as one part file (no-op when empty)."""
        async with self._lock:
            if not self._buffer:
                return
            rows, self._buffer = self._buffer, []
            table = results_table(rows, self.layout, run_id=self.run_id, model=self.model)
            name = part_name(self.run_id, self._parts)
            self._parts += 1
            await anyio.to_thread.run_sync(write_part, self.folder, name, table)
            self.rows_written += len(rows)

    async def _flush_periodically(self) -> None:
        # A timed flush that fails must not surface from this background task (wrapped in an exception group,
        # far from the run): the next write raises it, which stops the run like a failed write would.
        while True:
            await anyio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except OutputError as exc:
                self._failure = exc
                return
