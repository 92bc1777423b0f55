"""The ids a rerun skips, built once by the driver and shared with every worker.

A local run keeps them as an `IdSet` of Python string hashes, which differ from process to process (hash
randomisation): a worker could not look an id up in the driver's set. `DoneIds` keeps a keyed BLAKE2b digest
of 128 bits per id instead, the same in every process, sorted in one NumPy array: 16 bytes per id, sent once
to the object store with the workers' arguments, and looked up by binary search. Two different ids share a
digest with odds of about (ids / 2^64)^2, far below a disk's error rate, as for `IdSet`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

_DIGEST = 16


def _digest(value: str) -> bytes:
    return hashlib.blake2b(value.encode(), digest_size=_DIGEST, person=b"batchgen-done").digest()


class DoneIds:
    """A set of ids as 128-bit digests (two 64-bit halves), sorted; `in` by binary search on the first half."""

    def __init__(self, chunks: Iterable[list[str]] = ()) -> None:
        digests = np.frombuffer(b"".join(_digest(value) for ids in chunks for value in ids), dtype=">u8")
        high, low = digests[0::2], digests[1::2]
        order = np.lexsort((low, high))
        self._high = high[order]
        self._low = low[order]

    def __len__(self) -> int:
        return len(self._high)

    def __repr__(self) -> str:
        return f"DoneIds({len(self)} ids)"

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str) or not len(self._high):
            return False
        high, low = np.frombuffer(_digest(value), dtype=">u8")
        position = int(np.searchsorted(self._high, high))
        # Equal first halves sit side by side; among them, nearly always one, the second half decides.
        while position < len(self._high) and self._high[position] == high:
            if self._low[position] == low:
                return True
            position += 1
        return False
