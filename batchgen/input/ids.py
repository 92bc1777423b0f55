"""Ids of millions of rows held as packed hashes, not as Python strings.

Both the input check (duplicate ids) and the results ledger (superseded rows) must know which ids occur more
than once, over inputs too large to hold as Python strings. `IdHashes` keeps only a 64-bit hash per id in
packed arrays and sorts them with Arrow; the few ids behind a repeated hash are then looked at exactly by
the caller, so a hash collision costs a second look, never a wrong answer.

A resumed run must skip the ids already done: `IdSet` answers `in` for them in 16 bytes per id, a fraction of
what a frozenset of the strings holds (docs/performance.md has the figures).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

_BUCKETS = 16
# Prefixed to an id for its second hash: a different input to the same keyed hash gives an unrelated value.
_SALT = "\x00"


class IdHashes:
    """The hashes of the ids added so far (8 bytes each); `repeated()` names the hashes seen twice or more.

    Python's own `hash` of a string is used: 64 bits, and stable for the life of the process, which is all
    a check that runs and ends within one process needs. Hashes are kept in buckets by their top bits, so
    equal hashes share a bucket and each bucket is sorted alone: the sort's working memory is a sixteenth
    of the input's, where sorting everything at once (or Arrow's hash kernels) would add two to three times
    the hashes' own 8 bytes per row at the peak.
    """

    def __init__(self) -> None:
        self._buckets = [array("q") for _ in range(_BUCKETS)]

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets)

    def __repr__(self) -> str:
        return f"IdHashes({len(self)} ids)"

    def add(self, ids: Iterable[str]) -> None:
        buckets = self._buckets
        for value in map(hash, ids):
            buckets[value >> 60 & (_BUCKETS - 1)].append(value)  # by the top four bits

    def repeated(self) -> frozenset[int]:
        """Hash values that occur more than once among the ids added."""
        found: set[int] = set()
        for bucket in self._buckets:
            found.update(_repeated(bucket))
        return frozenset(found)


def _repeated(hashes: array[int]) -> list[int]:
    count = len(hashes)
    if count < 2:
        return []
    values = _view(hashes)
    ordered = values.take(pc.sort_indices(values))
    later = ordered.slice(1)
    same = pc.equal(later, ordered.slice(0, count - 1))
    if not pc.any(same).as_py():
        return []
    found: list[int] = later.filter(same).to_pylist()
    return found


class IdSet:
    """A set of ids, each held as two 64-bit hashes (16 bytes), sorted by the first; `in` by binary search.

    An id counts as in the set only when both of its hashes match one member's: for an id not in the set,
    the chance of a false match is about (members / 2^128), under 10^-32 for a million ids, far below any
    disk's error rate, where one 64-bit hash alone would leave a million-row resume a one-in-10^7 chance of
    skipping a row that was never answered.
    """

    def __init__(self, chunks: Iterable[list[str]] = ()) -> None:
        first, second = array("q"), array("q")
        for ids in chunks:
            first.extend(map(hash, ids))
            second.extend(hash(_SALT + value) for value in ids)
        self._first: Sequence[int]
        self._second: Sequence[int]
        self._first, self._second = _sorted_by(first, first, second)

    def __len__(self) -> int:
        return len(self._first)

    def __repr__(self) -> str:
        return f"IdSet({len(self)} ids)"

    def __contains__(self, value: object) -> bool:
        first = self._first
        if not first or not isinstance(value, str):
            return False
        key = hash(value)
        position = bisect_left(first, key)
        if position == len(first) or first[position] != key:
            return False
        # Equal first hashes sit side by side; among them, nearly always one, the second hash decides.
        check = hash(_SALT + value)
        while position < len(first) and first[position] == key:
            if self._second[position] == check:
                return True
            position += 1
        return False


def _sorted_by(keys: array[int], *columns: array[int]) -> Iterator[Sequence[int]]:
    """Each column reordered so that `keys` ascend, as a view of the int64 array Arrow sorted it into."""
    count = len(keys)
    if count == 0:
        yield from (array("q") for _ in columns)
        return
    order = pc.sort_indices(_view(keys))
    for column in columns:
        taken = _view(column).take(order)
        # The memoryview keeps Arrow's buffer alive; Arrow pads buffers, hence the slice.
        yield memoryview(taken.buffers()[1]).cast("q")[:count]


def _view(hashes: array[int]) -> pa.Array:
    """The packed hashes as an Arrow int64 array, without a copy."""
    return pa.Array.from_buffers(pa.int64(), len(hashes), [None, pa.py_buffer(hashes)])
