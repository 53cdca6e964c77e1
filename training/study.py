"""The imbalance study and the final fit.

Three ways to handle 0.17% prevalence are compared on the same split by validation PR-AUC (the
metric that matters when positives are rare): no weighting, XGBoost's ``scale_pos_weight`` (the
negative/positive ratio), and SMOTE oversampling of the training frauds (imbalanced-learn). The
winner is retrained with more, smaller steps and early stopping on validation PR-AUC; the booster
is then cut at its best iteration so that XGBoost, the ONNX export and the parity check all see
exactly the same trees.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from training.data import Split

Method = Literal["none", "scale_pos_weight", "smote"]
METHODS: tuple[Method, ...] = ("none", "scale_pos_weight", "smote")


@dataclass(frozen=True)
class ModelParams:
    """XGBoost settings for the study fits and the final fit (all CPU, ``hist`` trees)."""

    max_depth: int = 6
    study_rounds: int = 150
    study_learning_rate: float = 0.1
    max_rounds: int = 1000
    learning_rate: float = 0.1
    early_stopping_rounds: int = 50
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    n_jobs: int = 2
    # SMOTE adds synthetic frauds up to this fraud:legit ratio (1.0 when the data already has
    # more): a 1:1 balance doubles the rows and the fit time on the full set for no gain.
    smote_ratio: float = 0.1
    # SMOTE on a random subsample of at most this many legitimate rows (None: all of them).
    smote_majority_cap: int | None = None


@dataclass(frozen=True)
class StudyResult:
    """One row of the imbalance study (the manifest's ``imbalance_study`` entries)."""

    method: Method
    val_pr_auc: float
    val_roc_auc: float
    train_rows: int
    train_frauds: int
    scale_pos_weight: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FinalModel:
    """The winning method's classifier, cut at ``best_iteration`` (0-based), and how it was fit."""

    classifier: Any  # xgboost.XGBClassifier; typed loosely so callers need not import xgboost
    method: Method
    best_iteration: int
    seconds: float
    params: dict[str, Any]

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """XGBoost's fraud probability (float32 in, float64 out) for ``features``."""
        probabilities = self.classifier.predict_proba(features)[:, 1]
        return np.asarray(probabilities, dtype=np.float64)


def _training_set(
    method: Method, train: Split, seed: int, params: ModelParams
) -> tuple[np.ndarray, np.ndarray, float]:
    """Features, labels and scale_pos_weight the method trains on."""
    frauds = train.frauds
    legit = train.rows - frauds
    if method == "none":
        return train.features, train.labels, 1.0
    if method == "scale_pos_weight":
        return train.features, train.labels, legit / max(frauds, 1)
    from imblearn.over_sampling import SMOTE

    features, labels = train.features, train.labels
    cap = params.smote_majority_cap
    if cap is not None and legit > cap:
        rng = np.random.default_rng(seed)
        legit_rows = rng.choice(np.flatnonzero(labels == 0), size=cap, replace=False)
        keep = np.sort(np.concatenate([legit_rows, np.flatnonzero(labels == 1)]))
        features, labels = features[keep], labels[keep]
    ratio = params.smote_ratio if labels.sum() < params.smote_ratio * (labels == 0).sum() else 1.0
    smote = SMOTE(sampling_strategy=ratio, k_neighbors=min(5, frauds - 1), random_state=seed)
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
    params: ModelParams, seed: int, rounds: int, learning_rate: float, weight: float, rows: int
) -> dict[str, Any]:
    return {
        "n_estimators": rounds,
        "learning_rate": learning_rate,
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


def run_study(
    train: Split, validation: Split, seed: int, params: ModelParams, methods: tuple[Method, ...]
) -> list[StudyResult]:
    """Fit one model per method (same rounds and learning rate) and score it on validation."""
    from sklearn.metrics import average_precision_score, roc_auc_score
    from xgboost import XGBClassifier

    results = []
    for method in methods:
        began = time.perf_counter()
        features, labels, weight = _training_set(method, train, seed, params)
        model = XGBClassifier(
            **_xgb_params(
                params, seed, params.study_rounds, params.study_learning_rate, weight, len(labels)
            )
        )
        model.fit(features, labels, verbose=False)
        scores = model.predict_proba(validation.features)[:, 1]
        results.append(
            StudyResult(
                method=method,
                val_pr_auc=float(average_precision_score(validation.labels, scores)),
                val_roc_auc=float(roc_auc_score(validation.labels, scores)),
                train_rows=len(labels),
                train_frauds=int(labels.sum()),
                scale_pos_weight=weight,
                seconds=time.perf_counter() - began,
            )
        )
    return results


def best_method(results: list[StudyResult]) -> Method:
    """The method with the highest validation PR-AUC (first listed wins a tie)."""
    return max(results, key=lambda result: result.val_pr_auc).method


def fit_final(
    method: Method, train: Split, validation: Split, seed: int, params: ModelParams
) -> FinalModel:
    """Retrain ``method`` with early stopping on validation PR-AUC; cut at the best iteration."""
    from xgboost import XGBClassifier

    began = time.perf_counter()
    features, labels, weight = _training_set(method, train, seed, params)
    xgb_params = _xgb_params(
        params, seed, params.max_rounds, params.learning_rate, weight, len(labels)
    )
    model = XGBClassifier(**xgb_params, early_stopping_rounds=params.early_stopping_rounds)
    model.fit(features, labels, eval_set=[(validation.features, validation.labels)], verbose=False)
    best_iteration = int(model.best_iteration)
    # Keep only the trees up to the best iteration: the exported model is then exactly the
    # model evaluated here, with no reliance on iteration_range at predict time.
    booster = model.get_booster()[: best_iteration + 1]
    classifier = XGBClassifier()
    classifier.load_model(bytearray(booster.save_raw("json")))
    classifier.set_params(n_jobs=xgb_params["n_jobs"])
    recorded = {**xgb_params, "early_stopping_rounds": params.early_stopping_rounds}
    recorded["method"] = method
    recorded["trees"] = best_iteration + 1
    return FinalModel(classifier, method, best_iteration, time.perf_counter() - began, recorded)
