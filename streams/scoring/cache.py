"""The local decision cache: recent fraud probabilities by (model sha256, feature-row digest).

A payment system that retries, or an upstream producer that redelivers, sends the same
transaction again within seconds; the cache answers those without another ONNX call. A score is
a pure function of (model, features), so the key is exactly that: the model's sha256 (a swap or
an A/B variant never serves another model's score, and a re-published version with other bytes
cannot either) and the 64-bit digest of the feature row (:mod:`streams.scoring.digest`). A retry
that reuses a transaction id with other features is scored afresh; an identical row under a new
id is a hit.

Entries expire ``ttl_s`` after they were scored (a hit does not extend them). The store is a
numpy table probed per batch, never per message in Python: buckets of 4 slots, ``2 x capacity``
slots rounded up to a power of two, each slot holding (key, probability, stored-at). A key hashes
(multiplicatively) to one bucket; a lookup gathers the batch's buckets in one call, a store puts
a new key into the least recently stored slot of its bucket. The table so keeps about the
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

U64 = npt.NDArray[np.uint64]
Slots = npt.NDArray[np.intp]
MAX_CAPACITY: Final[int] = 1 << 30
WAYS: Final[int] = 4  # slots per bucket
_HASH: Final[np.uint64] = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier (golden ratio)


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
        self._shift = np.uint64(64 - bits)
        buckets = (1 << bits) if capacity and ttl_s else 0
        # Slot b * WAYS + w is way w of bucket b; a (buckets, WAYS) view gathers whole buckets.
        self._keys = np.zeros(buckets * WAYS, dtype=np.uint64)
        self._probabilities = np.zeros(buckets * WAYS, dtype=np.float64)
        self._stored_at = np.full(buckets * WAYS, -np.inf, dtype=np.float64)
        # Which store() call wrote the slot: the recency order evictions follow (0 = never).
        self._written = np.zeros(buckets * WAYS, dtype=np.int64)
        self._stores = 0
        self._salts: dict[str, np.uint64] = {}

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
        if not self.slots:
            return np.zeros(len(digests), dtype=bool), np.zeros(len(digests), dtype=np.float64)
        keys, first = self._buckets(model_sha256, digests)
        held = self._held(keys, first, self._clock() - self.ttl_s)
        hit = np.any(held, axis=1)
        found = self._probabilities[first + held.argmax(axis=1)]
        return hit, np.where(hit, found, 0.0)

    def store(
        self, model_sha256: str, digests: U64, probabilities: npt.NDArray[np.float64]
    ) -> None:
        """Remember freshly scored probabilities (first score wins until it expires)."""
        if not self.slots or not len(digests):
            return
        keys, first = self._buckets(model_sha256, digests)
        now = self._clock()
        new = ~self._held(keys, first, now - self.ttl_s).any(axis=1)
        if not new.all():
            keys, first, probabilities = keys[new], first[new], probabilities[new]
        self._stores += 1
        written = self._written.reshape(-1, WAYS)
        # Each key takes its bucket's least recently written slot; keys of this batch that chose
        # the same slot as another retry on the slots this batch has not written yet.
        for _ in range(WAYS):
            slot = first + np.take(written, first // WAYS, axis=0).argmin(axis=1)
            self._keys[slot] = keys
            self._probabilities[slot] = probabilities
            self._stored_at[slot] = now
            self._written[slot] = self._stores
            lost = self._keys[slot] != keys
            if not lost.any():
                break
            keys, first, probabilities = keys[lost], first[lost], probabilities[lost]
            if (np.take(written, first // WAYS, axis=0) == self._stores).all():
                break  # every slot of their buckets holds a newer key of this batch

    def _held(self, keys: U64, first: Slots, live_after: float) -> npt.NDArray[np.bool_]:
        """``(n, WAYS)``: does each slot of each key's bucket hold that key, unexpired?"""
        bucket = first // WAYS
        held: npt.NDArray[np.bool_] = (
            np.take(self._keys.reshape(-1, WAYS), bucket, axis=0) == keys[:, None]
        ) & (np.take(self._stored_at.reshape(-1, WAYS), bucket, axis=0) > live_after)
        return held

    def _buckets(self, model_sha256: str, digests: U64) -> tuple[U64, Slots]:
        """The keys (digest salted by the model) and the first slot of each one's bucket."""
        salt = self._salts.get(model_sha256)
        if salt is None:
            salt = np.uint64(
                int.from_bytes(hashlib.blake2b(model_sha256.encode(), digest_size=8).digest())
            )
            self._salts[model_sha256] = salt
        keys = digests ^ salt
        # Array integer arithmetic wraps silently in numpy: multiplicative hashing, top bits.
        bucket = ((keys * _HASH) >> self._shift).astype(np.intp)
        return keys, bucket * WAYS
