"""Cost-based decision thresholds and the metrics that describe them.

A transaction is BLOCKed when its fraud probability is >= the block threshold, sent to REVIEW when
it is >= the review threshold (<= block), and ALLOWed otherwise. The block threshold minimises the
expected cost on validation data, where a missed fraud costs its Amount and a false alarm costs a
fixed review cost; caught frauds cost nothing. Thresholds are placed midway between two adjacent
validation scores, so a 1e-7 difference between XGBoost and ONNX Runtime cannot flip a decision
the optimiser saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CostCurve:
    """Expected cost of flagging every score >= ``thresholds[i]``, for each candidate threshold.

    ``thresholds`` descend; the first entry (above every score) flags nothing.
    """

    thresholds: np.ndarray
    costs: np.ndarray
    flagged: np.ndarray


def expected_cost(
    probabilities: np.ndarray,
    labels: np.ndarray,
    amounts: np.ndarray,
    threshold: float,
    review_cost: float,
) -> float:
    """Cost of flagging ``probabilities >= threshold``: missed fraud amounts + alarms x cost."""
    flagged = probabilities >= threshold
    fraud = labels == 1
    missed = float(amounts[fraud & ~flagged].sum())
    false_alarms = int((flagged & ~fraud).sum())
    return missed + false_alarms * review_cost


def cost_curve(
    probabilities: np.ndarray, labels: np.ndarray, amounts: np.ndarray, review_cost: float
) -> CostCurve:
    """The cost at every distinct score as threshold, in one sort and two cumulative sums."""
    scores = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    fraud = labels[order] == 1
    caught_amount = np.cumsum(np.where(fraud, amounts[order], 0.0))
    false_alarms = np.cumsum(~fraud)
    # The last position of each run of equal scores: flagging ">= that score" flags the whole run.
    run_end = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
    total_fraud_amount = float(caught_amount[-1]) if len(caught_amount) else 0.0
    costs = total_fraud_amount - caught_amount[run_end] + false_alarms[run_end] * review_cost
    top = float(sorted_scores[0]) if len(sorted_scores) else 1.0
    return CostCurve(
        thresholds=np.concatenate([[np.nextafter(max(top, 1.0), np.inf)], sorted_scores[run_end]]),
        costs=np.concatenate([[total_fraud_amount], costs]),
        flagged=np.concatenate([[0], run_end + 1]),
    )


def _midpoint_below(scores: np.ndarray, chosen: float) -> float:
    """Halfway between ``chosen`` and the next lower distinct score (or 0 below the lowest)."""
    lower = scores[scores < chosen]
    below = float(lower.max()) if len(lower) else 0.0
    return (chosen + below) / 2.0


def block_threshold(
    probabilities: np.ndarray, labels: np.ndarray, amounts: np.ndarray, review_cost: float
) -> float:
    """The block threshold with the lowest expected cost (ties: the higher threshold).

    Returns a value strictly between the lowest flagged score and the highest unflagged one; if
    flagging nothing is cheapest, a value above every score (at most just above 1.0).
    """
    curve = cost_curve(probabilities, labels, amounts, review_cost)
    best = int(np.argmin(curve.costs))  # first minimum = highest threshold
    if best == 0:
        return float(curve.thresholds[0])
    return _midpoint_below(np.asarray(probabilities, np.float64), float(curve.thresholds[best]))


def review_threshold(probabilities: np.ndarray, block: float, review_budget: float) -> float:
    """The lower edge of the REVIEW band: the highest-scoring ``review_budget`` share of the
    traffic below the block threshold goes to manual review. A zero budget gives ``block``.
    """
    scores = np.sort(np.asarray(probabilities, np.float64)[probabilities < block])[::-1]
    band = int(np.floor(review_budget * len(probabilities)))
    if band <= 0 or len(scores) == 0:
        return block
    chosen = float(scores[min(band, len(scores)) - 1])
    return min(_midpoint_below(scores, chosen), block)


def decision_metrics(
    probabilities: np.ndarray,
    labels: np.ndarray,
    amounts: np.ndarray,
    block: float,
    review: float,
    review_cost: float,
) -> dict[str, Any]:
    """The manifest's metrics block for one split: ranking quality, the decision at the block
    threshold (confusion matrix [[tn, fp], [fn, tp]], precision, recall), and its cost against
    the naive 0.5 threshold (``saving`` = cost_at_0_5 - cost_at_block, in Amount units).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    flagged = probabilities >= block
    fraud = labels == 1
    tp = int((flagged & fraud).sum())
    fp = int((flagged & ~fraud).sum())
    fn = int((~flagged & fraud).sum())
    tn = int((~flagged & ~fraud).sum())
    cost_at_block = expected_cost(probabilities, labels, amounts, block, review_cost)
    cost_at_half = expected_cost(probabilities, labels, amounts, 0.5, review_cost)
    reviewed = (probabilities >= review) & ~flagged
    return {
        "pr_auc": float(average_precision_score(labels, probabilities)),
        "roc_auc": float(roc_auc_score(labels, probabilities)),
        "precision_at_block": tp / (tp + fp) if tp + fp else 0.0,
        "recall_at_block": tp / (tp + fn) if tp + fn else 0.0,
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "cost_at_block": cost_at_block,
        "cost_at_0_5": cost_at_half,
        "saving": cost_at_half - cost_at_block,
        "fraud_amount": float(amounts[fraud].sum()),
        "review_share": float(reviewed.mean()),
        "frauds_in_review": int((reviewed & fraud).sum()),
        "rows": len(labels),
        "frauds": int(fraud.sum()),
    }


def stable_block_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    amounts: np.ndarray,
    fold_ids: np.ndarray,
    review_cost: float,
) -> float:
    """The block threshold by the one-standard-error rule over cross-validation folds.

    ``probabilities`` are out-of-fold scores and ``fold_ids`` the fold that scored each row.
    Each fold gives its own cost curve. Against the threshold with the lowest mean cost, every
    candidate has a per-fold extra cost; the chosen threshold is the *highest* one whose mean
    extra cost is within one standard error of it (fold spread / sqrt(folds)): a lower threshold
    that is cheaper by less than the folds disagree, typically thanks to one or two large frauds
    in one fold, costs many false alarms on new data for a saving that does not repeat. Seen on
    the full-size synthetic set: the plain minimum on out-of-fold scores gave 0.038 (test
    precision 0.74, saving -132); the same model at 0.1-0.5 had precision 0.95-1.0 at the same
    recall. Falls back to :func:`block_threshold` with a single fold. Placed midway between
    scores.
    """
    scores = np.asarray(probabilities, dtype=np.float64)
    folds = np.unique(fold_ids)
    if len(folds) < 2:
        return block_threshold(scores, labels, amounts, review_cost)
    overall = cost_curve(scores, labels, amounts, review_cost)
    candidates = overall.thresholds  # descending; [0] flags nothing
    per_fold = np.empty((len(folds), len(candidates)))
    for row, fold in enumerate(folds):
        mine = fold_ids == fold
        curve = cost_curve(scores[mine], labels[mine], amounts[mine], review_cost)
        # Cost of flagging ">= t" in this fold = the cost at its lowest own threshold >= t.
        ascending = curve.thresholds[::-1]
        at = np.searchsorted(ascending, candidates, side="left")
        at = np.minimum(at, len(ascending) - 1)
        per_fold[row] = curve.costs[::-1][at]
    best = int(np.argmin(per_fold.mean(axis=0)))
    # Paired across folds: each fold's extra cost of a candidate over the minimum.
    extra = per_fold - per_fold[:, [best]]
    se = extra.std(axis=0, ddof=1) / np.sqrt(len(folds))
    chosen = int(np.flatnonzero(extra.mean(axis=0) <= se)[0])  # first = highest threshold
    if chosen == 0:
        return float(candidates[0])
    return _midpoint_below(scores, float(candidates[chosen]))
