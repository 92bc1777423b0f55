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
    """A set of ids as sorted 16-byte digests; `in` by binary search."""

    def __init__(self, chunks: Iterable[list[str]] = ()) -> None:
        digests = b"".join(_digest(value) for ids in chunks for value in ids)
        # Fixed-width byte strings sort and compare as bytes (trailing zero bytes are ignored alike on both
        # sides, so two 16-byte digests compare as they are).
        self._sorted = np.sort(np.frombuffer(digests, dtype=f"S{_DIGEST}"))

    def __len__(self) -> int:
        return len(self._sorted)

    def __repr__(self) -> str:
        return f"DoneIds({len(self)} ids)"

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str) or not len(self._sorted):
            return False
        key = np.bytes_(_digest(value))
        position = int(np.searchsorted(self._sorted, key))
        return position < len(self._sorted) and self._sorted[position] == key
