"""Reading model bundles: the scorer's side of the bundle contract (numpy + onnxruntime only).

A bundle is ``<models_dir>/<version>/`` holding ``model.onnx`` and ``manifest.json`` (plus a
report and plots for people). ``<models_dir>/current`` is a text file naming the active version.
:func:`load_bundle` trusts nothing: it checks the files, the model's sha256, the feature order,
the ONNX input/output signature and the thresholds, then runs a parity smoke test against
probabilities recorded at training time. Any failure raises :class:`ModelLoadError` naming the
version and the failed check, so the caller can refuse the bundle and keep serving the old one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from schemas.errors import ConfigError, ModelLoadError
from schemas.features import FEATURE_NAMES, N_FEATURES

MANIFEST_FORMAT: Final[int] = 1
MODEL_FILE: Final[str] = "model.onnx"
MANIFEST_FILE: Final[str] = "manifest.json"
CURRENT_FILE: Final[str] = "current"
PARITY_TOLERANCE: Final[float] = 1e-5
VERSION_PATTERN: Final[re.Pattern[str]] = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """A verified model bundle with a ready ONNX Runtime session.

    ``predict_proba`` is safe to call from one thread at a time per bundle (the session is
    single-threaded by design: the scorer scales with processes, not threads).
    """

    version: str
    path: Path
    manifest: dict[str, Any] = field(repr=False)
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


def validate_version_name(version: str) -> str:
    """Return ``version`` if it is a safe directory name; else raise ConfigError."""
    if not VERSION_PATTERN.fullmatch(version) or version == CURRENT_FILE:
        raise ConfigError(
            f"invalid model version {version!r}: use letters, digits, '.', '_' or '-' "
            f"(at most 64, not starting with a symbol, not {CURRENT_FILE!r})"
        )
    return version


def list_versions(models_dir: Path) -> list[str]:
    """Names of the bundle directories in ``models_dir`` (those holding a manifest), sorted
    with ``vN`` names in numeric order first."""
    if not models_dir.is_dir():
        return []
    names = [
        entry.name
        for entry in models_dir.iterdir()
        if entry.is_dir()
        and VERSION_PATTERN.fullmatch(entry.name)
        and (entry / MANIFEST_FILE).exists()
    ]

    def order(name: str) -> tuple[int, int, str]:
        match = re.fullmatch(r"v(\d+)", name)
        return (0, int(match.group(1)), name) if match else (1, 0, name)

    return sorted(names, key=order)


def current_version(models_dir: Path) -> str:
    """The active version named by ``<models_dir>/current``.

    Raises ModelLoadError if the file is missing, unreadable, empty or names an invalid version.
    """
    pointer = models_dir / CURRENT_FILE
    try:
        text = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ModelLoadError(
            f"no active model: {pointer} does not exist (train one with 'sentinel train "
            "--activate')"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {pointer}: {exc}") from None
    if not text:
        raise ModelLoadError(f"no active model: {pointer} is empty")
    if not VERSION_PATTERN.fullmatch(text):
        raise ModelLoadError(f"{pointer} names an invalid version {text!r}")
    return text


def activate_version(models_dir: Path, version: str) -> None:
    """Point ``<models_dir>/current`` at ``version``, atomically (temp file + os.replace).

    Readers see the old or the new name, never a partial one. Raises ModelLoadError if the
    version has no bundle, ConfigError if the pointer cannot be written.
    """
    validate_version_name(version)
    if not (models_dir / version / MANIFEST_FILE).is_file():
        raise ModelLoadError(f"cannot activate {version}: no bundle at {models_dir / version}")
    try:
        handle, temp_name = tempfile.mkstemp(prefix=".current-", dir=models_dir)
        try:
            os.fchmod(handle, 0o644)  # mkstemp makes it private; scorers may run as another user
            with os.fdopen(handle, "w", encoding="utf-8") as temp:
                temp.write(f"{version}\n")
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, models_dir / CURRENT_FILE)
        finally:
            if os.path.exists(temp_name):
                os.unlink(temp_name)
    except OSError as exc:
        raise ConfigError(f"cannot write {models_dir / CURRENT_FILE}: {exc.strerror}") from None


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


def _check_signature(session: ort.InferenceSession, onnx_info: dict[str, Any]) -> tuple[str, str]:
    input_name = str(onnx_info.get("input_name", ""))
    output_name = str(onnx_info.get("probability_output", ""))
    inputs = {node.name: node for node in session.get_inputs()}
    if input_name not in inputs or len(inputs) != 1:
        raise _Refusal("input", f"model inputs are {sorted(inputs)}, manifest says {input_name!r}")
    shape = list(inputs[input_name].shape)
    if len(shape) != 2 or isinstance(shape[0], int) or shape[1] != N_FEATURES:
        raise _Refusal("input shape", f"model input shape is {shape}, expected [?, {N_FEATURES}]")
    if inputs[input_name].type != "tensor(float)":
        raise _Refusal("input type", f"model input is {inputs[input_name].type}, not float32")
    outputs = {node.name: node for node in session.get_outputs()}
    if output_name not in outputs:
        raise _Refusal("output", f"model outputs are {sorted(outputs)}, no {output_name!r}")
    out_shape = list(outputs[output_name].shape)
    if len(out_shape) != 2 or out_shape[1] != 2:
        raise _Refusal("output shape", f"{output_name!r} has shape {out_shape}, expected [?, 2]")
    return input_name, output_name


def _thresholds(manifest: dict[str, Any]) -> tuple[float, float]:
    try:
        block = float(manifest["thresholds"]["block"])
        review = float(manifest["thresholds"]["review"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _Refusal("thresholds", f"missing or non-numeric: {exc}") from None
    if not (math.isfinite(block) and math.isfinite(review) and 0.0 <= review <= block):
        raise _Refusal("thresholds", f"need 0 <= review <= block, got {review} and {block}")
    return block, review


def read_manifest(models_dir: Path, version: str) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a bundle, without the other checks of :func:`load_bundle`.

    For tools that only need metadata (the drift baseline, metrics). Raises ModelLoadError if the
    version name is invalid or the manifest is missing or not a JSON object.
    """
    if not VERSION_PATTERN.fullmatch(version) or version == CURRENT_FILE:
        raise ModelLoadError(f"invalid model version {version!r}")
    path = models_dir / version / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"model bundle {version}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"model bundle {version}: cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"model bundle {version}: {path} is not a JSON object")
    return manifest


def _verify(models_dir: Path, version: str) -> ModelBundle:
    path = models_dir / version
    model_path, manifest_path = path / MODEL_FILE, path / MANIFEST_FILE
    for required in (model_path, manifest_path):
        if not required.is_file():
            raise _Refusal("files", f"{required} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        payload = model_path.read_bytes()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Refusal("files", f"cannot read the bundle: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise _Refusal("format", f"manifest format is not {MANIFEST_FORMAT}")
    if manifest.get("version") != version:
        raise _Refusal("version", f"manifest names version {manifest.get('version')!r}")
    onnx_info = manifest.get("onnx")
    if not isinstance(onnx_info, dict):
        raise _Refusal("manifest", "no 'onnx' section")
    # Hash the bytes that are loaded, so the file cannot change between check and use.
    digest = hashlib.sha256(payload).hexdigest()
    if digest != onnx_info.get("sha256"):
        raise _Refusal(
            "sha256",
            f"{MODEL_FILE} hashes to {digest[:12]}..., manifest says "
            f"{str(onnx_info.get('sha256'))[:12]}...",
        )
    if tuple(manifest.get("feature_names") or ()) != FEATURE_NAMES:
        raise _Refusal("feature order", "feature_names differ from schemas.features")
    block, review = _thresholds(manifest)
    session = _session(payload)
    input_name, output_name = _check_signature(session, onnx_info)
    bundle = ModelBundle(
        version, path, manifest, digest, block, review, input_name, output_name, session
    )
    _check_parity_sample(bundle)
    return bundle


def _check_parity_sample(bundle: ModelBundle) -> None:
    sample = bundle.manifest.get("parity_sample")
    try:
        features = np.asarray(sample["features"], dtype=np.float32)  # type: ignore[index]
        expected = np.asarray(sample["probabilities"], dtype=np.float64)  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as exc:
        raise _Refusal("parity", f"parity_sample missing or malformed: {exc}") from None
    if features.ndim != 2 or features.shape != (len(expected), N_FEATURES) or not len(expected):
        raise _Refusal("parity", f"parity_sample has shape {features.shape}")
    worst = float(np.max(np.abs(bundle.predict_proba(features) - expected)))
    if not worst <= PARITY_TOLERANCE:
        raise _Refusal(
            "parity", f"max |difference| {worst:.3g} on the sample exceeds {PARITY_TOLERANCE:g}"
        )


def load_bundle(models_dir: Path, version: str) -> ModelBundle:
    """Load and verify ``<models_dir>/<version>``.

    Checks, in order: the version name, both files exist, manifest format and version, sha256
    of model.onnx, feature_names == FEATURE_NAMES, thresholds, the ONNX session loads, input
    ``[?, 29]`` float32 and the named probability output exist, and the parity sample reproduces
    within 1e-5. Raises ModelLoadError "model bundle <version> refused: <check> check failed: ..."
    on the first failure. Blocks for the file reads and the session build (tens of ms).
    """
    if not VERSION_PATTERN.fullmatch(version) or version == CURRENT_FILE:
        raise ModelLoadError(f"model bundle {version!r} refused: invalid version name")
    try:
        return _verify(models_dir, version)
    except _Refusal as refusal:
        raise ModelLoadError(f"model bundle {version} refused: {refusal}") from None


def load_current(models_dir: Path) -> ModelBundle:
    """The bundle ``<models_dir>/current`` names, verified by :func:`load_bundle`."""
    return load_bundle(models_dir, current_version(models_dir))
