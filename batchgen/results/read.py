"""Results folders read back as one Arrow table: for the report, for notebooks, for any reader of the contract."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from batchgen.errors import ConfigError, InputError, OutputError
from batchgen.results.columns import CONTRACT, OPTIONAL, select
from batchgen.results.folder import MANIFEST, part_files, part_schema, read_part


def read_results(folders: Sequence[Path], columns: Sequence[str] | None = None) -> pa.Table:
    """Every row of the folders' parts: all their columns, or only `columns` (contract columns, cast to their
    contract types, so that folders written by different jobs or versions line up; an `OPTIONAL` column a
    part lacks reads as nulls).

    A folder a run has started in but not yet written to has no rows. Raises InputError naming a folder that
    is missing, is not a results folder, lacks a column, or cannot be read.
    """
    if not folders:
        raise ConfigError("no results folder given")
    tables = [_read_folder(Path(folder), columns) for folder in folders]
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def _read_folder(folder: Path, columns: Sequence[str] | None) -> pa.Table:
    if not folder.is_dir():
        raise InputError("no such results folder", file=str(folder))
    parts = part_files(folder)
    if not parts and (folder / MANIFEST).exists():
        # A run has started here but not written its first part yet (it does after [output] flush_seconds).
        return (CONTRACT if columns is None else select(list(columns))).empty_table()
    if not parts:
        raise InputError("no part-*.parquet files here: not a batchgen results folder", file=str(folder))
    try:
        tables = [_read_part(part, columns) for part in parts]
        return pa.concat_tables(tables, promote_options="permissive")
    except OutputError as exc:
        raise InputError(f"{exc.path}: {exc.detail}", file=str(folder)) from exc
    except pa.ArrowException as exc:
        raise InputError(f"parts of different shapes: {exc}", file=str(folder)) from exc


def _read_part(part: Path, columns: Sequence[str] | None) -> pa.Table:
    if columns is None:
        return read_part(part)
    wanted = list(columns)
    present = part_schema(part).names
    missing = [name for name in wanted if name not in present and name not in OPTIONAL]
    if missing:
        message = f"{part.name} is not a batchgen results part: no column {', '.join(missing)}"
        raise InputError(message, file=str(part.parent))
    table = read_part(part, columns=[name for name in wanted if name in present])
    # An optional column (a feature the job did not use, row_index in an older folder) reads as nulls.
    for name in wanted:
        if name not in present:
            table = table.append_column(CONTRACT.field(name), pa.nulls(table.num_rows, CONTRACT.field(name).type))
    return table.select(wanted).cast(select(wanted))
