"""The feature-row digest: equal rows collide, any change to a row does not."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.features import N_FEATURES
from streams.scoring.digest import feature_digests


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, N_FEATURES))


def test_equal_rows_get_equal_digests_in_any_batch() -> None:
    matrix = rows(50)
    alone = feature_digests(matrix[7:8])
    assert feature_digests(matrix)[7] == alone[0]
    assert feature_digests(matrix[[7, 3, 7]]).tolist() == [
        alone[0],
        feature_digests(matrix)[3],
        alone[0],
    ]
    assert feature_digests(matrix).dtype == np.uint64


def test_one_flipped_bit_anywhere_changes_the_digest() -> None:
    row = rows(1)
    words = np.repeat(row, N_FEATURES * 64, axis=0).view(np.uint64)
    for column in range(N_FEATURES):
        for bit in range(64):
            words[column * 64 + bit, column] ^= np.uint64(1 << bit)
    digests = feature_digests(words.view(np.float64))
    assert len(set(digests.tolist())) == N_FEATURES * 64
    assert int(feature_digests(row)[0]) not in set(digests.tolist())


def test_swapped_columns_and_signed_zero_are_other_rows() -> None:
    row = rows(1)
    swapped = row[:, [1, 0, *range(2, N_FEATURES)]]
    zeros, negative_zeros = np.zeros((1, N_FEATURES)), np.zeros((1, N_FEATURES))
    negative_zeros[0, 4] = -0.0
    assert feature_digests(row)[0] != feature_digests(swapped)[0]
    assert feature_digests(zeros)[0] != feature_digests(negative_zeros)[0]


def test_no_collision_among_200k_similar_rows() -> None:
    # Realistic near-duplicates: one base row, small changes in a few columns.
    rng = np.random.default_rng(1)
    matrix = np.repeat(rows(1), 200_000, axis=0)
    matrix[:, 28] = np.round(rng.uniform(0, 500, 200_000), 2)  # amounts in cents
    matrix[:, 3] += rng.integers(0, 4, 200_000) * 1e-9
    distinct = len({row.tobytes() for row in matrix})
    assert len(set(feature_digests(matrix).tolist())) == distinct


@pytest.mark.parametrize(
    "bad", [np.zeros((3, N_FEATURES), np.float32), np.zeros((3, N_FEATURES - 1)), np.zeros(3)]
)
def test_another_shape_or_dtype_is_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="float64 matrix"):
        feature_digests(bad)
