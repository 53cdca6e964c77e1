"""The local decision cache: recent fraud probabilities by (model version, transaction id).

A payment system that retries, or an upstream producer that redelivers, sends the same
transaction again within seconds; the cache answers those without another ONNX call. The key
includes the model version, so a swap or an A/B variant never serves another model's score.

Entries expire ``ttl_s`` after they were scored (a hit does not extend them) and the oldest go
first when ``capacity`` is exceeded. Because every entry lives exactly ``ttl_s`` and entries are
inserted in time order, insertion order is expiry order: one purge from the front per batch keeps
the dict exact, and lookups need no clock.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

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
        # key -> (probability, scored_at); insertion order == expiry order
        self._entries: dict[tuple[str, bytes], tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(
        self, model_version: str, transaction_ids: Sequence[bytes]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
        """Return ``(hit_mask, probabilities)`` for a batch; probabilities are 0 where missed."""
        self._purge()
        entries = self._entries
        found = [entries.get((model_version, tx)) for tx in transaction_ids]
        hit = np.fromiter((f is not None for f in found), dtype=bool, count=len(found))
        probs = np.fromiter(
            (f[0] if f is not None else 0.0 for f in found), dtype=np.float64, count=len(found)
        )
        return hit, probs

    def store(
        self,
        model_version: str,
        transaction_ids: Sequence[bytes],
        probabilities: npt.NDArray[np.float64],
    ) -> None:
        """Remember freshly scored probabilities (first score wins until it expires)."""
        if self.capacity == 0 or self.ttl_s == 0:
            return
        now = self._clock()
        entries = self._entries
        for tx, prob in zip(transaction_ids, probabilities.tolist(), strict=True):
            entries.setdefault((model_version, tx), (prob, now))
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
