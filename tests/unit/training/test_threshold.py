"""The cost-based threshold optimiser, checked against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from training.threshold import (
    block_threshold,
    cost_curve,
    decision_metrics,
    expected_cost,
    review_threshold,
    stable_block_threshold,
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
    block = block_threshold(PROBS, LABELS, AMOUNTS, review_cost=5.0)
    assert block == pytest.approx(0.45)  # between 0.6 (flagged) and 0.3 (not flagged)
    assert expected_cost(PROBS, LABELS, AMOUNTS, block, 5.0) == 7.0


def test_a_higher_review_cost_moves_the_threshold_up() -> None:
    # Review cost 60: t=0.9 costs 52, t=0.6 costs 2 + 60 = 62, so only the top score is flagged.
    assert block_threshold(PROBS, LABELS, AMOUNTS, review_cost=60.0) == pytest.approx(0.85)


def test_equal_scores_are_flagged_together() -> None:
    probs = np.array([0.7, 0.7, 0.2])
    labels = np.array([1, 0, 0])
    curve = cost_curve(probs, labels, np.array([30.0, 1.0, 1.0]), review_cost=5.0)
    assert curve.costs.tolist() == [30.0, 5.0, 10.0]  # the tie at 0.7 is one candidate


def test_when_no_flag_pays_off_nothing_is_blocked() -> None:
    probs = np.array([0.9, 0.5])
    labels = np.array([0, 1])
    block = block_threshold(probs, labels, np.array([1.0, 1.0]), review_cost=5.0)
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


def test_the_stable_threshold_ignores_a_saving_that_one_fold_alone_makes() -> None:
    # Three folds alike: frauds score 0.9, legit below 0.1 and 40 of them at 0.2-0.3. Fold 0
    # also holds one large fraud at 0.1: catching it flags 3 x 40 legit rows (800 saved in one
    # fold, 600 paid across all three), so the plain minimum flags >= 0.1; the saving is one
    # fold's luck, and the one-standard-error rule keeps the threshold above 0.3.
    rng = np.random.default_rng(0)
    scores, labels, amounts, folds = [], [], [], []
    for fold in range(3):
        legit = np.concatenate([rng.uniform(0.05, 0.0999, 200), rng.uniform(0.2, 0.3, 40)])
        scores += [*legit, *[0.9] * 5]
        labels += [0] * len(legit) + [1] * 5
        amounts += [10.0] * len(legit) + [100.0] * 5
        folds += [fold] * (len(legit) + 5)
        if fold == 0:
            scores.append(0.1)
            labels.append(1)
            amounts.append(800.0)
            folds.append(0)
    args = (np.array(scores), np.array(labels), np.array(amounts))
    plain = block_threshold(*args, review_cost=5.0)
    stable = stable_block_threshold(*args, np.array(folds), review_cost=5.0)
    assert plain < 0.1 < 0.3 < stable < 0.9
    assert stable_block_threshold(*args, np.zeros(len(scores)), review_cost=5.0) == plain
