"""The model's feature layout and its validation: the ONE place training and serving share.

The model scores 29 features in this order: the 28 PCA components ``V1``..``V28`` of the Kaggle
credit-card set, then ``Amount``. ``Time`` (seconds since the first row of a two-day capture) is
deliberately not a feature: it means nothing for a live stream, where the replayer stamps event
time = now.

Both ``training`` (building the matrix from a CSV) and ``streams`` (building it from decoded
``Transaction`` records) import :data:`FEATURE_NAMES` and :func:`invalid_rows`, so the order and the
validity rules cannot drift apart.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

PCA_FEATURES: Final[tuple[str, ...]] = tuple(f"V{i}" for i in range(1, 29))
FEATURE_NAMES: Final[tuple[str, ...]] = (*PCA_FEATURES, "Amount")
N_FEATURES: Final[int] = len(FEATURE_NAMES)
N_PCA_FEATURES: Final[int] = len(PCA_FEATURES)

# Columns of the Kaggle CSV (training input); Time and Class are not model features.
CSV_COLUMNS: Final[tuple[str, ...]] = ("Time", *PCA_FEATURES, "Amount", "Class")

# "Absurd" bounds. The real data's PCA components stay within about +-121 and amounts below
# 25,700; values far outside are corrupt input, not fraud, and must not reach the model.
PCA_ABS_LIMIT: Final[float] = 1_000.0
AMOUNT_MAX: Final[float] = 1_000_000.0


def invalid_rows(matrix: npt.NDArray[np.floating]) -> list[tuple[int, str]]:
    """Validate a feature matrix of shape ``(n, N_FEATURES)`` in :data:`FEATURE_NAMES` order.

    Returns ``(row_index, reason)`` for every row that must not be scored: non-finite values
    (NaN, Inf), PCA components beyond +-:data:`PCA_ABS_LIMIT`, a negative amount or one above
    :data:`AMOUNT_MAX`. Vectorised: the cost is a few numpy passes per batch, not per row.
    Raises ``ValueError`` if the matrix does not have ``N_FEATURES`` columns.
    """
    if matrix.ndim != 2 or matrix.shape[1] != N_FEATURES:
        raise ValueError(f"expected a (n, {N_FEATURES}) feature matrix, got shape {matrix.shape}")
    pca = matrix[:, :N_PCA_FEATURES]
    amount = matrix[:, N_PCA_FEATURES]
    if matrix.shape[0] == 0:
        return []
    # Fast path for the usual all-good batch: three reductions (a NaN fails every comparison).
    if np.abs(pca).max() <= PCA_ABS_LIMIT and amount.min() >= 0 and amount.max() <= AMOUNT_MAX:
        return []
    finite = np.isfinite(matrix)
    with np.errstate(invalid="ignore"):
        pca_absurd = np.abs(pca) > PCA_ABS_LIMIT
        amount_absurd = (amount < 0) | (amount > AMOUNT_MAX)
    bad = ~finite.all(axis=1) | pca_absurd.any(axis=1) | amount_absurd
    problems: list[tuple[int, str]] = []
    for row in np.flatnonzero(bad):
        if not finite[row].all():
            col = int(np.flatnonzero(~finite[row])[0])
            problems.append((int(row), f"{FEATURE_NAMES[col]} is {matrix[row, col]} (not finite)"))
        elif pca_absurd[row].any():
            col = int(np.flatnonzero(pca_absurd[row])[0])
            problems.append(
                (int(row), f"{FEATURE_NAMES[col]}={matrix[row, col]:g} beyond +-{PCA_ABS_LIMIT:g}")
            )
        else:
            problems.append((int(row), f"Amount={amount[row]:g} outside [0, {AMOUNT_MAX:g}]"))
    return problems
