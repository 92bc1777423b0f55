"""A results folder read back for a rerun: which ids are done, and compaction to one row per id.

A rerun asks the ledger which ids are already final and sends only the rest: rows written by an earlier
version of the job (a changed job run with --force) are not final, so they are sent again. Retried rows leave
an older row behind, and a slow run or a killed one leaves many small parts; `compact` then rewrites only the
parts holding superseded rows and merges small ones, each by write-new-then-delete-old, so a crash at any point
leaves every row readable and the next compaction finishes the job.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from batchgen.errors import ConfigError
from batchgen.input.ids import IdHashes, IdSet
from batchgen.records import Status
from batchgen.results.folder import (
    Manifest,
    compacted_names,
    part_files,
    part_row_count,
    part_schema,
    read_manifest,
    read_part,
    write_part,
)
from batchgen.results.table import conformed


@dataclass(frozen=True, slots=True)
class Done:
    """Ids already in the folder: those final (skipped by a rerun) and how many rows are stored in all."""

    final: IdSet
    rows: int


def check_job(folder: Path, fingerprint: str, *, force: bool) -> bool:
    """Refuse to mix a changed job's answers into a folder written by another job, unless forced; whether the
    folder holds another job's results (and `force` lets this one take it over)."""
    manifest = read_manifest(folder)
    previous = None if manifest is None else manifest.fingerprint
    if previous is None or previous == fingerprint:
        return False
    if force:
        return True
    raise ConfigError(
        f"{folder} holds results of a different job (model, request, schema or prompt changed); "
        "use another --output, or --force to run the changed job here (its rows are sent again and replace "
        "the old ones)"
    )


def done_ids(folder: Path, *, retry_failed: bool, fingerprint: str | None = None) -> Done:
    """Ids whose latest row is final; with `retry_failed`, `failed` rows are not final and are sent again.

    With the job's `fingerprint`, a row written by a run of another version of the job (a changed job run
    with --force) is not final either: the changed job sends it again.
    """
    ids, rows = final_ids(folder, retry_failed=retry_failed, fingerprint=fingerprint)
    return Done(final=IdSet(in_chunks(ids)), rows=rows)


def final_ids(folder: Path, *, retry_failed: bool, fingerprint: str | None = None) -> tuple[pa.Array, int]:
    """The ids `done_ids` holds, as an Arrow array, and how many rows the folder stores in all."""
    stale = _stale_runs(read_manifest(folder), fingerprint) if fingerprint is not None else frozenset()
    latest = _latest_rows(folder, with_runs=bool(stale))
    if latest is None:
        return pa.array([], pa.string()), 0
    ids, statuses, runs = latest
    keep = pc.not_equal(statuses, Status.FAILED.value) if retry_failed else None
    if runs is not None:
        fresh = pc.invert(pc.is_in(runs, value_set=pa.array(sorted(stale), pa.string())))
        keep = fresh if keep is None else pc.and_(keep, fresh)
    if keep is not None:
        ids = ids.filter(keep)
    return ids, len(statuses)


def _stale_runs(manifest: Manifest | None, fingerprint: str) -> frozenset[str]:
    """The runs recorded under another fingerprint than `fingerprint`: their rows answer another job."""
    if manifest is None:
        return frozenset()
    return frozenset(run.run_id for run in manifest.runs if run.fingerprint not in (None, fingerprint))


def in_chunks(ids: pa.Array, size: int = 65_536) -> Iterator[list[str]]:
    """The ids as lists of at most `size` strings."""
    # A million ids as one Python list would cost what IdSet saves.
    for start in range(0, len(ids), size):
        yield ids.slice(start, size).to_pylist()


@dataclass(frozen=True, slots=True)
class Tally:
    """How the job as a whole went: rows in a folder holding one row per id, those `failed` and those `ok`."""

    rows: int = 0
    failed: int = 0
    ok: int = 0

    @property
    def failed_fraction(self) -> float:
        return self.failed / self.rows if self.rows else 0.0


def tally(folder: Path) -> Tally:
    """Rows by status of a folder holding one row per id (compacted, or written by one run), counted part by
    part over the status column alone."""
    rows = failed = ok = 0
    for part in part_files(folder):
        statuses = read_part(part, columns=["status"]).column("status")
        rows += len(statuses)
        failed += pc.sum(pc.equal(statuses, Status.FAILED.value)).as_py() or 0
        ok += pc.sum(pc.equal(statuses, Status.OK.value)).as_py() or 0
    return Tally(rows, failed, ok)


def compact(folder: Path, run_id: str, *, superseded: bool = True, target_rows: int | None = None) -> int:
    """Drop superseded rows (an id's older rows) so the folder holds one row per id, and with `target_rows`
    merge parts under half that size into parts of up to `target_rows` rows; returns the rows dropped.

    `superseded=False` skips the pass over every id (a first run into a fresh folder writes each id once).
    Rewritten parts are named after `run_id`; only parts of one schema are merged together.
    """
    parts = part_files(folder)
    lost = _superseded(parts) if superseded else {}
    small = 0 if target_rows is None else target_rows // 2
    merge = _Merge(folder, run_id, target_rows or 0)
    dropped = 0
    for sequence, part in enumerate(parts):
        positions = lost.get(sequence)
        if not positions and (not small or part_row_count(part) >= small):
            continue  # neither superseded rows nor small: left as it is
        table = read_part(part)
        if positions:
            table = table.filter(_without(table.num_rows, positions))
            dropped += len(positions)
        merge.add(part, table, changed=bool(positions))
    merge.flush()
    return dropped


def reshape(folder: Path, run_id: str, schema: pa.Schema) -> int:
    """Rewrite every part whose columns are not `schema`'s into it (a changed job forced into the folder: its
    typed or kept columns differ), so the folder keeps one schema; returns the parts rewritten.

    A column the new schema lacks is dropped, a new one is null until the row is answered again (a forced job
    sends every row again). Each part is written anew before the old one is deleted.
    """
    names = compacted_names(folder, run_id)
    rewritten = 0
    for part in part_files(folder):
        if part_schema(part).equals(schema):
            continue
        write_part(folder, next(names), conformed(read_part(part), schema))
        part.unlink()
        rewritten += 1
    return rewritten


class _Merge:
    """Parts read for rewriting, written back as few parts as `target` rows allow (one schema per part)."""

    def __init__(self, folder: Path, run_id: str, target: int) -> None:
        self._folder = folder
        self._run_id = run_id
        self._target = target
        self._names = compacted_names(folder, run_id)
        self._group: list[tuple[Path, pa.Table]] = []
        self._changed = False

    def add(self, part: Path, table: pa.Table, *, changed: bool) -> None:
        if self._group:
            rows = sum(held.num_rows for _, held in self._group)
            if table.schema != self._group[0][1].schema or rows + table.num_rows > self._target:
                self.flush()
        self._group.append((part, table))
        self._changed |= changed

    def flush(self) -> None:
        """Write the group as one part, then delete its sources (a lone part without changes stays)."""
        group, changed = self._group, self._changed
        self._group, self._changed = [], False
        if not group or (len(group) == 1 and not changed):
            return
        merged = pa.concat_tables([table for _, table in group])
        if merged.num_rows:
            write_part(self._folder, next(self._names), merged)
        for part, _ in group:
            part.unlink()


def _latest_rows(folder: Path, *, with_runs: bool = False) -> tuple[pa.Array, pa.Array, pa.Array | None] | None:
    """Each id's newest row: ids, statuses and (`with_runs`) the runs that wrote them."""
    parts = part_files(folder)
    if not parts:
        return None
    superseded = _superseded(parts)
    columns = ["id", "status", "run_id"] if with_runs else ["id", "status"]
    chunks: dict[str, list[pa.Array]] = {name: [] for name in columns}
    for sequence, part in enumerate(parts):
        table = read_part(part, columns=columns)
        positions = superseded.get(sequence)
        if positions:
            table = table.filter(_without(table.num_rows, positions))
        for name in columns:
            chunks[name].extend(table.column(name).chunks)
    combined = [pa.chunked_array(chunks[name], pa.string()).combine_chunks() for name in columns]
    return combined[0], combined[1], combined[2] if with_runs else None


def _superseded(parts: list[Path]) -> dict[int, list[int]]:
    """Rows that are not their id's newest, as {part sequence number: row positions}.

    Memory stays near 24 bytes per stored row, not a table of every id (`IdHashes`): when no id hash repeats
    (a run into a fresh folder) no id does and that is all. Otherwise a second pass reads the ids behind
    repeated hashes, and only those rows are ranked.
    """
    hashes = IdHashes()
    for part in parts:
        hashes.add(read_part(part, columns=["id"]).column("id").to_pylist())
    repeated = hashes.repeated()
    if not repeated:
        return {}
    index = pa.concat_tables(_candidates(part, sequence, repeated) for sequence, part in enumerate(parts))
    lost = index.filter(pc.invert(_newest_per_id(index)))
    superseded: dict[int, list[int]] = {}
    for sequence, position in zip(lost.column("part").to_pylist(), lost.column("position").to_pylist(), strict=True):
        superseded.setdefault(sequence, []).append(position)
    return superseded


def _candidates(part: Path, sequence: int, repeated: frozenset[int]) -> pa.Table:
    """id, finished_at, part and position of the rows of `part` whose id hash is in `repeated`."""
    table = read_part(part, columns=["id", "finished_at"])
    positions = [p for p, value in enumerate(table.column("id").to_pylist()) if hash(value) in repeated]
    rows = len(positions)
    return (
        table.take(pa.array(positions, pa.int64()))
        .append_column("part", pa.array([sequence] * rows, pa.int32()))
        .append_column("position", pa.array(positions, pa.int64()))
    )


def _without(rows: int, positions: list[int]) -> pa.Array:
    keep = [True] * rows
    for position in positions:
        keep[position] = False
    return pa.array(keep, pa.bool_())


def _newest_per_id(index: pa.Table) -> pa.Array:
    """A boolean mask over `index`: true for each id's newest row (latest finished_at, then latest part)."""
    # `part` is the part's sequence number in name order, so descending means the later part.
    order = pc.sort_indices(
        index, sort_keys=[("id", "ascending"), ("finished_at", "descending"), ("part", "descending")]
    )
    ids = pc.take(index.column("id"), order).combine_chunks()
    first = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)) if len(ids) > 1 else pa.array([], pa.bool_())
    first_in_order = pa.concat_arrays([pa.array([True]), first]) if len(ids) else first
    mask = [False] * index.num_rows
    for position, keep in zip(order.to_pylist(), first_in_order.to_pylist(), strict=True):
        mask[position] = keep
    return pa.array(mask, pa.bool_())
