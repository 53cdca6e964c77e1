"""The local decision cache: recent fraud probabilities by (model sha256, feature-row digest).

A payment system that retries, or an upstream producer that redelivers, sends the same
transaction again within seconds; the cache answers those without another ONNX call. A score is
a pure function of (model, features), so the key is exactly that: the model's sha256 (a swap or
an A/B variant never serves another model's score, and a re-published version with other bytes
cannot either) and the 64-bit digest of the feature row (:mod:`streams.scoring.digest`). A retry
that reuses a transaction id with other features is scored afresh; an identical row under a new
id is a hit.

Entries expire ``ttl_s`` after they were scored (a hit does not extend them) and the oldest go
first when ``capacity`` is exceeded. Because every entry lives exactly ``ttl_s`` and entries are
inserted in time order, insertion order is expiry order: one purge from the front per batch keeps
the dict exact, and lookups need no clock.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from schemas.errors import ConfigError


class DecisionCache:
    """Capacity- and TTL-bounded cache of fraud probabilities. Not thread-safe (one per worker).

    Raises ConfigError if ``capacity`` or ``ttl_s`` is negative or NaN (0 disables the cache).
    """

    def __init__(
        self,
        capacity: int = 10_000,
        ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # `not >=` also refuses NaN, which would otherwise expire every entry at once.
        if not (capacity >= 0 and ttl_s >= 0):
            raise ConfigError(f"cache capacity and TTL must be >= 0, got {capacity} and {ttl_s}")
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        # (model sha256, row digest) -> (probability, scored_at); insertion order == expiry order
        self._entries: dict[tuple[str, int], tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(
        self, model_sha256: str, digests: npt.NDArray[np.uint64]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
        """Return ``(hit_mask, probabilities)`` for a batch of row digests; probabilities are 0
        where missed."""
        self._purge()
        entries = self._entries
        found = [entries.get((model_sha256, digest)) for digest in digests.tolist()]
        hit = np.fromiter((f is not None for f in found), dtype=bool, count=len(found))
        probs = np.fromiter(
            (f[0] if f is not None else 0.0 for f in found), dtype=np.float64, count=len(found)
        )
        return hit, probs

    def store(
        self,
        model_sha256: str,
        digests: npt.NDArray[np.uint64],
        probabilities: npt.NDArray[np.float64],
    ) -> None:
        """Remember freshly scored probabilities (first score wins until it expires)."""
        if self.capacity == 0 or self.ttl_s == 0:
            return
        now = self._clock()
        entries = self._entries
        for digest, prob in zip(digests.tolist(), probabilities.tolist(), strict=True):
            entries.setdefault((model_sha256, digest), (prob, now))
        overflow = len(entries) - self.capacity
        if overflow > 0:
            for key in list(itertools.islice(entries, overflow)):
                del entries[key]

    def _purge(self) -> None:
        deadline = self._clock() - self.ttl_s
        entries = self._entries
        expired = []
        for key, (_, scored_at) in entries.items():
            if scored_at > deadline:
                break
            expired.append(key)
        for key in expired:
            del entries[key]
