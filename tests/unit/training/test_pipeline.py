"""End to end on small data: `sentinel train --data small.csv`, the manifest, versions, parity."""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.errors import ConfigError, ModelLoadError
from schemas.features import FEATURE_NAMES
from schemas.models_dir import current_version
from streams.cli import main
from streams.model.loader import load_bundle
from tests.fixtures.models import quick_config
from training import export, report
from training.pipeline import train
from training.publish import next_version
from training.synth import generate, to_csv_bytes

BUNDLE_FILES = {
    "model.onnx",
    "manifest.json",
    "report.md",
    "pr_curve.png",
    "threshold_cost.png",
    "feature_importance.png",
    "score_histogram.png",
}


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~3,000 rows with ~10% fraud, as a user might bring."""
    path = tmp_path_factory.mktemp("data") / "small.csv"
    path.write_bytes(to_csv_bytes(generate(rows=3_000, seed=21, prevalence=0.1)))
    return path


@pytest.fixture(scope="module")
def cli_run(small_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`sentinel train --data small.csv --activate` with production settings; (models, stdout)."""
    models = tmp_path_factory.mktemp("cli") / "models"
    capture = tmp_path_factory.mktemp("out") / "stdout.txt"
    with capture.open("w") as out, contextlib.redirect_stdout(out):
        code = main(["train", "--data", str(small_csv), "--models-dir", str(models), "--activate"])
    assert code == 0
    return models, capture.read_text()


def _manifest(models: Path, version: str = "v1") -> dict[str, Any]:
    return dict(json.loads((models / version / "manifest.json").read_text()))


def test_train_on_a_small_csv_writes_a_complete_active_bundle(cli_run: tuple[Path, str]) -> None:
    models, stdout = cli_run
    assert {p.name for p in (models / "v1").iterdir()} == BUNDLE_FILES
    assert (models / "current").read_text() == "v1\n"
    assert sorted(p.name for p in models.iterdir()) == ["current", "v1"]  # no staging leftovers
    for step in (
        "data:",
        "split:",
        "study: none:",
        "study: scale_pos_weight:",
        "study: smote:",
        "final fit:",
        "thresholds:",
        "parity:",
        "bundle:",
        "activated:",
    ):
        assert step in stdout, f"no progress line for {step}"
    assert "test PR-AUC / ROC-AUC" in stdout and "imbalance study" in stdout


def test_manifest_describes_this_data_and_this_model(
    cli_run: tuple[Path, str], small_csv: Path
) -> None:
    models, _ = cli_run
    manifest = _manifest(models)
    assert manifest["format"] == 1 and manifest["version"] == "v1"
    offset = datetime.fromisoformat(manifest["created_at"]).utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert manifest["feature_names"] == list(FEATURE_NAMES)
    onnx = manifest["onnx"]
    assert onnx["sha256"] == hashlib.sha256((models / "v1" / "model.onnx").read_bytes()).hexdigest()
    assert onnx["input_shape"] == [None, 29] and isinstance(onnx["opset"], int)
    assert manifest["data"] == {
        "source": str(small_csv),
        "sha256": hashlib.sha256(small_csv.read_bytes()).hexdigest(),
        "rows": 3_000,
        "frauds": 300,
        "seed": None,
    }
    test = manifest["metrics"]["test"]
    assert (test["rows"], test["frauds"]) == (600, 60)  # the 20% stratified test split
    (tn, fp), (fn, tp) = test["confusion_matrix"]
    assert tn + fp + fn + tp == 600 and fn + tp == 60
    assert test["recall_at_block"] == pytest.approx(tp / 60)
    assert test["saving"] == pytest.approx(test["cost_at_0_5"] - test["cost_at_block"])
    assert 0.5 < test["pr_auc"] <= 1.0 and 0.5 < test["roc_auc"] <= 1.0
    # validation = the 20% calibration split the thresholds were chosen on, never trained on
    validation = manifest["metrics"]["validation"]
    assert (validation["rows"], validation["frauds"]) == (600, 60)
    chosen_on = manifest["training"]["thresholds_chosen_on"]
    assert (chosen_on["split"], chosen_on["rows"], chosen_on["frauds"]) == ("calibration", 600, 60)
    thresholds = manifest["thresholds"]
    assert 0.0 <= thresholds["review"] <= thresholds["block"]
    assert thresholds["review_cost"] == 5.0
    study = manifest["imbalance_study"]
    assert [row["method"] for row in study] == ["none", "scale_pos_weight", "smote"]
    assert (
        manifest["training"]["params"]["method"]
        == max(study, key=lambda r: r["val_pr_auc"])["method"]
    )
    assert manifest["parity"]["rows"] == 600
    assert manifest["parity"]["max_abs_diff"] <= manifest["parity"]["bound"] == 5e-7
    sample = manifest["parity_sample"]
    assert np.asarray(sample["features"]).shape == (64, 29) and len(sample["probabilities"]) == 64
    baseline = manifest["drift_baseline"]
    assert list(baseline["features"]) == list(FEATURE_NAMES)
    for entry in [*baseline["features"].values(), baseline["score"]]:
        assert len(entry["bin_edges"]) == 11 and len(entry["proportions"]) == 10
        assert sum(entry["proportions"]) == pytest.approx(1.0)
        assert entry["bin_edges"] == sorted(entry["bin_edges"])


def test_the_published_bundle_loads_and_serves_its_recorded_scores(
    cli_run: tuple[Path, str],
) -> None:
    models, _ = cli_run
    bundle = load_bundle(models, current_version(models))
    sample = bundle.manifest.parity_sample
    served = bundle.predict_proba(sample.features.astype(np.float32))
    np.testing.assert_allclose(served, sample.probabilities, atol=1e-7)
    assert bundle.block_threshold == bundle.manifest.thresholds.block


def test_versions_increment_and_existing_ones_are_never_overwritten(
    small_csv: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    first = train(models, data_source=small_csv, config=quick_config(), activate=True)
    second = train(models, data_source=small_csv, seed=8, config=quick_config())
    assert (first.version, second.version) == ("v1", "v2")
    assert current_version(models) == "v1"  # not activated
    before = (models / "v1" / "model.onnx").read_bytes()
    with pytest.raises(ConfigError, match="v1 already exists"):
        train(models, data_source=small_csv, version="v1", config=quick_config())
    assert (models / "v1" / "model.onnx").read_bytes() == before


def test_next_version_skips_past_the_highest(tmp_path: Path) -> None:
    for name in ("v1", "v3", "v10", "experiment", ".staging-x"):
        (tmp_path / name).mkdir()
    assert next_version(tmp_path) == "v11"
    assert next_version(tmp_path / "absent") == "v1"


def test_parity_failure_refuses_the_export_and_leaves_nothing(
    small_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export.onnx_probabilities

    def drifting(model: Any, features: np.ndarray) -> np.ndarray:
        return real(model, features) + 1e-6  # an export 2x beyond the 5e-7 bound

    monkeypatch.setattr(export, "onnx_probabilities", drifting)
    models = tmp_path / "models"
    with pytest.raises(ModelLoadError, match=r"parity check failed: .* exceeds the bound 5e-07"):
        train(models, data_source=small_csv, config=quick_config(), activate=True)
    assert list(models.iterdir()) == []


def test_a_failure_at_the_last_step_leaves_no_half_bundle(
    small_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*_args: Any) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "render_markdown", disk_full)
    models = tmp_path / "models"
    with pytest.raises(ConfigError, match="No space left on device"):
        train(models, data_source=small_csv, config=quick_config(), activate=True)
    assert list(models.iterdir()) == []
