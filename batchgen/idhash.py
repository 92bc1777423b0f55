"""Finding repeated ids among millions of rows in about 24 bytes per row, not a table of every id.

Both the input check (duplicate ids) and the results ledger (superseded rows) must know which ids occur more
than once, over inputs too large to hold as Python strings. `IdHashes` keeps only a 64-bit hash per id in
a packed array and sorts it once with Arrow; the few ids behind a repeated hash are then looked at exactly
by the caller, so a hash collision costs a second look, never a wrong answer.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc


class IdHashes:
    """The hashes of the ids added so far (8 bytes each); `repeated()` names the hashes seen twice or more.

    Python's own `hash` of a string is used: 64 bits, and stable for the life of the process, which is all
    a check that runs and ends within one process needs.
    """

    def __init__(self) -> None:
        self._hashes = array("q")

    def __len__(self) -> int:
        return len(self._hashes)

    def __repr__(self) -> str:
        return f"IdHashes({len(self._hashes)} ids)"

    def add(self, ids: Iterable[str]) -> None:
        self._hashes.extend(map(hash, ids))

    def repeated(self) -> frozenset[int]:
        """Hash values that occur more than once among the ids added."""
        count = len(self._hashes)
        if count < 2:
            return frozenset()
        # A zero-copy view of the packed hashes; sorting costs two more 8-byte arrays, where Arrow's hash
        # kernels (unique, value_counts) would build a table three times that size.
        values = pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(self._hashes)])
        ordered = values.take(pc.sort_indices(values))
        later = ordered.slice(1)
        same = pc.equal(later, ordered.slice(0, count - 1))
        if not pc.any(same).as_py():
            return frozenset()
        return frozenset(later.filter(same).to_pylist())
