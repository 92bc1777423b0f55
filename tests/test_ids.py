"""Repeated ids among many rows, found from packed hashes."""

from __future__ import annotations

import pytest

from batchgen.input.ids import IdHashes, IdIndex, IdSet


def test_no_repeats_among_distinct_ids() -> None:
    hashes = IdHashes()
    hashes.add(f"row-{i}" for i in range(10_000))
    assert len(hashes) == 10_000
    assert hashes.repeated() == frozenset()


def test_the_hash_of_each_repeated_id_is_named_once() -> None:
    hashes = IdHashes()
    hashes.add(["a", "b", "c"])
    hashes.add(["b", "d", "b", "a"])
    assert hashes.repeated() == {hash("a"), hash("b")}


def test_nothing_repeats_in_fewer_than_two_ids() -> None:
    assert IdHashes().repeated() == frozenset()
    one = IdHashes()
    one.add(["only"])
    assert one.repeated() == frozenset()


def test_an_id_set_holds_exactly_its_ids() -> None:
    """Every member is found and no other id is, across chunks and among many ids."""
    ids = IdSet([[f"row-{i}" for i in range(0, 20_000, 2)], ["ü-é", ""]])
    assert len(ids) == 10_002
    assert all(f"row-{i}" in ids for i in range(0, 20_000, 2))
    assert not any(f"row-{i}" in ids for i in range(1, 20_000, 2))
    assert "ü-é" in ids and "" in ids
    assert "row-20000" not in ids and 7 not in ids


def test_an_empty_id_set_holds_nothing() -> None:
    assert len(IdSet()) == 0 and "" not in IdSet() and "x" not in IdSet([[]])


def test_ids_sharing_a_first_hash_are_told_apart_by_the_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64-bit collision alone must not make an unanswered id look done: the second hash decides."""
    import batchgen.input.ids as idhash

    collide = {"a": 1, "b": 1, "c": 1, "\x00a": 10, "\x00b": 20, "\x00c": 30}
    monkeypatch.setattr(idhash, "hash", collide.__getitem__, raising=False)
    ids = IdSet([["a", "b"]])
    assert "a" in ids and "b" in ids
    assert "c" not in ids


def test_an_id_index_finds_each_ids_number_and_nothing_else() -> None:
    """Where each key's line starts in a results file: looked up by id, the first entry of an id added twice."""
    pairs = [(f"k{i}", i * 100) for i in range(5000)] + [("k7", 999_999)]
    index = IdIndex(pairs)
    assert len(index) == 5001
    assert [index.get(f"k{i}") for i in (0, 7, 4999)] == [0, 700, 499_900]
    assert index.get("k5000") is None and index.get("") is None
    assert IdIndex().get("k1") is None
