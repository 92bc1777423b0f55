"""Finding repeated ids among millions of rows in about 8 bytes per row, not a table of every id.

Both the input check (duplicate ids) and the results ledger (superseded rows) must know which ids occur more
than once, over inputs too large to hold as Python strings. `IdHashes` keeps only a 64-bit hash per id in
packed arrays and sorts them with Arrow; the few ids behind a repeated hash are then looked at exactly by
the caller, so a hash collision costs a second look, never a wrong answer.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

_BUCKETS = 16


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
    values = pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(hashes)])  # a zero-copy view
    ordered = values.take(pc.sort_indices(values))
    later = ordered.slice(1)
    same = pc.equal(later, ordered.slice(0, count - 1))
    if not pc.any(same).as_py():
        return []
    found: list[int] = later.filter(same).to_pylist()
    return found
