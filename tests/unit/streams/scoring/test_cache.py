"""The decision cache: scores keyed by (model sha256, row digest), bounded by TTL and size."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from schemas.errors import ConfigError
from streams.scoring.cache import DecisionCache


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def probs(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def rows(*names: bytes) -> np.ndarray:
    """Stand-in row digests: one distinct uint64 per name."""
    return np.array([zlib.crc32(name) for name in names], dtype=np.uint64)


def hits(cache: DecisionCache, version: str, *ids: bytes) -> list[bool]:
    hit, _ = cache.lookup(version, rows(*ids))
    return [bool(h) for h in hit]


def test_a_stored_probability_comes_back_for_the_same_model_and_row_only() -> None:
    cache = DecisionCache(capacity=10, ttl_s=2.0, clock=FakeClock())
    cache.store("v1", rows(b"tx-1", b"tx-2"), probs(0.25, 0.875))

    hit, found = cache.lookup("v1", rows(b"tx-2", b"tx-3", b"tx-1"))
    assert hit.tolist() == [True, False, True]
    assert found.tolist() == [0.875, 0.0, 0.25]
    assert hits(cache, "v2", b"tx-1", b"tx-2") == [False, False]


def test_an_entry_expires_exactly_ttl_after_it_was_stored() -> None:
    clock = FakeClock(100.0)
    cache = DecisionCache(capacity=10, ttl_s=2.0, clock=clock)
    cache.store("v1", rows(b"tx-1"), probs(0.5))

    clock.now = 101.999
    assert hits(cache, "v1", b"tx-1") == [True]
    clock.now = 102.0
    assert hits(cache, "v1", b"tx-1") == [False]
    assert len(cache) == 0


def test_a_hit_does_not_extend_the_ttl() -> None:
    clock = FakeClock(100.0)
    cache = DecisionCache(capacity=10, ttl_s=2.0, clock=clock)
    cache.store("v1", rows(b"tx-1"), probs(0.5))
    clock.now = 101.5
    assert hits(cache, "v1", b"tx-1") == [True]
    clock.now = 102.0
    assert hits(cache, "v1", b"tx-1") == [False]


def test_entries_stored_later_outlive_earlier_ones() -> None:
    clock = FakeClock(100.0)
    cache = DecisionCache(capacity=10, ttl_s=2.0, clock=clock)
    cache.store("v1", rows(b"early"), probs(0.1))
    clock.now = 101.0
    cache.store("v1", rows(b"late"), probs(0.2))
    clock.now = 102.5
    assert hits(cache, "v1", b"early", b"late") == [False, True]


def test_storing_again_does_not_replace_a_live_score() -> None:
    clock = FakeClock(100.0)
    cache = DecisionCache(capacity=10, ttl_s=2.0, clock=clock)
    cache.store("v1", rows(b"tx-1"), probs(0.25))
    clock.now = 101.0
    cache.store("v1", rows(b"tx-1"), probs(0.75))
    _, found = cache.lookup("v1", rows(b"tx-1"))
    assert found.tolist() == [0.25]
    clock.now = 102.0  # the first store's TTL, not the second's
    assert hits(cache, "v1", b"tx-1") == [False]


def test_the_table_keeps_about_the_capacity_most_recent_rows_and_never_grows() -> None:
    cache = DecisionCache(capacity=1000, ttl_s=3600.0, clock=FakeClock())
    assert cache.slots == 2048  # 2 x capacity, rounded up to a power of two
    digests = np.random.default_rng(7).integers(0, 2**63, size=20_000, dtype=np.uint64)
    for start in range(0, len(digests), 500):
        cache.store("v1", digests[start : start + 500], np.full(500, 0.5))

    assert len(cache) <= cache.slots
    recent, _ = cache.lookup("v1", digests[-1000:])
    oldest, _ = cache.lookup("v1", digests[:1000])
    assert recent.mean() >= 0.9
    assert oldest.mean() <= 0.01


def test_a_cache_far_from_full_keeps_every_row() -> None:
    cache = DecisionCache(capacity=10_000, ttl_s=60.0, clock=FakeClock())
    digests = np.random.default_rng(8).integers(0, 2**63, size=2_000, dtype=np.uint64)
    for start in range(0, len(digests), 400):
        cache.store("v1", digests[start : start + 400], np.full(400, 0.5))
    hit, _ = cache.lookup("v1", digests)
    assert hit.all() and len(cache) == 2_000


@pytest.mark.parametrize(("capacity", "ttl_s"), [(0, 2.0), (100, 0.0)])
def test_capacity_zero_or_ttl_zero_disables_the_cache(capacity: int, ttl_s: float) -> None:
    cache = DecisionCache(capacity=capacity, ttl_s=ttl_s, clock=FakeClock())
    cache.store("v1", rows(b"tx-1", b"tx-2"), probs(0.5, 0.6))
    assert len(cache) == 0  # nothing is held, not even until the next lookup
    assert hits(cache, "v1", b"tx-1", b"tx-2") == [False, False]


@pytest.mark.parametrize(
    ("capacity", "ttl_s"),
    [(-1, 2.0), (2**31, 2.0), (10, -0.5), (10, float("nan"))],
    ids=["cap", "huge", "ttl", "nan"],
)
def test_a_negative_or_nan_setting_is_a_config_error(capacity: int, ttl_s: float) -> None:
    with pytest.raises(ConfigError, match="cache"):
        DecisionCache(capacity=capacity, ttl_s=ttl_s)


def test_an_empty_lookup_returns_empty_arrays() -> None:
    hit, found = DecisionCache(clock=FakeClock()).lookup("v1", rows())
    assert hit.shape == (0,) and found.shape == (0,)
