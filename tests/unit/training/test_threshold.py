"""The cost-based threshold optimiser, checked against hand-computed cases (the exact step
curve, ``spread=0``) and against the failure the smoothing exists for (the default)."""

from __future__ import annotations

import numpy as np
import pytest

from training.threshold import (
    block_threshold,
    cost_curve,
    decision_metrics,
    expected_cost,
    review_threshold,
    smoothed_cost_curve,
)

# Five validation rows, review cost 5. Flagging p >= t costs (missed fraud amounts) + 5 x alarms:
#   flag nothing: 100 + 50 + 2        = 152
#   t = 0.9:      50 + 2              = 52
#   t = 0.8:      50 + 2 + 5 (alarm)  = 57
#   t = 0.6:      2 + 5               = 7    <- cheapest
#   t = 0.3:      2 + 10              = 12
#   t = 0.1:      0 + 10              = 10
PROBS = np.array([0.9, 0.8, 0.6, 0.3, 0.1])
LABELS = np.array([1, 0, 1, 0, 1])
AMOUNTS = np.array([100.0, 10.0, 50.0, 10.0, 2.0])


def test_cost_curve_matches_the_hand_computation() -> None:
    curve = cost_curve(PROBS, LABELS, AMOUNTS, review_cost=5.0)
    assert curve.costs.tolist() == [152.0, 52.0, 57.0, 7.0, 12.0, 10.0]
    assert curve.thresholds[1:].tolist() == [0.9, 0.8, 0.6, 0.3, 0.1]
    assert curve.flagged.tolist() == [0, 1, 2, 3, 4, 5]


def test_block_threshold_is_midway_below_the_cheapest_score() -> None:
    block = block_threshold(PROBS, LABELS, AMOUNTS, review_cost=5.0, spread=0.0)
    assert block == pytest.approx(0.45)  # between 0.6 (flagged) and 0.3 (not flagged)
    assert expected_cost(PROBS, LABELS, AMOUNTS, block, 5.0) == 7.0


def test_a_higher_review_cost_moves_the_threshold_up() -> None:
    # Review cost 60: t=0.9 costs 52, t=0.6 costs 2 + 60 = 62, so only the top score is flagged.
    assert block_threshold(PROBS, LABELS, AMOUNTS, 60.0, spread=0.0) == pytest.approx(0.85)


def test_equal_scores_are_flagged_together() -> None:
    probs = np.array([0.7, 0.7, 0.2])
    labels = np.array([1, 0, 0])
    curve = cost_curve(probs, labels, np.array([30.0, 1.0, 1.0]), review_cost=5.0)
    assert curve.costs.tolist() == [30.0, 5.0, 10.0]  # the tie at 0.7 is one candidate


@pytest.mark.parametrize("spread", [0.0, 1.5])
def test_when_no_flag_pays_off_nothing_is_blocked(spread: float) -> None:
    probs = np.array([0.9, 0.5])
    labels = np.array([0, 1])
    block = block_threshold(probs, labels, np.array([1.0, 1.0]), 5.0, spread=spread)
    assert block > 1.0
    assert not (probs >= block).any()


def test_review_band_takes_the_budget_just_below_block() -> None:
    scores = np.array([0.95, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02])
    # Budget 20% of 10 rows = 2 rows below block 0.9: 0.5 and 0.4; edge midway to 0.3.
    assert review_threshold(scores, block=0.9, review_budget=0.2) == pytest.approx(0.35)
    assert review_threshold(scores, block=0.9, review_budget=0.0) == 0.9


def test_decision_metrics_on_the_hand_case() -> None:
    metrics = decision_metrics(PROBS, LABELS, AMOUNTS, block=0.45, review=0.2, review_cost=5.0)
    assert metrics["confusion_matrix"] == [[1, 1], [1, 2]]
    assert metrics["precision_at_block"] == pytest.approx(2 / 3)
    assert metrics["recall_at_block"] == pytest.approx(2 / 3)
    assert metrics["cost_at_block"] == 7.0
    # At 0.5: flags 0.9, 0.8, 0.6 -> misses 2, one alarm: 7 as well; saving 0.
    assert metrics["cost_at_0_5"] == 7.0 and metrics["saving"] == 0.0
    assert metrics["review_share"] == pytest.approx(0.2)  # the 0.3 row
    assert (metrics["rows"], metrics["frauds"]) == (5, 3)


def _crowd_and_one_large_fraud() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """50 frauds at 0.95 (amount 100); 20,000 legit rows far below and a crowd of 1,000 at
    0.2-0.3; one fraud of 800 at 0.31, just above the crowd."""
    rng = np.random.default_rng(0)
    legit = np.concatenate([rng.uniform(0.001, 0.01, 20_000), rng.uniform(0.2, 0.3, 1_000)])
    scores = np.concatenate([legit, [0.95] * 50, [0.31]])
    labels = np.concatenate([np.zeros(len(legit), np.int64), np.ones(51, np.int64)])
    amounts = np.concatenate([np.full(len(legit), 10.0), [100.0] * 50, [800.0]])
    return scores, labels, amounts


def test_the_smoothed_cost_does_not_chase_one_large_fraud_into_a_crowd() -> None:
    # The exact minimum slips the threshold between the large fraud (0.31) and the crowd just
    # below it (<= 0.3): free on these scores. A refit moves scores by ~1.5 log-odds, so on new
    # data that threshold flags a good part of the crowd; the smoothed cost sees it and stays
    # well above, flagging the 50 clear frauds only.
    scores, labels, amounts = _crowd_and_one_large_fraud()
    exact = block_threshold(scores, labels, amounts, 5.0, spread=0.0)
    smoothed = block_threshold(scores, labels, amounts, 5.0)
    assert 0.3 < exact < 0.31
    assert 0.5 < smoothed < 0.95
    assert ((scores >= smoothed) == (scores == 0.95)).all()


def test_the_smoothed_curve_tends_to_the_exact_one() -> None:
    scores, labels, amounts = _crowd_and_one_large_fraud()
    curve = smoothed_cost_curve(scores, labels, amounts, 5.0, spread=1e-3)
    assert curve.thresholds[0] > 1.0 and curve.costs[0] == amounts[labels == 1].sum()
    assert (np.diff(curve.thresholds) < 0).all()
    for threshold in (0.5, 0.305, 0.1):
        at = int(np.argmin(np.abs(curve.thresholds - threshold)))
        exact = expected_cost(scores, labels, amounts, float(curve.thresholds[at]), 5.0)
        assert curve.costs[at] == pytest.approx(exact, abs=1.0)
