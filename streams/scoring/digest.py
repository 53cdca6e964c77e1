"""The 64-bit content digest of a feature row: what the decision cache is keyed by.

A fraud probability is a pure function of (model, feature row), so the cache key is
(model sha256, digest of the row): a retry under the same transaction id with *other* features
is scored afresh, and an exact repeat under a *new* id is answered from the cache. The row is
the float64 values as sent (``TransactionBatch.features_f64``), which determine the float32 model
input; two rows differing only below float32 precision get different keys, which costs a miss,
never a wrong score.

The hash, per batch, one C loop over the rows (no per-row Python):

1. view the ``(n, 29)`` float64 rows as uint64 bit patterns (no copy);
2. mix every word on its own: fold its high half into the low one (``x = w ^ (w >> 32)``, so
   sign and exponent bits reach the low bits a multiply spreads upwards), multiply by the
   column's own odd 64-bit constant ``K[j]`` (equal values in different columns, or swapped
   columns, hash differently), then one xorshift-multiply step (``x ^= x >> 29; x *= M``,
   ``M = 0xBF58476D1CE4E5B9``); each step is a bijection on 64-bit words;
3. add the mixed columns (wrapping uint64 sum). No finaliser: a bijection after the sum could
   not make two colliding sums differ, and the digest is only a dict key.

Step 2 must diffuse well *before* the sum: with a multiply alone, flipping the top bit of any
column changes its term by nearly the same amount whatever the column, and such rows collide
(``tests/unit/streams/scoring/test_digest.py`` flips every bit of a row and checks all differ).

It is not a cryptographic hash: someone who controls a transaction could in principle craft a
row colliding with another *known* row of the next ``ttl_s`` seconds. For accidental collisions
the chance is about n**2 / 2**65 within one cache's contents (10,000 entries: ~3e-12).
Measured cost: ``bench/digest_bench.py``.
The digest is part of no wire format: it may change between releases (caches are per process).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from schemas.features import N_FEATURES
from streams.scoring import _table

U64 = npt.NDArray[np.uint64]

# Odd per-column multipliers drawn once from a fixed seed (any odd constants would do; fixed so
# the digest is the same in every process and test run).
_COLUMN_KEYS: Final[U64] = (
    np.random.default_rng(0x5E171E1).integers(0, 2**63, size=N_FEATURES, dtype=np.uint64) * 2 + 1
).astype(np.uint64)


def feature_digests(rows: npt.NDArray[np.float64]) -> U64:
    """The 64-bit digest of each row of an ``(n, N_FEATURES)`` float64 matrix (the loop is C,
    ``streams/scoring/_table.c``).

    Equal rows (bit for bit) give equal digests; ``-0.0`` and ``0.0``, or two NaN payloads, are
    different rows. Raises ValueError for another shape or dtype.
    """
    if rows.dtype != np.float64 or rows.ndim != 2 or rows.shape[1] != N_FEATURES:
        raise ValueError(
            f"expected a (n, {N_FEATURES}) float64 matrix, got {rows.shape} {rows.dtype}"
        )
    digests = np.empty(len(rows), dtype=np.uint64)
    _table.digest_rows(np.ascontiguousarray(rows), _COLUMN_KEYS, digests)
    return digests
