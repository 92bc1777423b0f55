"""Edge: a results folder read as a ledger, for resuming a job and keeping one row per id.

A rerun asks the ledger which ids are already final and sends only the rest. Retried rows leave an older row
behind; `compact` then rewrites only the parts holding superseded rows, each by write-new-then-delete-old, so
a crash at any point leaves every row readable and the next compaction finishes the job.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchgen.errors import ConfigError, OutputError
from batchgen.records import Status
from batchgen.writer import read_manifest, write_part_atomically

PART_GLOB = "part-*.parquet"


@dataclass(frozen=True, slots=True)
class Done:
    """Ids already in the folder: those final (skipped by a rerun) and how many rows are stored in all."""

    final: frozenset[str]
    rows: int


def part_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(PART_GLOB)) if folder.is_dir() else []


def check_job(folder: Path, fingerprint: str, *, force: bool) -> None:
    """Refuse to mix a changed job's answers into a folder written by another job, unless forced."""
    manifest = read_manifest(folder)
    previous = (manifest or {}).get("job", {}).get("fingerprint")
    if previous is None or previous == fingerprint or force:
        return
    raise ConfigError(
        f"{folder} holds results of a different job (model, request, schema or prompt changed); "
        "use another --output, or --force to add to it anyway"
    )


def done_ids(folder: Path, *, retry_failed: bool) -> Done:
    """Ids whose latest row is final; with `retry_failed`, `failed` rows are not final and are sent again."""
    latest = _latest_rows(folder)
    if latest is None:
        return Done(final=frozenset(), rows=0)
    ids, statuses = latest
    if retry_failed:
        ids = ids.filter(pc.not_equal(statuses, Status.FAILED.value))
    return Done(final=frozenset(ids.to_pylist()), rows=len(statuses))


def failed_fraction(folder: Path) -> float:
    """The fraction of ids whose latest row is `failed` (0 for an empty folder): how the job as a whole went."""
    latest = _latest_rows(folder)
    if latest is None:
        return 0.0
    _, statuses = latest
    failed = pc.sum(pc.equal(statuses, Status.FAILED.value)).as_py() or 0
    return int(failed) / len(statuses)


def compact(folder: Path, run_id: str) -> int:
    """Drop superseded rows (an id's older rows) so the folder holds one row per id; returns rows dropped."""
    index = _index(folder)
    if index is None:
        return 0
    keep = _newest_per_id(index)
    dropped = 0
    for sequence, part in enumerate(part_files(folder)):
        mask = keep.filter(pc.equal(index.column("part"), str(part)))
        if pc.all(mask).as_py():
            continue
        table = _read(part)
        survivors = table.filter(mask)
        dropped += table.num_rows - survivors.num_rows
        if survivors.num_rows:
            write_part_atomically(folder, f"part-{run_id}-c{sequence:05d}.parquet", survivors)
        part.unlink()
    return dropped


def _latest_rows(folder: Path) -> tuple[pa.Array, pa.Array] | None:
    index = _index(folder)
    if index is None:
        return None
    newest = index.filter(_newest_per_id(index))
    return newest.column("id").combine_chunks(), newest.column("status").combine_chunks()


def _index(folder: Path) -> pa.Table | None:
    """id, status, finished_at, part and row position of every stored row; None when the folder is empty."""
    tables = list(_part_indexes(folder))
    return pa.concat_tables(tables) if tables else None


def _part_indexes(folder: Path) -> Iterator[pa.Table]:
    for part in part_files(folder):
        table = _read(part, columns=["id", "status", "finished_at"])
        rows = table.num_rows
        yield table.append_column("part", pa.array([str(part)] * rows, pa.string())).append_column(
            "position", pa.array(range(rows), pa.int64())
        )


def _newest_per_id(index: pa.Table) -> pa.Array:
    """A boolean mask over `index`: true for each id's newest row (latest finished_at, then latest part)."""
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


def _read(part: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(part, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"unreadable results part (remove it to resend its rows): {exc}", path=str(part)) from exc
