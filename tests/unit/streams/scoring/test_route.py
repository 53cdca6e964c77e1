"""Sticky A/B routing: a card gets the same variant everywhere; splits only move cards A->B."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from streams.scoring.route import card_buckets, variant_b_mask

# Computed once from the shipped hash. If these change, every live A/B test would re-route its
# cards on the next deploy: a contract break, not a refactoring.
EXPECTED_BUCKETS = {
    b"card-0000001": 9543,
    b"card-0000002": 5464,
    b"4111111111111111": 6562,
    "carte-\u00e9".encode(): 370,
}


def random_card_ids(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(8).hex().encode() for _ in range(n)]


def test_buckets_match_the_published_values() -> None:
    ids = list(EXPECTED_BUCKETS)
    assert card_buckets(ids).tolist() == list(EXPECTED_BUCKETS.values())


def test_buckets_are_the_same_in_another_process_with_another_hash_seed() -> None:
    ids = random_card_ids(50)
    script = (
        "import json, sys; from streams.scoring.route import card_buckets; "
        "ids = [i.encode() for i in json.load(sys.stdin)]; "
        "print(json.dumps(card_buckets(ids).tolist()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([i.decode() for i in ids]),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(done.stdout) == card_buckets(ids).tolist()


def test_thirty_percent_of_cards_go_to_b() -> None:
    ids = random_card_ids(5_000)
    share = variant_b_mask(ids, 30).mean()
    assert 0.27 <= share <= 0.33


@pytest.mark.parametrize("pattern", ["{}", "card-{:07d}", "c{}"])
def test_sequential_ids_split_evenly_too(pattern: str) -> None:
    ids = [pattern.format(i).encode() for i in range(20_000)]
    share = variant_b_mask(ids, 30).mean()
    assert 0.285 <= share <= 0.315


def test_a_card_keeps_its_variant_whatever_the_batch_around_it() -> None:
    ids = random_card_ids(2_000)
    alone = {card: bool(variant_b_mask([card], 40)[0]) for card in ids[:200]}
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    in_batch = dict(zip(shuffled, variant_b_mask(shuffled, 40).tolist(), strict=True))
    assert all(in_batch[card] == variant for card, variant in alone.items())


def test_raising_the_split_only_moves_cards_from_a_to_b() -> None:
    ids = random_card_ids(3_000)
    previous = variant_b_mask(ids, 0)
    for percent in (1, 5, 10, 25, 30, 50, 75, 99, 100):
        current = variant_b_mask(ids, percent)
        assert not (previous & ~current).any(), f"a card left B when the split rose to {percent}"
        assert current.sum() >= previous.sum()
        previous = current


def test_zero_and_hundred_route_everything_without_exception() -> None:
    ids = [*random_card_ids(100), b""]
    assert not variant_b_mask(ids, 0).any()
    assert variant_b_mask(ids, 100).all()
    assert variant_b_mask([], 30).shape == (0,)
    assert variant_b_mask(ids, 50).dtype == np.bool_


@pytest.mark.parametrize("bad", [-1, 101, 30.0, True])
def test_a_split_outside_0_to_100_or_not_an_int_is_a_programming_error(bad: object) -> None:
    with pytest.raises(ValueError, match="split_percent"):
        variant_b_mask([b"card"], bad)  # type: ignore[arg-type]
