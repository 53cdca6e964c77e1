"""``train``: from a transactions set to a verified, versioned ONNX model bundle.

Steps, each reported through ``progress``: data (read + validate, or generate) -> stratified
60/20/20 fit/calibration/test split -> imbalance study (K-fold cross-validation of every method
on the fit rows, early stopping per fold) -> final fit of the winner on all the fit rows with
the cross-validated number of trees -> ONNX export -> parity on the whole test set (refused
above the bound) -> cost-optimal thresholds on the calibration split scored by the exported
model -> metrics, drift baseline, plots, report -> publish -> activate. The thresholds are
chosen on the scores the scorer will compute, by a model that never saw those rows; the
manifest's ``metrics.validation`` block is computed on the same calibration scores.
Everything is written to a staging directory and published with one rename, so a failure at any
step leaves no bundle behind. The scorer's tests, the benchmarks and the demo call :func:`train`
directly; ``sentinel train`` is a thin CLI over it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.drift_baseline import build_baseline
from schemas.errors import ConfigError
from schemas.features import FEATURE_NAMES
from schemas.manifest import (
    DataSource,
    Manifest,
    OnnxSignature,
    ParityCheck,
    ParitySample,
    Thresholds,
)
from schemas.models_dir import MODEL_FILE, activate_version
from training import data, publish, report, synth
from training.data import Split, TrainingData
from training.export import check_parity, onnx_probabilities, to_onnx
from training.study import (
    METHODS,
    FinalModel,
    Method,
    ModelParams,
    StudyResult,
    best_method,
    fit_final,
    run_study,
)
from training.threshold import (
    SCORE_SPREAD_LOGIT,
    block_threshold,
    cost_curve,
    decision_metrics,
    review_threshold,
    smoothed_cost_curve,
)

Progress = Callable[[str], None]
PARITY_SAMPLE_ROWS = 64
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a training run except the data and where the bundle goes.

    Raises ConfigError on construction if a value is out of range.
    """

    review_cost: float = 5.0  # cost of one false alarm (manual review), in Amount units
    parity_bound: float = 5e-7  # max |ONNX - XGBoost| fraud probability over the test set
    review_budget: float = 0.001  # share of traffic below the block threshold sent to REVIEW
    test_share: float = 0.2
    calibration_share: float = 0.2  # of all rows: held out from fitting, to choose thresholds on
    methods: tuple[Method, ...] = METHODS
    model: ModelParams = field(default_factory=ModelParams)

    def __post_init__(self) -> None:
        if not self.review_cost > 0:
            raise ConfigError(f"review cost must be positive, got {self.review_cost}")
        if not self.parity_bound >= 0:
            raise ConfigError(f"parity bound must be >= 0, got {self.parity_bound}")
        if not 0 <= self.review_budget < 1:
            raise ConfigError(f"review budget must be in [0, 1), got {self.review_budget}")
        if not (
            self.test_share > 0
            and self.calibration_share > 0
            and self.test_share + self.calibration_share < 1
        ):
            raise ConfigError(
                f"test share ({self.test_share}) and calibration share "
                f"({self.calibration_share}) must be positive and sum below 1"
            )
        unknown = [m for m in self.methods if m not in METHODS]
        if not self.methods or unknown:
            raise ConfigError(f"imbalance methods must be among {', '.join(METHODS)}")


@dataclass(frozen=True)
class TrainResult:
    """The published bundle: its version, directory, manifest, and whether it is now current."""

    version: str
    path: Path
    manifest: Manifest
    activated: bool
    seconds: float


@dataclass(frozen=True)
class _Fitted:
    """What the fitting steps hand to export and reporting."""

    fit: Split  # what the study and the final model were trained on
    calibration: Split  # what the thresholds are chosen on
    test: Split
    study: list[StudyResult]
    final: FinalModel


def _resolve_data(
    source: TrainingData | Path | pd.DataFrame | None, rows: int, seed: int, prevalence: float
) -> TrainingData:
    if isinstance(source, TrainingData):
        return source
    if isinstance(source, Path):
        return data.load_csv(source)
    if isinstance(source, pd.DataFrame):
        return data.from_frame(source)
    return data.synthetic(rows, seed, prevalence)


def _parity_sample(test: Split, probabilities: np.ndarray, seed: int) -> ParitySample:
    """64 test rows (up to a quarter frauds, so high scores are covered) and ONNX's answers."""
    rng = np.random.default_rng(seed)
    frauds = np.flatnonzero(test.labels == 1)
    legit = np.flatnonzero(test.labels == 0)
    take_fraud = min(len(frauds), PARITY_SAMPLE_ROWS // 4)
    take_legit = min(len(legit), PARITY_SAMPLE_ROWS - take_fraud)
    rows = np.sort(
        np.concatenate(
            [
                rng.choice(frauds, take_fraud, replace=False),
                rng.choice(legit, take_legit, replace=False),
            ]
        )
    )
    return ParitySample(
        test.features[rows].astype(np.float64), np.asarray(probabilities[rows], dtype=np.float64)
    )


def _importance(model: FinalModel) -> dict[str, float]:
    gains = model.classifier.get_booster().get_score(importance_type="total_gain")
    return {name: float(gains.get(f"f{i}", 0.0)) for i, name in enumerate(FEATURE_NAMES)}


def _fit(dataset: TrainingData, seed: int, config: TrainConfig, say: Progress) -> _Fitted:
    """Split, cross-validated study and final fit (no files written)."""
    development, test = data.development_and_test(dataset, seed, config.test_share)
    fit, calibration = data.fit_and_calibration(
        development, seed, config.calibration_share / (1.0 - config.test_share)
    )
    say(
        f"split: fit {fit.rows:,} / calibration {calibration.rows:,} / test {test.rows:,} rows "
        f"({fit.frauds}/{calibration.frauds}/{test.frauds} frauds); "
        f"{config.model.cv_folds}-fold study on the fit rows"
    )
    results = []
    for method in config.methods:
        say(f"study: fitting {method}")
        (result,) = run_study(fit, seed, config.model, (method,))
        results.append(result)
        say(
            f"study: {method}: cross-validated PR-AUC {result.val_pr_auc:.4f} "
            f"+- {result.pr_auc_std:.4f}, {result.trees} trees "
            f"({result.train_rows:,} training rows per fold, {result.seconds:.1f} s)"
        )
    winner = best_method(results)
    say(f"final fit: {winner.method} on the fit rows, {winner.trees} trees")
    final = fit_final(winner.method, fit, winner.trees, seed, config.model)
    say(f"final fit: {final.best_iteration + 1} trees ({final.seconds:.1f} s)")
    return _Fitted(fit, calibration, test, results, final)


def _assemble(
    staging: Path,
    version: str,
    dataset: TrainingData,
    fitted: _Fitted,
    seed: int,
    config: TrainConfig,
    say: Progress,
    began: float,
) -> Manifest:
    """Export, parity, metrics, baseline, plots: the bundle's files and its manifest."""
    say("export: converting to ONNX")
    onnx_model = to_onnx(fitted.final)
    (staging / MODEL_FILE).write_bytes(onnx_model.payload)
    test, calibration = fitted.test, fitted.calibration
    parity = check_parity(fitted.final, onnx_model, test.features, config.parity_bound)
    say(
        f"parity: max |ONNX - XGBoost| = {parity.max_abs_diff:.3g} over {parity.rows:,} "
        f"test rows (bound {parity.bound:.3g})"
    )
    # Thresholds and metrics are computed on ONNX Runtime's scores: what the scorer will serve.
    test_scores = parity.onnx_probabilities
    calibration_scores = onnx_probabilities(onnx_model, calibration.features)
    cost_args = (calibration.labels, calibration.amounts, config.review_cost)
    block = block_threshold(calibration_scores, *cost_args)
    review = review_threshold(calibration_scores, block, config.review_budget)
    say(
        f"thresholds: block >= {block:.4g}, review >= {review:.4g} (smoothed cost on the "
        f"calibration split: {calibration.rows:,} rows, {calibration.frauds} frauds)"
    )
    metric_args = (block, review, config.review_cost)
    metrics = {
        "test": decision_metrics(test_scores, test.labels, test.amounts, *metric_args),
        "validation": decision_metrics(
            calibration_scores, calibration.labels, calibration.amounts, *metric_args
        ),
    }
    importance = _importance(fitted.final)
    say("report: drift baseline, plots")
    plots = report.write_plots(
        staging,
        report.PlotData(
            test_scores,
            test.labels,
            cost_curve(calibration_scores, *cost_args),
            smoothed_cost_curve(calibration_scores, *cost_args),
            block,
            review,
            importance,
        ),
    )
    return Manifest(
        version=version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        onnx=OnnxSignature(
            sha256=publish.sha256_file(staging / MODEL_FILE),
            input_name=onnx_model.input_name,
            probability_output=onnx_model.probability_output,
            opset=onnx_model.opset,
            opset_imports=onnx_model.opset_imports,
        ),
        thresholds=Thresholds(
            block=block,
            review=review,
            review_cost=config.review_cost,
            review_budget=config.review_budget,
        ),
        data=DataSource(
            source=dataset.source,
            sha256=dataset.sha256,
            rows=dataset.rows,
            frauds=dataset.frauds,
            seed=dataset.seed,
        ),
        parity=ParityCheck(parity.max_abs_diff, parity.rows, parity.bound),
        parity_sample=_parity_sample(test, test_scores, seed),
        drift_baseline=build_baseline(fitted.fit.features, test_scores),
        metrics=metrics,
        imbalance_study=tuple(result.as_dict() for result in fitted.study),
        training={
            "seconds": round(time.perf_counter() - began, 3),
            "params": fitted.final.params,
            "best_iteration": fitted.final.best_iteration,
            "seed": seed,
            "thresholds_chosen_on": {
                "split": "calibration",
                "rows": calibration.rows,
                "frauds": calibration.frauds,
                "scored_by": "the exported ONNX model",
                "cost": "smoothed",
                "score_spread_logit": SCORE_SPREAD_LOGIT,
            },
            "feature_importance_total_gain": importance,
        },
        plots=tuple(plots),
    )


def train(
    models_dir: Path,
    *,
    data_source: TrainingData | Path | pd.DataFrame | None = None,
    rows: int = synth.DEFAULT_ROWS,
    seed: int = synth.DEFAULT_SEED,
    prevalence: float = synth.PREVALENCE,
    version: str | None = None,
    activate: bool = False,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train, export, verify and publish one bundle into ``models_dir``; return it.

    ``data_source``: a validated :class:`TrainingData`, a CSV path, a DataFrame with the Kaggle
    columns, or None for synthetic data (``rows``, ``prevalence``, generator ``seed``). ``seed``
    also drives the split, SMOTE and XGBoost, so a run is reproducible. ``version`` defaults to
    the next free ``vN``; an existing version is never overwritten. Blocks for the whole run
    (minutes on the full-size set). Raises DataError (bad data), ConfigError (bad settings,
    version taken, models_dir not writable, a write failing) or ModelLoadError (export/parity
    refused); in every failure case no bundle directory is left behind.
    """
    began = time.perf_counter()
    config = config or TrainConfig()
    say = progress or (lambda _message: None)
    if version is not None:
        publish.check_version_free(models_dir, version)
    version = version or publish.next_version(models_dir)
    with publish.staging_dir(models_dir) as staging:
        try:
            say("data: loading" if data_source is not None else f"data: generating {rows:,} rows")
            dataset = _resolve_data(data_source, rows, seed, prevalence)
            say(
                f"data: {dataset.rows:,} rows, {dataset.frauds:,} frauds from {dataset.source} "
                f"(sha256 {dataset.sha256[:12]})"
            )
            fitted = _fit(dataset, seed, config, say)
            manifest = _assemble(staging, version, dataset, fitted, seed, config, say, began)
            manifest.write(staging)
            markdown = report.render_markdown(manifest)
            (staging / REPORT_FILE).write_text(markdown, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"writing the bundle in {models_dir} failed: {exc.strerror or exc}"
            ) from exc
        path = publish.publish(staging, models_dir, version)
    say(f"bundle: {path}")
    if activate:
        activate_version(models_dir, version)
        say(f"activated: {models_dir / 'current'} -> {version}")
    return TrainResult(version, path, manifest, activate, time.perf_counter() - began)


__all__ = ["Progress", "TrainConfig", "TrainResult", "train"]
