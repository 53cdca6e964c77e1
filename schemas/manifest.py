"""The model manifest: one typed, frozen record that training writes and serving reads.

``models/<version>/manifest.json`` describes a bundle: its version, the feature order, the ONNX
signature and the model's sha256, the decision thresholds, the training metrics and imbalance
study, the data source, the ONNX-vs-XGBoost parity figure and a parity sample, and the drift
baseline. :meth:`Manifest.from_json` parses and checks *all* of it at once (the drift baseline
included), so a manifest in hand is complete: nothing is parsed later inside the scoring loop.
Checks against the ONNX graph itself (shapes, names, sha256, parity) need onnxruntime and live in
``streams.model.loader``; this module needs only numpy.

This is the only reader and writer of manifest fields: training builds a :class:`Manifest` and
calls :meth:`Manifest.to_json`; everything else calls :func:`read_manifest`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from schemas.drift_baseline import DriftBaseline
from schemas.errors import ModelLoadError
from schemas.features import FEATURE_NAMES, N_FEATURES
from schemas.models_dir import MANIFEST_FILE, MANIFEST_FORMAT, MODEL_FILE, is_version_name

F64 = npt.NDArray[np.float64]
DECISION_RULE: Final[str] = "BLOCK if p >= block; REVIEW if review <= p < block; else ALLOW"


def _field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``obj[key]`` if it has type ``kind`` (bool is never a number); else ModelLoadError."""
    if key not in obj:
        raise ModelLoadError(f"manifest: {where} has no {key!r}")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise ModelLoadError(f"manifest: {where}.{key} must be {names}, got {value!r:.60}")
    return value


def _section(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = _field(obj, key, dict, "manifest")
    return value  # type: ignore[no-any-return]


def _number(obj: Mapping[str, Any], key: str, where: str) -> float:
    value = float(_field(obj, key, (int, float), where))
    if not math.isfinite(value):
        raise ModelLoadError(f"manifest: {where}.{key} must be finite, got {value}")
    return value


@dataclass(frozen=True)
class OnnxSignature:
    """The exported graph: file, sha256 of its bytes, input/output names and shapes, opsets."""

    sha256: str
    input_name: str
    probability_output: str
    opset: int
    input_shape: tuple[int | None, ...] = (None, N_FEATURES)
    opset_imports: Mapping[str, int] = field(default_factory=dict)
    file: str = MODEL_FILE

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ModelLoadError("manifest: onnx.sha256 must be 64 lowercase hex characters")
        if not self.input_name or not self.probability_output:
            raise ModelLoadError("manifest: onnx input_name and probability_output are required")
        if self.input_shape != (None, N_FEATURES):
            raise ModelLoadError(
                f"manifest: onnx.input_shape is {list(self.input_shape)}, expected "
                f"[null, {N_FEATURES}] (a batch of {N_FEATURES} features)"
            )
        if self.file != MODEL_FILE:
            raise ModelLoadError(f"manifest: onnx.file must be {MODEL_FILE!r}")

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> OnnxSignature:
        where = "onnx"
        shape = _field(obj, "input_shape", list, where)
        if not all(d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in shape):
            raise ModelLoadError(f"manifest: onnx.input_shape {shape!r:.60} is not a shape")
        imports = obj.get("opset_imports", {})
        if not isinstance(imports, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in imports.items()
        ):
            raise ModelLoadError("manifest: onnx.opset_imports must map domains to integers")
        return cls(
            sha256=_field(obj, "sha256", str, where),
            input_name=_field(obj, "input_name", str, where),
            probability_output=_field(obj, "probability_output", str, where),
            opset=_field(obj, "opset", int, where),
            input_shape=tuple(shape),
            opset_imports=imports,
            file=_field(obj, "file", str, where),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "input_name": self.input_name,
            "input_shape": list(self.input_shape),
            "probability_output": self.probability_output,
            "opset": self.opset,
            "opset_imports": dict(self.opset_imports),
        }


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds on the fraud probability and the costs they were chosen with."""

    block: float
    review: float
    review_cost: float
    review_budget: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.review <= self.block <= 1.0):
            raise ModelLoadError(
                f"manifest: thresholds need 0 <= review <= block <= 1, got review "
                f"{self.review} and block {self.block}"
            )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Thresholds:
        where = "thresholds"
        return cls(
            block=_number(obj, "block", where),
            review=_number(obj, "review", where),
            review_cost=_number(obj, "review_cost", where),
            review_budget=_number(obj, "review_budget", where),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "block": self.block,
            "review": self.review,
            "review_cost": self.review_cost,
            "review_budget": self.review_budget,
            "rule": DECISION_RULE,
        }


@dataclass(frozen=True)
class DataSource:
    """The data a model was trained on: where from, its sha256, size, and the synthetic seed."""

    source: str
    sha256: str
    rows: int
    frauds: int
    seed: int | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DataSource:
        where = "data"
        seed = obj.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ModelLoadError("manifest: data.seed must be an integer or null")
        return cls(
            source=_field(obj, "source", str, where),
            sha256=_field(obj, "sha256", str, where),
            rows=_field(obj, "rows", int, where),
            frauds=_field(obj, "frauds", int, where),
            seed=seed,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "rows": self.rows,
            "frauds": self.frauds,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ParityCheck:
    """ONNX vs XGBoost at export: the worst absolute difference over ``rows`` test rows."""

    max_abs_diff: float
    rows: int
    bound: float

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ParityCheck:
        where = "parity"
        return cls(
            max_abs_diff=_number(obj, "max_abs_diff", where),
            rows=_field(obj, "rows", int, where),
            bound=_number(obj, "bound", where),
        )

    def to_json(self) -> dict[str, Any]:
        return {"max_abs_diff": self.max_abs_diff, "rows": self.rows, "bound": self.bound}


@dataclass(frozen=True, eq=False)
class ParitySample:
    """Rows (n, 29) and the probabilities ONNX Runtime gave them at training time."""

    features: F64
    probabilities: F64

    def __post_init__(self) -> None:
        n = len(self.probabilities)
        if n == 0 or self.features.shape != (n, N_FEATURES) or self.probabilities.ndim != 1:
            raise ModelLoadError(
                f"manifest: parity_sample has shape {self.features.shape} for {n} probabilities"
            )
        if not (np.isfinite(self.features).all() and np.isfinite(self.probabilities).all()):
            raise ModelLoadError("manifest: parity_sample holds NaN or Inf")

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ParitySample:
        try:
            features = np.asarray(obj["features"], dtype=np.float64)
            probabilities = np.asarray(obj["probabilities"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"manifest: parity_sample missing or malformed: {exc}") from None
        return cls(features, probabilities)

    def to_json(self) -> dict[str, Any]:
        return {
            "features": self.features.tolist(),
            "probabilities": self.probabilities.tolist(),
        }


@dataclass(frozen=True, eq=False)
class Manifest:
    """Everything a bundle says about itself. Frozen; every field checked on construction.

    ``metrics`` (``test``/``validation`` decision metrics), ``imbalance_study``, ``training`` and
    ``plots`` (file names in the bundle) are reports for people, carried as JSON; every other field
    is typed.
    """

    version: str
    created_at: str
    onnx: OnnxSignature
    thresholds: Thresholds
    data: DataSource
    parity: ParityCheck
    parity_sample: ParitySample
    drift_baseline: DriftBaseline
    metrics: Mapping[str, Mapping[str, Any]]
    imbalance_study: tuple[Mapping[str, Any], ...]
    training: Mapping[str, Any]
    plots: tuple[str, ...] = ()
    feature_names: tuple[str, ...] = FEATURE_NAMES
    format: int = MANIFEST_FORMAT

    def __post_init__(self) -> None:
        if self.format != MANIFEST_FORMAT:
            raise ModelLoadError(f"manifest: format is {self.format!r}, not {MANIFEST_FORMAT}")
        if not is_version_name(self.version):
            raise ModelLoadError(f"manifest: version {self.version!r} is not a version name")
        if tuple(self.feature_names) != FEATURE_NAMES:
            raise ModelLoadError("manifest: feature_names differ from schemas.features")

    @classmethod
    def from_json(cls, obj: object) -> Manifest:
        """Parse and check a manifest object; ModelLoadError naming the first problem."""
        if not isinstance(obj, dict):
            raise ModelLoadError("manifest is not a JSON object")
        study = _field(obj, "imbalance_study", list, "manifest")
        if not all(isinstance(entry, dict) for entry in study):
            raise ModelLoadError("manifest: imbalance_study must hold JSON objects")
        plots = obj.get("plots", [])
        if not isinstance(plots, list) or not all(isinstance(v, str) for v in plots):
            raise ModelLoadError("manifest: plots must be a list of file names")
        metrics = _section(obj, "metrics")
        if not all(isinstance(v, dict) for v in metrics.values()):
            raise ModelLoadError("manifest: metrics must hold JSON objects")
        return cls(
            format=_field(obj, "format", int, "manifest"),
            version=_field(obj, "version", str, "manifest"),
            created_at=_field(obj, "created_at", str, "manifest"),
            feature_names=tuple(_field(obj, "feature_names", list, "manifest")),
            onnx=OnnxSignature.from_json(_section(obj, "onnx")),
            thresholds=Thresholds.from_json(_section(obj, "thresholds")),
            data=DataSource.from_json(_section(obj, "data")),
            parity=ParityCheck.from_json(_section(obj, "parity")),
            parity_sample=ParitySample.from_json(_section(obj, "parity_sample")),
            drift_baseline=DriftBaseline.from_json(obj.get("drift_baseline")),
            metrics=metrics,
            imbalance_study=tuple(study),
            training=_section(obj, "training"),
            plots=tuple(plots),
        )

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON object (what ``manifest.json`` holds)."""
        return {
            "format": self.format,
            "version": self.version,
            "created_at": self.created_at,
            "feature_names": list(self.feature_names),
            "onnx": self.onnx.to_json(),
            "thresholds": self.thresholds.to_json(),
            "metrics": {k: dict(v) for k, v in self.metrics.items()},
            "imbalance_study": [dict(entry) for entry in self.imbalance_study],
            "data": self.data.to_json(),
            "parity": self.parity.to_json(),
            "parity_sample": self.parity_sample.to_json(),
            "drift_baseline": self.drift_baseline.to_json(),
            "training": dict(self.training),
            "plots": list(self.plots),
        }

    def write(self, bundle_dir: Path) -> Path:
        """Write ``<bundle_dir>/manifest.json`` (NaN/Inf refused: JSON has no such values)."""
        path = bundle_dir / MANIFEST_FILE
        text = json.dumps(self.to_json(), indent=2, allow_nan=False)
        path.write_text(text + "\n", encoding="utf-8")
        return path


def read_manifest(models_dir: Path, version: str) -> Manifest:
    """The checked manifest of ``<models_dir>/<version>`` (no ONNX checks: see the loader).

    Raises ModelLoadError if the version name is invalid, the file is missing or unreadable, the
    manifest is not valid, or it names another version than its directory.
    """
    if not is_version_name(version):
        raise ModelLoadError(f"invalid model version {version!r}")
    path = models_dir / version / MANIFEST_FILE
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"model bundle {version}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelLoadError(f"model bundle {version}: cannot read {path}: {exc}") from None
    try:
        manifest = Manifest.from_json(obj)
    except ModelLoadError as exc:
        raise ModelLoadError(f"model bundle {version}: {exc}") from None
    if manifest.version != version:
        raise ModelLoadError(f"model bundle {version}: manifest names version {manifest.version!r}")
    return manifest
