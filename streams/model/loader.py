"""Loading model bundles for serving: verify every check, then build the ONNX session.

:func:`load_bundle` trusts nothing: it reads the typed manifest (``schemas.manifest``, which checks
every field, the drift baseline included), hashes the model bytes it is about to load against the
manifest's sha256, checks the ONNX graph's input/output names, types and shapes against the
manifest, then runs a parity smoke test against probabilities recorded at training time. Any
failure raises :class:`ModelLoadError` naming the version and the failed check, so the caller can
refuse the bundle and keep serving the old one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from schemas.errors import ModelLoadError
from schemas.features import N_FEATURES
from schemas.manifest import Manifest, OnnxSignature, read_manifest
from schemas.models_dir import MODEL_FILE, current_version, is_version_name

PARITY_TOLERANCE: Final[float] = 1e-5


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """A verified model bundle with a ready ONNX Runtime session.

    ``predict_proba`` is safe to call from one thread at a time per bundle (the session is
    single-threaded by design: the scorer scales with processes, not threads).
    """

    version: str
    path: Path
    manifest: Manifest = field(repr=False)
    sha256: str
    block_threshold: float
    review_threshold: float
    input_name: str
    probability_output: str
    session: ort.InferenceSession = field(repr=False)

    def predict_proba(self, features: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """Fraud probability for each row of a ``(n, 29)`` matrix in FEATURE_NAMES order.

        One ``session.run`` per call, fetching only the probability output. Input is cast to
        contiguous float32 (a no-op when it already is). Raises ValueError on a wrong shape.
        """
        if features.ndim != 2 or features.shape[1] != N_FEATURES:
            raise ValueError(f"expected a (n, {N_FEATURES}) feature matrix, got {features.shape}")
        matrix = np.ascontiguousarray(features, dtype=np.float32)
        (probabilities,) = self.session.run([self.probability_output], {self.input_name: matrix})
        return np.asarray(probabilities, dtype=np.float64)[:, 1]


class _Refusal(Exception):
    """One failed check inside load_bundle (turned into a ModelLoadError naming the version)."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check} check failed: {detail}")


def _session(payload: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors share no base class below Exception
        raise _Refusal("onnx", f"ONNX Runtime cannot load {MODEL_FILE}: {exc}") from exc


def _dims(shape: list[object]) -> tuple[int | None, ...]:
    """A graph shape with symbolic dimensions (strings, None) as None."""
    return tuple(d if isinstance(d, int) else None for d in shape)


def _check_signature(session: ort.InferenceSession, onnx_info: OnnxSignature) -> None:
    inputs = {node.name: node for node in session.get_inputs()}
    if onnx_info.input_name not in inputs or len(inputs) != 1:
        raise _Refusal(
            "input", f"model inputs are {sorted(inputs)}, manifest says {onnx_info.input_name!r}"
        )
    graph_input = inputs[onnx_info.input_name]
    shape = _dims(list(graph_input.shape))
    if shape != onnx_info.input_shape:
        raise _Refusal(
            "input shape",
            f"model input shape is {list(shape)}, manifest says {list(onnx_info.input_shape)}",
        )
    if graph_input.type != "tensor(float)":
        raise _Refusal("input type", f"model input is {graph_input.type}, not float32")
    outputs = {node.name: node for node in session.get_outputs()}
    name = onnx_info.probability_output
    if name not in outputs:
        raise _Refusal("output", f"model outputs are {sorted(outputs)}, no {name!r}")
    out_shape = list(outputs[name].shape)
    if len(out_shape) != 2 or out_shape[1] != 2:
        raise _Refusal("output shape", f"{name!r} has shape {out_shape}, expected [?, 2]")


def _verify(models_dir: Path, version: str) -> ModelBundle:
    path = models_dir / version
    model_path = path / MODEL_FILE
    if not model_path.is_file():
        raise _Refusal("files", f"{model_path} is missing")
    try:
        manifest = read_manifest(models_dir, version)
    except ModelLoadError as exc:
        detail = str(exc).removeprefix(f"model bundle {version}: ").removeprefix("manifest: ")
        raise _Refusal("manifest", detail) from None
    try:
        payload = model_path.read_bytes()
    except OSError as exc:
        raise _Refusal("files", f"cannot read {MODEL_FILE}: {exc}") from None
    # Hash the bytes that are loaded, so the file cannot change between check and use.
    digest = hashlib.sha256(payload).hexdigest()
    if digest != manifest.onnx.sha256:
        raise _Refusal(
            "sha256",
            f"{MODEL_FILE} hashes to {digest[:12]}..., manifest says "
            f"{manifest.onnx.sha256[:12]}...",
        )
    session = _session(payload)
    _check_signature(session, manifest.onnx)
    bundle = ModelBundle(
        version,
        path,
        manifest,
        digest,
        manifest.thresholds.block,
        manifest.thresholds.review,
        manifest.onnx.input_name,
        manifest.onnx.probability_output,
        session,
    )
    _check_parity_sample(bundle)
    return bundle


def _check_parity_sample(bundle: ModelBundle) -> None:
    sample = bundle.manifest.parity_sample
    worst = float(np.max(np.abs(bundle.predict_proba(sample.features) - sample.probabilities)))
    if not worst <= PARITY_TOLERANCE:
        raise _Refusal(
            "parity", f"max |difference| {worst:.3g} on the sample exceeds {PARITY_TOLERANCE:g}"
        )


def load_bundle(models_dir: Path, version: str) -> ModelBundle:
    """Load and verify ``<models_dir>/<version>``.

    Checks, in order: the version name, model.onnx exists, the manifest (every field, the drift
    baseline included; its version is the directory's), sha256 of model.onnx, the ONNX session
    loads, its input name/shape/type and probability output match the manifest, and the parity
    sample reproduces within 1e-5. Raises ModelLoadError "model bundle <version> refused:
    <check> check failed: ..." on the first failure. Blocks for the file reads and the session
    build (tens of ms).
    """
    if not is_version_name(version):
        raise ModelLoadError(f"model bundle {version!r} refused: invalid version name")
    try:
        return _verify(models_dir, version)
    except _Refusal as refusal:
        raise ModelLoadError(f"model bundle {version} refused: {refusal}") from None


def load_current(models_dir: Path) -> ModelBundle:
    """The bundle ``<models_dir>/current`` names, verified by :func:`load_bundle`."""
    return load_bundle(models_dir, current_version(models_dir))
