"""The scorer's side of the bundle contract: what load_bundle accepts, and what it refuses."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.errors import ModelLoadError
from schemas.manifest import read_manifest
from schemas.models_dir import activate_version, current_version
from streams.model.loader import ModelBundle, load_bundle, load_current


@pytest.fixture
def copy_dir(models_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's models dir (v1, active), safe to damage."""
    target = tmp_path / "models"
    shutil.copytree(models_dir, target)
    return target


def _edit_manifest(models: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = models / "v1" / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_the_active_bundle_loads_and_scores_float32_batches(models_dir: Path) -> None:
    bundle = load_current(models_dir)
    assert isinstance(bundle, ModelBundle) and bundle.version == "v1"
    manifest = read_manifest(models_dir, "v1")
    assert bundle.block_threshold == manifest.thresholds.block
    assert bundle.review_threshold == manifest.thresholds.review <= bundle.block_threshold
    assert bundle.sha256 == manifest.onnx.sha256
    features = manifest.parity_sample.features.astype(np.float32)
    scores = bundle.predict_proba(features)
    assert scores.dtype == np.float64 and scores.shape == (64,)
    np.testing.assert_allclose(scores, manifest.parity_sample.probabilities, atol=1e-7)
    assert ((scores >= 0) & (scores <= 1)).all()
    options = bundle.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)


def test_predict_proba_rejects_a_wrong_feature_count(models_dir: Path) -> None:
    bundle = load_current(models_dir)
    with pytest.raises(ValueError, match=r"\(n, 29\)"):
        bundle.predict_proba(np.zeros((3, 28), dtype=np.float32))


def test_a_tampered_model_is_refused_by_sha256(copy_dir: Path) -> None:
    model = copy_dir / "v1" / "model.onnx"
    model.write_bytes(model.read_bytes() + b"tampered")
    with pytest.raises(ModelLoadError, match=r"model bundle v1 refused: sha256 check failed"):
        load_bundle(copy_dir, "v1")


def test_a_missing_file_is_refused(copy_dir: Path) -> None:
    (copy_dir / "v1" / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"v1 refused: files check failed: .*model.onnx"):
        load_bundle(copy_dir, "v1")


def test_an_absent_version_is_refused(copy_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"v9 refused: files check failed"):
        load_bundle(copy_dir, "v9")


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (lambda m: m["feature_names"].reverse(), "manifest"),
        (lambda m: m["onnx"].update(probability_output="scores"), "output"),
        (lambda m: m["onnx"].update(input_name="x"), "input"),
        (lambda m: m["onnx"].update(input_shape=[None, 30]), "manifest"),
        (lambda m: m["thresholds"].update(review=0.9, block=0.1), "manifest"),
        (lambda m: m.update(version="v7"), "manifest"),
        (lambda m: m.update(format=2), "manifest"),
        (lambda m: m.pop("drift_baseline"), "manifest"),
        (lambda m: m["drift_baseline"]["features"].pop("V3"), "manifest"),
        (lambda m: m["drift_baseline"]["score"].update(proportions=[1.0]), "manifest"),
        (
            lambda m: m["parity_sample"].update(
                probabilities=[p + 1e-3 for p in m["parity_sample"]["probabilities"]]
            ),
            "parity",
        ),
    ],
    ids=[
        "feature-order",
        "output",
        "input",
        "input-shape",
        "thresholds",
        "version",
        "format",
        "no-drift-baseline",
        "drift-baseline-feature",
        "drift-baseline-score",
        "parity",
    ],
)
def test_an_inconsistent_manifest_is_refused_naming_the_check(
    copy_dir: Path, change: Callable[[dict[str, Any]], None], check: str
) -> None:
    _edit_manifest(copy_dir, change)
    with pytest.raises(ModelLoadError, match=rf"model bundle v1 refused: {check} check failed"):
        load_bundle(copy_dir, "v1")


def test_a_model_with_the_wrong_input_width_is_refused(copy_dir: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["features"], ["probabilities"])],
        "wide",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 30])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 30])],
    )
    payload = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    payload.ir_version = 8
    data = payload.SerializeToString()
    (copy_dir / "v1" / "model.onnx").write_bytes(data)
    _edit_manifest(copy_dir, lambda m: m["onnx"].update(sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(ModelLoadError, match=r"input shape check failed: .*\[None, 30\]"):
        load_bundle(copy_dir, "v1")
    # A manifest that claims the graph's wrong width is refused before the graph is even read.
    _edit_manifest(copy_dir, lambda m: m["onnx"].update(input_shape=[None, 30]))
    with pytest.raises(ModelLoadError, match=r"manifest check failed: onnx.input_shape"):
        load_bundle(copy_dir, "v1")


def test_current_version_needs_a_non_empty_pointer(copy_dir: Path) -> None:
    assert current_version(copy_dir) == "v1"
    (copy_dir / "current").write_text("\n")
    with pytest.raises(ModelLoadError, match="is empty"):
        current_version(copy_dir)
    (copy_dir / "current").unlink()
    with pytest.raises(ModelLoadError, match="does not exist"):
        current_version(copy_dir)


def test_activate_replaces_the_pointer_and_refuses_unknown_versions(
    second_bundle: Any, copy_dir: Path
) -> None:
    assert (copy_dir / second_bundle.version).is_dir()  # session fixtures are set up first
    activate_version(copy_dir, "v2")
    assert (copy_dir / "current").read_text() == "v2\n"
    assert load_current(copy_dir).version == "v2"
    with pytest.raises(ModelLoadError, match="no bundle"):
        activate_version(copy_dir, "v5")
    assert (copy_dir / "current").read_text() == "v2\n"
    assert sorted(p.name for p in copy_dir.iterdir()) == ["current", "v1", "v2"]  # no temp files


def test_second_bundle_is_a_different_model(models_dir: Path, second_bundle: Any) -> None:
    first, second = load_bundle(models_dir, "v1"), load_bundle(models_dir, "v2")
    assert second_bundle.version == "v2" and current_version(models_dir) == "v1"
    assert first.sha256 != second.sha256
    assert second.manifest.data.seed == 8


@pytest.mark.parametrize("name", ["../v1", "current", "", "v1/..", ".hidden"])
def test_unsafe_version_names_are_refused(models_dir: Path, name: str) -> None:
    with pytest.raises(ModelLoadError, match="invalid version"):
        load_bundle(models_dir, name)
