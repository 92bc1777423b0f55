"""Reading input: JSONL and Parquet, files and folders, streamed, with every bad line reported."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchgen.errors import ConfigError, InputError
from batchgen.input.prompts import PromptBuilder
from batchgen.input.reader import InputSource
from batchgen.records import Prompt

BUILDER = PromptBuilder(id_field="id", prompt_field="p", keep_columns=("n",))


async def collect(source: InputSource, **kwargs: object) -> list[Prompt]:
    return [p async for p in source.prompts(**kwargs)]  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_jsonl_bad_lines_become_failed_prompts_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b'{"id": "a", "p": "x", "n": 1}\n\n{"id": "b", "p":\n{"id": "c", "p": "\xff\xfe"}\n[1]\n{"id": "d", "p": "y"}\n'
    )
    prompts = await collect(InputSource(path, BUILDER, batch_rows=2))
    assert [p.id for p in prompts] == ["a", "line:3", "line:4", "line:5", "d"]
    assert [p.problem is None for p in prompts] == [True, False, False, False, True]
    assert "malformed JSON" in (prompts[1].problem or "")
    assert prompts[1].where == f"{path} line 3"


@pytest.mark.anyio
async def test_parquet_folder_of_parts_is_read_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "p": ["x", "y"], "n": [1, 2]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"id": ["c"], "p": ["z"], "n": [3]}), folder / "part-1.parquet")
    (folder / "_SUCCESS").write_text("")
    source = InputSource(folder, BUILDER)
    prompts = await collect(source)
    assert [p.id for p in prompts] == ["a", "b", "c"]
    assert prompts[2].keep == {"n": 3}
    assert (await source.keep_schema()).field("n").type == pa.int64()
    assert (await source.scan_ids()).rows == 3


@pytest.mark.anyio
async def test_bad_lines_of_a_folder_keep_distinct_ids(tmp_path: Path) -> None:
    """Two files' bad line 2 are two rows: the file name tells their ids apart, so neither supersedes the other."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jsonl", "b.jsonl"):
        (folder / name).write_bytes(b'{"id": "' + name[0].encode() + b'", "p": "x"}\n{"id": \n')
    prompts = await collect(InputSource(folder, BUILDER))
    assert [p.id for p in prompts] == ["a", "a.jsonl:line:2", "b", "b.jsonl:line:2"]
    assert prompts[3].where == f"{folder / 'b.jsonl'} line 2"


@pytest.mark.anyio
async def test_duplicate_ids_are_found_before_sending(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "p": "1"}\n{"id": "b", "p": "2"}\n{"id": "a", "p": "3"}\n{"id": 5, "p": "4"}\n')
    scan = await InputSource(path, BUILDER).scan_ids()
    assert scan.rows == 4
    assert scan.duplicates == {"a": 2}


@pytest.mark.anyio
async def test_allowed_duplicates_are_suffixed_and_done_ids_skipped(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "p": "1"}\n{"id": "b", "p": "2"}\n{"id": "a", "p": "3"}\n')
    prompts = await collect(InputSource(path, BUILDER), duplicates={"a"}, skip={"b"})
    assert [p.id for p in prompts] == ["a", "a#2"]


@pytest.mark.anyio
async def test_jsonl_keep_types_are_inferred(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "p": "1", "n": 4}\n{"id": "b", "p": "2", "n": null}\n')
    assert (await InputSource(path, BUILDER).keep_schema()).field("n").type == pa.int64()


def test_missing_input_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        InputSource(tmp_path / "nope.jsonl", BUILDER)


@pytest.mark.anyio
async def test_truncated_parquet_is_reported_with_its_file(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a"] * 100, "p": ["x"] * 100}), path)
    path.write_bytes(path.read_bytes()[:-30])
    source = InputSource(path, BUILDER)
    with pytest.raises(InputError, match=r"in\.parquet"):
        await source.scan_ids()
    with pytest.raises(InputError, match=r"truncated or corrupt"):
        await collect(source)


@pytest.mark.anyio
async def test_keep_column_missing_from_parquet_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a"], "p": ["x"]}), path)
    with pytest.raises(ConfigError, match="'n'"):
        await InputSource(path, BUILDER).keep_schema()


@pytest.mark.anyio
async def test_a_utf8_byte_order_mark_is_not_part_of_the_first_row(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" and Notepad start the file with a BOM: the first row is still a row."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "p": "x"}\n{"id": "b", "p": "y"}\n')
    prompts = await collect(InputSource(path, BUILDER))
    assert [(p.id, p.problem) for p in prompts] == [("a", None), ("b", None)]
    assert (await InputSource(path, BUILDER).columns()).names == ("id", "p")


@pytest.mark.anyio
async def test_a_byte_that_is_not_utf8_is_located_and_the_fix_named(tmp_path: Path) -> None:
    """A Latin-1 export: the row's problem gives the byte, its column and its offset in the file, and how to
    save the file as UTF-8 (not orjson's "surrogates not allowed: line 1 column 1")."""
    path = tmp_path / "in.jsonl"
    first = b'{"id": "a", "p": "x"}\n'
    path.write_bytes(first + b'{"id": "b", "p": "caf\xe9"}\n')
    (good, bad) = await collect(InputSource(path, BUILDER))
    assert good.problem is None and bad.id == "line:2"
    column = len(b'{"id": "b", "p": "caf') + 1
    assert bad.problem == (
        f"not valid UTF-8: byte 0xe9 at column {column} (byte offset {len(first) + column - 1} of the file); "
        'save the input as UTF-8 (from Excel: "CSV UTF-8"; or iconv -f latin1 -t utf-8)'
    )
    scan = await InputSource(path, BUILDER).scan_ids()
    assert scan.unreadable == 1 and (scan.first_unreadable or "").startswith(f"{path} line 2: not valid UTF-8")


@pytest.mark.anyio
async def test_a_utf16_file_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes('{"id": "a", "p": "x"}\n'.encode("utf-16"))
    with pytest.raises(InputError, match="UTF-16"):
        await InputSource(path, BUILDER).scan_ids()


@pytest.mark.anyio
async def test_each_prompt_knows_its_position_in_the_input_across_files(tmp_path: Path) -> None:
    """`index` (the results' row_index) counts rows from 0 over the files in name order, bad rows included,
    so results can be sorted back to input order."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "b.jsonl").write_bytes(b'{"id": "c", "p": "x"}\n')
    (folder / "a.jsonl").write_bytes(b'{"id": "a", "p": "x"}\nnot json\n\n{"id": "b", "p": "y"}\n')
    prompts = await collect(InputSource(folder, BUILDER))
    assert [(p.id, p.index) for p in prompts] == [("a", 0), ("a.jsonl:line:2", 1), ("b", 2), ("c", 3)]
