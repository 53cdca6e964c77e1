"""ONNX export of the final XGBoost model and the parity check that guards it.

The model is converted with onnxmltools to an ``ai.onnx.ml`` TreeEnsembleClassifier taking a
float32 ``(n, 29)`` tensor. Both XGBoost and ONNX Runtime are fed the same float32 matrix, so the
only difference left is the order of float32 leaf sums; the check measures it over the whole test
set and refuses the export if it exceeds the configured bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from schemas.errors import ModelLoadError
from schemas.features import N_FEATURES
from training.study import FinalModel

INPUT_NAME: Final[str] = "features"
PROBABILITY_OUTPUT: Final[str] = "probabilities"
TARGET_OPSET: Final[int] = 15


@dataclass(frozen=True)
class OnnxModel:
    """Serialised ONNX bytes and the names/shape the manifest records."""

    payload: bytes
    input_name: str
    probability_output: str
    opset: int
    opset_imports: dict[str, int]


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime vs XGBoost on the same rows: the worst absolute probability difference."""

    max_abs_diff: float
    rows: int
    bound: float
    onnx_probabilities: np.ndarray


def to_onnx(model: FinalModel) -> OnnxModel:
    """Convert the final model; raises ModelLoadError if the converter output is unusable."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    onnx_model = convert_xgboost(
        model.classifier,
        initial_types=[(INPUT_NAME, FloatTensorType([None, N_FEATURES]))],
        target_opset=TARGET_OPSET,
    )
    outputs = [output.name for output in onnx_model.graph.output]
    if PROBABILITY_OUTPUT not in outputs:
        raise ModelLoadError(
            f"ONNX export has outputs {outputs}, not the expected {PROBABILITY_OUTPUT!r}"
        )
    imports = {entry.domain or "ai.onnx": int(entry.version) for entry in onnx_model.opset_import}
    return OnnxModel(
        payload=onnx_model.SerializeToString(),
        input_name=INPUT_NAME,
        probability_output=PROBABILITY_OUTPUT,
        opset=imports.get("ai.onnx", TARGET_OPSET),
        opset_imports=imports,
    )


def onnx_probabilities(onnx_model: OnnxModel, features: np.ndarray) -> np.ndarray:
    """Fraud probabilities from ONNX Runtime (single-threaded, like the scorer)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_model.payload, options, providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(
        [onnx_model.probability_output],
        {onnx_model.input_name: np.ascontiguousarray(features, dtype=np.float32)},
    )
    return np.asarray(probabilities[:, 1], dtype=np.float64)


def check_parity(
    model: FinalModel, onnx_model: OnnxModel, features: np.ndarray, bound: float
) -> Parity:
    """Compare ONNX Runtime with XGBoost on ``features`` (float32).

    Raises ModelLoadError naming the figure and the bound when max |difference| > ``bound``.
    """
    matrix = np.ascontiguousarray(features, dtype=np.float32)
    expected = model.predict_proba(matrix)
    actual = onnx_probabilities(onnx_model, matrix)
    worst = float(np.max(np.abs(actual - expected))) if len(matrix) else 0.0
    if not worst <= bound:
        raise ModelLoadError(
            f"ONNX parity check failed: max |ONNX - XGBoost| = {worst:.3g} over {len(matrix)} "
            f"test rows exceeds the bound {bound:.3g}; export refused, no bundle written"
        )
    return Parity(worst, len(matrix), bound, actual)
