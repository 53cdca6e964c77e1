"""The typed manifest, on a real bundle's manifest.json: it round-trips exactly, and a missing or
mistyped field is refused at load with ModelLoadError naming it."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.errors import ModelLoadError
from schemas.features import FEATURE_NAMES, N_FEATURES
from schemas.manifest import Manifest, read_manifest
from schemas.models_dir import MANIFEST_FILE


@pytest.fixture(scope="module")
def raw(models_dir: Path) -> dict[str, Any]:
    """manifest.json of the session's trained bundle v1, as JSON."""
    obj: dict[str, Any] = json.loads((models_dir / "v1" / MANIFEST_FILE).read_text())
    return obj


def broken(raw: dict[str, Any], path: str, value: Any = ..., *, delete: bool = False) -> Any:
    """A deep copy of ``raw`` with ``path`` ("onnx.opset") set to ``value`` or deleted."""
    obj = copy.deepcopy(raw)
    *parents, last = path.split(".")
    target = obj
    for key in parents:
        target = target[key]
    if delete:
        del target[last]
    else:
        target[last] = value
    return obj


def test_a_trained_manifest_parses_into_typed_fields(raw: dict[str, Any]) -> None:
    manifest = Manifest.from_json(raw)
    assert manifest.version == "v1"
    assert manifest.feature_names == FEATURE_NAMES
    assert manifest.onnx.input_shape == (None, N_FEATURES)
    assert manifest.onnx.file == "model.onnx" and len(manifest.onnx.sha256) == 64
    assert 0 <= manifest.thresholds.review <= manifest.thresholds.block <= 1
    assert manifest.data.rows == 5_000 and manifest.data.seed == 7
    assert manifest.parity.max_abs_diff <= manifest.parity.bound
    n = len(manifest.parity_sample.probabilities)
    assert n > 0 and manifest.parity_sample.features.shape == (n, N_FEATURES)
    assert manifest.drift_baseline.proportions.shape[0] == N_FEATURES + 1


def test_to_json_writes_back_exactly_what_training_wrote(raw: dict[str, Any]) -> None:
    manifest = Manifest.from_json(raw)
    assert manifest.to_json() == raw
    assert Manifest.from_json(json.loads(json.dumps(manifest.to_json()))).to_json() == raw


def test_write_then_read_manifest_round_trips(
    models_dir: Path, raw: dict[str, Any], tmp_path: Path
) -> None:
    bundle = tmp_path / "v1"
    bundle.mkdir()
    path = Manifest.from_json(raw).write(bundle)
    assert path == bundle / MANIFEST_FILE
    again = read_manifest(tmp_path, "v1")
    assert again.to_json() == raw
    np.testing.assert_array_equal(
        again.parity_sample.features, read_manifest(models_dir, "v1").parity_sample.features
    )


def test_write_refuses_values_json_cannot_hold(raw: dict[str, Any], tmp_path: Path) -> None:
    manifest = Manifest.from_json(broken(raw, "metrics.test.pr_auc", float("nan")))
    with pytest.raises(ValueError, match="JSON compliant"):
        manifest.write(tmp_path)


REQUIRED = [
    ("format", r"manifest has no 'format'"),
    ("version", r"manifest has no 'version'"),
    ("created_at", r"manifest has no 'created_at'"),
    ("feature_names", r"manifest has no 'feature_names'"),
    ("onnx", r"manifest has no 'onnx'"),
    ("thresholds", r"manifest has no 'thresholds'"),
    ("data", r"manifest has no 'data'"),
    ("parity", r"manifest has no 'parity'"),
    ("parity_sample", r"manifest has no 'parity_sample'"),
    ("metrics", r"manifest has no 'metrics'"),
    ("imbalance_study", r"manifest has no 'imbalance_study'"),
    ("training", r"manifest has no 'training'"),
    ("drift_baseline", r"drift baseline must be a JSON object"),
    ("onnx.file", r"onnx has no 'file'"),
    ("onnx.sha256", r"onnx has no 'sha256'"),
    ("onnx.input_name", r"onnx has no 'input_name'"),
    ("onnx.input_shape", r"onnx has no 'input_shape'"),
    ("onnx.probability_output", r"onnx has no 'probability_output'"),
    ("onnx.opset", r"onnx has no 'opset'"),
    ("thresholds.block", r"thresholds has no 'block'"),
    ("thresholds.review", r"thresholds has no 'review'"),
    ("thresholds.review_cost", r"thresholds has no 'review_cost'"),
    ("thresholds.review_budget", r"thresholds has no 'review_budget'"),
    ("data.source", r"data has no 'source'"),
    ("data.sha256", r"data has no 'sha256'"),
    ("data.rows", r"data has no 'rows'"),
    ("data.frauds", r"data has no 'frauds'"),
    ("parity.max_abs_diff", r"parity has no 'max_abs_diff'"),
    ("parity.rows", r"parity has no 'rows'"),
    ("parity.bound", r"parity has no 'bound'"),
    ("parity_sample.features", r"parity_sample missing or malformed: 'features'"),
    ("parity_sample.probabilities", r"parity_sample missing or malformed: 'probabilities'"),
    ("drift_baseline.score", r"drift baseline needs 'features' and 'score'"),
]


@pytest.mark.parametrize(("path", "problem"), REQUIRED, ids=[p for p, _ in REQUIRED])
def test_a_missing_required_field_is_refused_naming_it(
    raw: dict[str, Any], path: str, problem: str
) -> None:
    with pytest.raises(ModelLoadError, match=problem):
        Manifest.from_json(broken(raw, path, delete=True))


MISTYPED: list[tuple[str, Any, str]] = [
    ("format", "1", r"manifest\.format must be int"),
    ("format", 2, r"format is 2, not 1"),
    ("version", 1, r"manifest\.version must be str"),
    ("version", "../v1", r"version '\.\./v1' is not a version name"),
    ("created_at", None, r"manifest\.created_at must be str"),
    ("feature_names", "V1,V2", r"manifest\.feature_names must be list"),
    ("feature_names", [*FEATURE_NAMES[1:], "V1"], r"feature_names differ from schemas\.features"),
    ("onnx", [], r"manifest\.onnx must be dict"),
    ("onnx.sha256", "ABC", r"onnx\.sha256 must be 64 lowercase hex"),
    ("onnx.sha256", 7, r"onnx\.sha256 must be str"),
    ("onnx.input_name", "", r"onnx input_name and probability_output are required"),
    ("onnx.probability_output", ["p"], r"onnx\.probability_output must be str"),
    ("onnx.opset", 13.0, r"onnx\.opset must be int"),
    ("onnx.opset", True, r"onnx\.opset must be int"),
    ("onnx.input_shape", [None, 30], r"onnx\.input_shape is \[None, 30\], expected \[null, 29\]"),
    ("onnx.input_shape", [1, 29], r"onnx\.input_shape is \[1, 29\], expected \[null, 29\]"),
    ("onnx.input_shape", [None], r"onnx\.input_shape is \[None\]"),
    ("onnx.input_shape", ["N", 29], r"onnx\.input_shape .* is not a shape"),
    ("onnx.input_shape", [True, 29], r"onnx\.input_shape .* is not a shape"),
    ("onnx.input_shape", "[null, 29]", r"onnx\.input_shape must be list"),
    ("onnx.opset_imports", {"": "17"}, r"onnx\.opset_imports must map domains to integers"),
    ("onnx.opset_imports", {"": True}, r"onnx\.opset_imports must map domains to integers"),
    ("onnx.file", "other.onnx", r"onnx\.file must be 'model\.onnx'"),
    ("thresholds.block", "0.5", r"thresholds\.block must be int/float"),
    ("thresholds.block", True, r"thresholds\.block must be int/float"),
    ("thresholds.block", float("inf"), r"thresholds\.block must be finite"),
    ("thresholds.review", 0.99, r"0 <= review <= block <= 1"),
    ("thresholds.block", 1.5, r"0 <= review <= block <= 1"),
    ("thresholds.review_cost", None, r"thresholds\.review_cost must be int/float"),
    ("data.rows", "5000", r"data\.rows must be int"),
    ("data.frauds", 1.0, r"data\.frauds must be int"),
    ("data.seed", "7", r"data\.seed must be an integer or null"),
    ("data.source", None, r"data\.source must be str"),
    ("parity.rows", 10.5, r"parity\.rows must be int"),
    ("parity.bound", "tiny", r"parity\.bound must be int/float"),
    ("parity_sample.features", [[0.0] * 28], r"parity_sample has shape \(1, 28\)"),
    ("parity_sample.probabilities", [], r"parity_sample has shape"),
    ("parity_sample.features", "rows", r"parity_sample missing or malformed"),
    ("metrics", [], r"manifest\.metrics must be dict"),
    ("metrics.test", [1, 2], r"metrics must hold JSON objects"),
    ("imbalance_study", {}, r"manifest\.imbalance_study must be list"),
    ("imbalance_study", [1, "none"], r"imbalance_study must hold JSON objects"),
    ("training", "fast", r"manifest\.training must be dict"),
    ("plots", "pr_curve.png", r"plots must be a list of file names"),
    ("plots", [1], r"plots must be a list of file names"),
    ("drift_baseline.rows", -5, r"drift baseline: rows must be a non-negative integer"),
    ("drift_baseline.features.V14.std", 0, r"drift baseline: V14 needs a finite mean and a std"),
]


@pytest.mark.parametrize(
    ("path", "value", "problem"), MISTYPED, ids=[f"{p}={v!r:.20}" for p, v, _ in MISTYPED]
)
def test_a_mistyped_field_is_refused_naming_it(
    raw: dict[str, Any], path: str, value: Any, problem: str
) -> None:
    with pytest.raises(ModelLoadError, match=problem):
        Manifest.from_json(broken(raw, path, value))


def test_optional_fields_may_be_absent(raw: dict[str, Any]) -> None:
    lean = broken(broken(raw, "plots", delete=True), "onnx.opset_imports", delete=True)
    manifest = Manifest.from_json(broken(lean, "data.seed", None))
    assert manifest.plots == () and manifest.data.seed is None
    assert dict(manifest.onnx.opset_imports) == {}


@pytest.mark.parametrize("obj", [None, [], "manifest", 1])
def test_a_manifest_that_is_not_an_object_is_refused(obj: object) -> None:
    with pytest.raises(ModelLoadError, match="manifest is not a JSON object"):
        Manifest.from_json(obj)


def test_read_manifest_names_the_bundle_and_the_problem(
    models_dir: Path, raw: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(ModelLoadError, match=r"invalid model version '\.\./v1'"):
        read_manifest(models_dir, "../v1")
    with pytest.raises(ModelLoadError, match=r"model bundle v7: .*manifest\.json does not exist"):
        read_manifest(models_dir, "v7")

    shutil.copytree(models_dir / "v1", tmp_path / "v2")  # a copy under another name
    with pytest.raises(ModelLoadError, match="model bundle v2: manifest names version 'v1'"):
        read_manifest(tmp_path, "v2")

    (tmp_path / "v3").mkdir()
    (tmp_path / "v3" / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"model bundle v3: cannot read .*manifest\.json"):
        read_manifest(tmp_path, "v3")

    (tmp_path / "v4").mkdir()
    (tmp_path / "v4" / MANIFEST_FILE).write_text(
        json.dumps(broken(broken(raw, "version", "v4"), "onnx.opset", delete=True))
    )
    with pytest.raises(ModelLoadError, match="model bundle v4: manifest: onnx has no 'opset'"):
        read_manifest(tmp_path, "v4")
