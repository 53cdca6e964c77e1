"""The imbalance study and the final fit, both cross-validated so small data cannot fool them.

Three ways to handle rare frauds are compared by PR-AUC (the metric that matters when positives
are rare): no weighting, XGBoost's ``scale_pos_weight`` (the negative/positive ratio), and SMOTE
oversampling of the training frauds (imbalanced-learn).

Why cross-validation: one 20% validation split of a small or rare-fraud set holds a handful of
frauds, and a single split then decides the winner, the number of trees (an early stop at 4
trees was seen on a 100k-row set). So the study runs a stratified K-fold over the *fit* rows
(everything but the test and calibration splits: training.data.fit_and_calibration), the same
folds for every method:

* each fold fits on K-1 parts (SMOTE resamples only those) with early stopping on the held-out
  part, up to ``max_rounds``;
* a method's number of trees is the median of its folds' best iterations, never below
  ``min_rounds``; its fold PR-AUCs are measured at that many trees, and their mean and spread
  (standard deviation) are reported;
* the winner is the method with the highest mean fold PR-AUC (first listed wins a tie);
* the final model is the winner refit on all the fit rows with that many trees (no early
  stopping, so nothing depends on one split). The thresholds are chosen on the scores of the
  model that serves, not the fold models' (training.pipeline: on the calibration split, scored
  by the final model exported to ONNX).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from schemas.errors import ConfigError, DataError
from training.data import Split

Method = Literal["none", "scale_pos_weight", "smote"]
METHODS: tuple[Method, ...] = ("none", "scale_pos_weight", "smote")


@dataclass(frozen=True)
class ModelParams:
    """XGBoost settings for the study folds and the final fit (all CPU, ``hist`` trees).

    Raises ConfigError on construction if a value is out of range.
    """

    max_depth: int = 6
    # Serving cost grows with the trees (ONNX Runtime: 2.1 us/row at 44 trees, 8.3 at 194 on
    # this 2-core machine), so the rounds are capped and the learning rate set for it. Full-size
    # synthetic default: 1000 rounds at 0.1 -> 195 trees, drain 38k tx/s, test PR-AUC 0.816;
    # 80 at 0.25 -> 50 trees, PR-AUC 0.812 (bench/RESULTS.md has the drain).
    max_rounds: int = 80
    learning_rate: float = 0.25
    early_stopping_rounds: int = 50
    # Fewer trees than this is an early stop on noise (a few frauds in a fold), not a finding.
    min_rounds: int = 50
    cv_folds: int = 3
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    n_jobs: int = 2
    # SMOTE adds synthetic frauds up to this fraud:legit ratio; data already at or above it is
    # oversampled to 1:1, and data with at least as many frauds as legitimate rows is left as
    # is (there is no minority to oversample).
    smote_ratio: float = 0.1
    # SMOTE on a random subsample of at most this many legitimate rows (None: all of them).
    smote_majority_cap: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.min_rounds <= self.max_rounds:
            raise ConfigError(
                f"boosting rounds: need 1 <= min_rounds ({self.min_rounds}) <= max_rounds "
                f"({self.max_rounds})"
            )
        if self.cv_folds < 2:
            raise ConfigError(f"cross-validation needs at least 2 folds, got {self.cv_folds}")
        if not 0 < self.smote_ratio <= 1:
            raise ConfigError(f"SMOTE ratio must be in (0, 1], got {self.smote_ratio}")


@dataclass(frozen=True)
class StudyResult:
    """One row of the imbalance study (the manifest's ``imbalance_study`` entries).

    ``val_pr_auc`` / ``val_roc_auc`` are means over the folds' held-out parts; ``fold_pr_auc``
    the per-fold values and ``pr_auc_std`` their standard deviation; ``trees`` the number of
    trees the method settles on.
    """

    method: Method
    val_pr_auc: float
    val_roc_auc: float
    pr_auc_std: float
    fold_pr_auc: list[float]
    fold_best_trees: list[int]
    trees: int
    train_rows: int
    train_frauds: int
    scale_pos_weight: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FinalModel:
    """The winning method's classifier with exactly ``best_iteration + 1`` trees."""

    classifier: Any  # xgboost.XGBClassifier; typed loosely so callers need not import xgboost
    method: Method
    best_iteration: int
    seconds: float
    params: dict[str, Any]

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """XGBoost's fraud probability (float32 in, float64 out) for ``features``."""
        probabilities = self.classifier.predict_proba(features)[:, 1]
        return np.asarray(probabilities, dtype=np.float64)


def smote_target(frauds: int, legit: int, ratio: float) -> int | None:
    """How many frauds SMOTE should bring the training set to, or None to leave it as is.

    Up to ``ratio`` x legit; to 1:1 when the data already has that share; None when frauds are
    not the minority (imbalanced-learn refuses a target at or below the current count: the
    ValueError "The specified ratio required to remove samples from the minority class").
    """
    if frauds < 2 or frauds >= legit:
        return None
    target = int(np.ceil(ratio * legit))
    if target <= frauds:
        target = legit
    return target


def _training_set(
    method: Method, features: np.ndarray, labels: np.ndarray, seed: int, params: ModelParams
) -> tuple[np.ndarray, np.ndarray, float]:
    """Features, labels and scale_pos_weight the method trains on."""
    frauds = int(labels.sum())
    legit = len(labels) - frauds
    if method == "none":
        return features, labels, 1.0
    if method == "scale_pos_weight":
        return features, labels, legit / max(frauds, 1)
    from imblearn.over_sampling import SMOTE

    cap = params.smote_majority_cap
    if cap is not None and legit > cap:
        rng = np.random.default_rng(seed)
        legit_rows = rng.choice(np.flatnonzero(labels == 0), size=cap, replace=False)
        keep = np.sort(np.concatenate([legit_rows, np.flatnonzero(labels == 1)]))
        features, labels = features[keep], labels[keep]
        legit = cap
    target = smote_target(frauds, legit, params.smote_ratio)
    if target is None:
        return features, labels, 1.0
    smote = SMOTE(sampling_strategy={1: target}, k_neighbors=min(5, frauds - 1), random_state=seed)
    resampled_features, resampled_labels = smote.fit_resample(features, labels)
    return (
        np.asarray(resampled_features, dtype=np.float32),
        np.asarray(resampled_labels, dtype=np.int64),
        1.0,
    )


# Below this many training rows XGBoost runs single-threaded: its per-node thread barriers cost
# more than they save on small data, and much more when other processes share the cores.
PARALLEL_MIN_ROWS = 50_000


def _xgb_params(
    params: ModelParams, seed: int, rounds: int, weight: float, rows: int
) -> dict[str, Any]:
    return {
        "n_estimators": rounds,
        "learning_rate": params.learning_rate,
        "max_depth": params.max_depth,
        "subsample": params.subsample,
        "colsample_bytree": params.colsample_bytree,
        "scale_pos_weight": weight,
        "tree_method": "hist",
        "objective": "binary:logistic",
        "eval_metric": "aucpr",
        "n_jobs": params.n_jobs if rows >= PARALLEL_MIN_ROWS else 1,
        "random_state": seed,
    }


def folds(labels: np.ndarray, seed: int, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified ``k``-fold (fit rows, held-out rows), shared by every method of a study.

    Raises DataError if a class has fewer than ``k`` rows.
    """
    from sklearn.model_selection import StratifiedKFold

    smallest = int(min(labels.sum(), len(labels) - labels.sum()))
    if smallest < k:
        raise DataError(
            f"the development set holds only {smallest} row(s) of one class; "
            f"{k}-fold cross-validation needs at least {k}"
        )
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def run_study(
    development: Split, seed: int, params: ModelParams, methods: tuple[Method, ...]
) -> list[StudyResult]:
    """Cross-validate each method on ``development`` (same folds); see the module docstring."""
    from sklearn.metrics import average_precision_score, roc_auc_score
    from xgboost import XGBClassifier

    parts = folds(development.labels, seed, params.cv_folds)
    results = []
    for method in methods:
        began = time.perf_counter()
        fitted = []
        for fit_rows, held_out in parts:
            features, labels, weight = _training_set(
                method, development.features[fit_rows], development.labels[fit_rows], seed, params
            )
            model = XGBClassifier(
                **_xgb_params(params, seed, params.max_rounds, weight, len(labels)),
                early_stopping_rounds=params.early_stopping_rounds,
            )
            eval_set = [(development.features[held_out], development.labels[held_out])]
            model.fit(features, labels, eval_set=eval_set, verbose=False)
            fitted.append((model, int(model.best_iteration) + 1, len(labels), int(labels.sum())))
        best_trees = [trees for _, trees, _, _ in fitted]
        trees = max(params.min_rounds, int(np.median(best_trees)))
        pr_aucs, roc_aucs = [], []
        for (model, _, _, _), (_, held_out) in zip(fitted, parts, strict=True):
            # At the method's tree count (capped by what this fold grew before it stopped).
            grown = model.get_booster().num_boosted_rounds()
            scores = model.predict_proba(
                development.features[held_out], iteration_range=(0, min(trees, grown))
            )[:, 1]
            pr_aucs.append(float(average_precision_score(development.labels[held_out], scores)))
            roc_aucs.append(float(roc_auc_score(development.labels[held_out], scores)))
        results.append(
            StudyResult(
                method=method,
                val_pr_auc=float(np.mean(pr_aucs)),
                val_roc_auc=float(np.mean(roc_aucs)),
                pr_auc_std=float(np.std(pr_aucs)),
                fold_pr_auc=pr_aucs,
                fold_best_trees=best_trees,
                trees=trees,
                train_rows=fitted[0][2],
                train_frauds=fitted[0][3],
                scale_pos_weight=_training_set_weight(method, development, parts[0][0]),
                seconds=time.perf_counter() - began,
            )
        )
    return results


def _training_set_weight(method: Method, development: Split, fit_rows: np.ndarray) -> float:
    if method != "scale_pos_weight":
        return 1.0
    frauds = int(development.labels[fit_rows].sum())
    return (len(fit_rows) - frauds) / max(frauds, 1)


def best_method(results: list[StudyResult]) -> StudyResult:
    """The method with the highest mean fold PR-AUC (first listed wins a tie)."""
    return max(results, key=lambda result: result.val_pr_auc)


def fit_final(
    method: Method, development: Split, trees: int, seed: int, params: ModelParams
) -> FinalModel:
    """Refit ``method`` on all of ``development`` (the fit rows) with exactly ``trees`` trees."""
    from xgboost import XGBClassifier

    began = time.perf_counter()
    features, labels, weight = _training_set(
        method, development.features, development.labels, seed, params
    )
    xgb_params = _xgb_params(params, seed, trees, weight, len(labels))
    classifier = XGBClassifier(**xgb_params)
    classifier.fit(features, labels, verbose=False)
    recorded = {
        **xgb_params,
        "method": method,
        "trees": trees,
        "cv_folds": params.cv_folds,
        "min_rounds": params.min_rounds,
        "max_rounds": params.max_rounds,
        "early_stopping_rounds": params.early_stopping_rounds,
    }
    return FinalModel(classifier, method, trees - 1, time.perf_counter() - began, recorded)
