"""score_batch: one model call per variant per batch, the cache in front, each variant's thresholds.

The fake models score a row as the value of one feature column, so a test chooses every
probability by choosing the features, and each call's input is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from schemas.features import N_FEATURES
from streams.scoring.batch import ALLOW, BLOCK, REVIEW, score_batch
from streams.scoring.cache import DecisionCache
from streams.scoring.digest import feature_digests
from streams.scoring.route import variant_b_mask


@dataclass
class FakeModel:
    """Scores a row as ``features[:, column]``; remembers the matrix of every call."""

    version: str
    block_threshold: float = 0.75
    review_threshold: float = 0.25
    column: int = 0
    manifest: Mapping[str, Any] = field(default_factory=dict)
    calls: list[npt.NDArray[np.float32]] = field(default_factory=list)
    sha256: str = ""

    def __post_init__(self) -> None:
        self.sha256 = self.sha256 or f"sha256-of-{self.version}"

    def predict_proba(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        self.calls.append(features.copy())
        return features[:, self.column].astype(np.float64)


@dataclass
class FakeServing:
    a: FakeModel
    b: FakeModel | None = None
    split_percent: int = 0


def batch(
    n: int, seed: int = 0, prefix: str = "tx"
) -> tuple[list[bytes], list[bytes], npt.NDArray[np.float32]]:
    """``n`` distinct transactions on ``n`` cards; columns 0 and 1 hold probabilities."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    features[:, :2] = rng.random((n, 2), dtype=np.float32)
    tx_ids = [f"{prefix}-{seed}-{i}".encode() for i in range(n)]
    cards = [f"card-{seed}-{i}".encode() for i in range(n)]
    return tx_ids, cards, features


def keys(features: npt.NDArray[np.float32]) -> npt.NDArray[np.uint64]:
    """The cache keys the scorer passes: digests of the rows as sent (float64)."""
    return feature_digests(features.astype(np.float64))


def cache() -> DecisionCache:
    return DecisionCache(capacity=10_000, ttl_s=3600.0)


def test_one_model_call_per_variant_per_batch_with_that_variants_rows() -> None:
    a, b = FakeModel("v1", column=0), FakeModel("v2", column=1)
    _, cards, features = batch(300)
    on_b = variant_b_mask(cards, 30)

    scored = score_batch(FakeServing(a, b, 30), cache(), keys(features), cards, features)

    assert len(a.calls) == 1 and len(b.calls) == 1
    np.testing.assert_array_equal(a.calls[0], features[~on_b])
    np.testing.assert_array_equal(b.calls[0], features[on_b])
    expected = np.where(on_b, features[:, 1], features[:, 0]).astype(np.float64)
    np.testing.assert_array_equal(scored.probability, expected)
    assert not scored.cache_hit.any()
    assert scored.model_versions == ["v1", "v2"]


def test_a_batch_of_cache_hits_calls_no_model_and_returns_the_fresh_scores() -> None:
    a, b = FakeModel("v1", column=0), FakeModel("v2", column=1)
    serving, shared = FakeServing(a, b, 30), cache()
    _, cards, features = batch(200)
    fresh = score_batch(serving, shared, keys(features), cards, features)

    again = score_batch(serving, shared, keys(features), cards, features)

    assert len(a.calls) == 1 and len(b.calls) == 1
    assert again.cache_hit.all()
    np.testing.assert_array_equal(again.probability, fresh.probability)
    np.testing.assert_array_equal(again.outcome, fresh.outcome)
    assert again.inference_seconds == [0.0, 0.0]


def test_only_the_misses_of_a_batch_are_scored() -> None:
    a = FakeModel("v1")
    serving, shared = FakeServing(a), cache()
    _, old_cards, old_features = batch(50, seed=1)
    first = score_batch(serving, shared, keys(old_features), old_cards, old_features)
    _, new_cards, new_features = batch(30, seed=2)
    # a redelivery of every other old transaction, interleaved with new ones
    cards = [*old_cards[::2], *new_cards]
    features = np.concatenate([old_features[::2], new_features])

    scored = score_batch(serving, shared, keys(features), cards, features)

    assert len(a.calls) == 2
    np.testing.assert_array_equal(a.calls[1], new_features)
    assert scored.cache_hit.tolist() == [True] * 25 + [False] * 30
    np.testing.assert_array_equal(scored.probability[:25], first.probability[::2])


def test_a_cached_score_is_not_served_to_another_model_version() -> None:
    a, b = FakeModel("v1", column=0), FakeModel("v2", column=1)
    shared = cache()
    _, cards, features = batch(40)
    score_batch(FakeServing(a, b, 0), shared, keys(features), cards, features)

    everything_on_b = score_batch(FakeServing(a, b, 100), shared, keys(features), cards, features)

    assert len(b.calls) == 1
    assert not everything_on_b.cache_hit.any()
    np.testing.assert_array_equal(everything_on_b.probability, features[:, 1].astype(np.float64))


@pytest.mark.parametrize("split", [0, 50], ids=["one-variant", "two-variants"])
def test_a_row_repeated_inside_a_batch_is_scored_once(split: int) -> None:
    a, b = FakeModel("v1", column=0), FakeModel("v2", column=1)
    _, uniq_cards, uniq_features = batch(40)
    order = [0, 1, 0, 2, 3, 1, 0, *range(4, 40)]  # tx 0 three times, tx 1 twice
    cards = [uniq_cards[i] for i in order]
    features = uniq_features[order]

    scored = score_batch(FakeServing(a, b, split), cache(), keys(features), cards, features)

    scored_rows = np.concatenate([a.calls[0], *b.calls]) if b.calls else a.calls[0]
    assert len(scored_rows) == 40  # the 40 distinct transactions, each once
    assert len(a.calls) == 1 and len(b.calls) == (1 if split else 0)
    assert scored.cache_hit.tolist()[:7] == [False, False, True, False, False, True, True]
    assert not scored.cache_hit[7:].any()
    for repeat, first in [(2, 0), (5, 1), (6, 0)]:
        assert scored.probability[repeat] == scored.probability[first]
        assert scored.outcome[repeat] == scored.outcome[first]


def test_a_repeat_of_a_cached_row_is_a_hit_like_its_first_copy() -> None:
    a = FakeModel("v1")
    shared = cache()
    _, cards, features = batch(3)
    first = score_batch(FakeServing(a), shared, keys(features), cards, features)

    scored = score_batch(
        FakeServing(a), shared, keys(features[[0, 0]]), [cards[0]] * 2, features[[0, 0]]
    )

    assert len(a.calls) == 1
    assert scored.cache_hit.tolist() == [True, True]
    assert scored.probability.tolist() == [first.probability[0]] * 2


def test_outcomes_follow_the_models_block_and_review_thresholds() -> None:
    a = FakeModel("v1", block_threshold=0.75, review_threshold=0.25)
    probabilities = [0.75, 0.7499, 0.5, 0.25, 0.2499, 0.0, 1.0]
    _, cards, features = batch(len(probabilities))
    features[:, 0] = probabilities

    scored = score_batch(FakeServing(a), cache(), keys(features), cards, features)

    assert scored.outcome.tolist() == [BLOCK, REVIEW, REVIEW, REVIEW, ALLOW, ALLOW, BLOCK]
    assert scored.block_threshold.tolist() == [0.75] * 7
    assert scored.review_threshold.tolist() == [0.25] * 7


def test_each_variant_is_judged_by_its_own_thresholds() -> None:
    a = FakeModel("v1", block_threshold=0.75, review_threshold=0.25, column=0)
    b = FakeModel("v2", block_threshold=0.5, review_threshold=0.125, column=0)
    _, cards, features = batch(400)
    features[:, 0] = np.resize(np.array([0.5, 0.2, 0.8, 0.1], dtype=np.float32), 400)
    on_b = variant_b_mask(cards, 50)

    scored = score_batch(FakeServing(a, b, 50), cache(), keys(features), cards, features)

    by_a = {0.5: REVIEW, 0.2: ALLOW, 0.8: BLOCK, 0.1: ALLOW}
    by_b = {0.5: BLOCK, 0.2: REVIEW, 0.8: BLOCK, 0.1: ALLOW}
    expected = [
        (by_b if b_row else by_a)[round(p, 6)]
        for p, b_row in zip(features[:, 0].tolist(), on_b.tolist(), strict=True)
    ]
    assert 0 < on_b.sum() < 400
    assert scored.outcome.tolist() == expected
    np.testing.assert_array_equal(scored.block_threshold, np.where(on_b, 0.5, 0.75))
    np.testing.assert_array_equal(scored.review_threshold, np.where(on_b, 0.125, 0.25))


@pytest.mark.parametrize("with_b", [False, True], ids=["no-b", "b-at-split-0"])
def test_without_a_split_every_row_is_variant_a(with_b: bool) -> None:
    a, b = FakeModel("v1"), FakeModel("v2")
    _, cards, features = batch(100)

    scored = score_batch(
        FakeServing(a, b if with_b else None, 0), cache(), keys(features), cards, features
    )

    assert not scored.variant.any()
    assert len(a.calls) == 1 and not b.calls
    assert scored.model_versions == (["v1", "v2"] if with_b else ["v1"])
    assert scored.inference_seconds[1:] == ([0.0] if with_b else [])


def test_with_a_split_the_b_rows_are_exactly_the_routed_cards() -> None:
    a, b = FakeModel("v1"), FakeModel("v2")
    _, cards, features = batch(1_000)

    scored = score_batch(FakeServing(a, b, 30), cache(), keys(features), cards, features)

    np.testing.assert_array_equal(scored.variant, variant_b_mask(cards, 30).astype(np.int8))
    assert 200 < scored.variant.sum() < 400


def test_an_empty_batch_scores_nothing() -> None:
    a = FakeModel("v1")
    _, cards, features = batch(0)

    scored = score_batch(FakeServing(a), cache(), keys(features), cards, features)

    assert scored.probability.shape == (0,) and scored.outcome.shape == (0,)
    assert not a.calls


def test_the_cache_is_keyed_by_content_not_by_transaction_id() -> None:
    a = FakeModel("v1")
    shared = cache()
    _, cards, features = batch(4)
    first = score_batch(FakeServing(a), shared, keys(features), cards, features)
    changed = features.copy()
    changed[1, 0] = 0.123  # a retry of transaction 1 with another feature row
    changed[3, 5] += 1.0  # a feature the fake model ignores: still another row

    scored = score_batch(FakeServing(a), shared, keys(changed), cards, changed)

    assert scored.cache_hit.tolist() == [True, False, True, False]
    np.testing.assert_array_equal(a.calls[1], changed[[1, 3]])
    assert scored.probability[1] == np.float32(0.123)
    assert scored.probability[0] == first.probability[0]


def test_two_bundles_with_one_version_name_but_other_bytes_share_no_entries() -> None:
    old, rebuilt = FakeModel("v1", column=0), FakeModel("v1", column=1, sha256="other-bytes")
    shared = cache()
    _, cards, features = batch(10)
    score_batch(FakeServing(old), shared, keys(features), cards, features)

    scored = score_batch(FakeServing(rebuilt), shared, keys(features), cards, features)

    assert not scored.cache_hit.any() and len(rebuilt.calls) == 1
    np.testing.assert_array_equal(scored.probability, features[:, 1].astype(np.float64))
