"""Repeated ids among many rows, found from packed hashes."""

from __future__ import annotations

from batchgen.idhash import IdHashes


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
