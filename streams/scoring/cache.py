"""The local decision cache: recent fraud probabilities by (model sha256, feature-row digest).

A payment system that retries, or an upstream producer that redelivers, sends the same
transaction again within seconds; the cache answers those without another ONNX call. A score is
a pure function of (model, features), so the key is exactly that: the model's sha256 (a swap or
an A/B variant never serves another model's score, and a re-published version with other bytes
cannot either) and the 64-bit digest of the feature row (:mod:`streams.scoring.digest`). A retry
that reuses a transaction id with other features is scored afresh; an identical row under a new
id is a hit.

Entries expire ``ttl_s`` after they were scored (a hit does not extend them). The store is a
table of numpy arrays probed per batch, never per message in Python (the loops are C,
``streams/scoring/_table.c``): buckets of 4 slots, ``2 x capacity`` slots rounded up to a power
of two, each slot holding (key, probability, stored-at, when written). A key (the digest XOR the
model's salt) hashes multiplicatively to one bucket; a store puts a new key into the least
recently written slot of its bucket. The table so keeps about the
``capacity`` most recent rows (within 3 % at the default; an entry leaves early only when four
newer keys fill its bucket; ``tests/unit/streams/scoring/test_cache.py``). A displaced entry
costs a miss, never a wrong score: the full 64-bit key is compared. Memory: 32 bytes per slot
(32,768 slots, 1 MiB, at the default capacity).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt

from schemas.errors import ConfigError
from streams.scoring import _table

U64 = npt.NDArray[np.uint64]
MAX_CAPACITY: Final[int] = 1 << 30
WAYS: Final[int] = 4  # slots per bucket (also in _table.c)


class DecisionCache:
    """Capacity- and TTL-bounded cache of fraud probabilities. Not thread-safe (one per worker).

    Raises ConfigError if ``capacity`` or ``ttl_s`` is negative or NaN, or ``capacity`` is above
    2**30 (0 disables the cache).
    """

    def __init__(
        self,
        capacity: int = 10_000,
        ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # `not >=` also refuses NaN, which would otherwise expire every entry at once.
        if not (MAX_CAPACITY >= capacity >= 0 and ttl_s >= 0):
            raise ConfigError(
                f"cache capacity must be in [0, 2**30] and TTL >= 0, got {capacity} and {ttl_s}"
            )
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        # At least 2 buckets: shifting a uint64 by 64 is undefined.
        bits = max((2 * capacity // WAYS - 1).bit_length(), 1)
        self._shift = 64 - bits
        buckets = (1 << bits) if capacity and ttl_s else 0
        # Slot b * WAYS + w is way w of bucket b.
        self._keys = np.zeros(buckets * WAYS, dtype=np.uint64)
        self._probabilities = np.zeros(buckets * WAYS, dtype=np.float64)
        self._stored_at = np.full(buckets * WAYS, -np.inf, dtype=np.float64)
        # The write counter's value when the slot was written: the order evictions follow
        # (0 = never written).
        self._written = np.zeros(buckets * WAYS, dtype=np.int64)
        self._writes = 0
        self._salts: dict[str, int] = {}

    @property
    def slots(self) -> int:
        """How many entries the table can hold (2 x ``capacity``, rounded up to a power of two)."""
        return self._keys.size

    def __len__(self) -> int:
        """Live (unexpired) entries."""
        return int(np.count_nonzero(self._stored_at > self._clock() - self.ttl_s))

    def lookup(
        self, model_sha256: str, digests: U64
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
        """Return ``(hit_mask, probabilities)`` for a batch of row digests; probabilities are 0
        where missed."""
        hit = np.zeros(len(digests), dtype=bool)
        found = np.zeros(len(digests), dtype=np.float64)
        if self.slots and len(digests):
            _table.lookup(
                self._keys,
                self._probabilities,
                self._stored_at,
                self._salt(model_sha256),
                self._shift,
                self._clock() - self.ttl_s,
                np.ascontiguousarray(digests, dtype=np.uint64),
                hit,
                found,
            )
        return hit, found

    def store(
        self, model_sha256: str, digests: U64, probabilities: npt.NDArray[np.float64]
    ) -> None:
        """Remember freshly scored probabilities (first score wins until it expires)."""
        if not self.slots or not len(digests):
            return
        if len(probabilities) != len(digests):
            raise ValueError(f"{len(digests)} digests but {len(probabilities)} probabilities")
        self._writes = _table.store(
            self._keys,
            self._probabilities,
            self._stored_at,
            self._written,
            self._salt(model_sha256),
            self._shift,
            self._clock(),
            self.ttl_s,
            self._writes,
            np.ascontiguousarray(digests, dtype=np.uint64),
            np.ascontiguousarray(probabilities, dtype=np.float64),
        )

    def _salt(self, model_sha256: str) -> int:
        """The model's 64-bit salt: keys are digest XOR salt, so models never share an entry."""
        salt = self._salts.get(model_sha256)
        if salt is None:
            salt = int.from_bytes(hashlib.blake2b(model_sha256.encode(), digest_size=8).digest())
            self._salts[model_sha256] = salt
        return salt
