"""The ``DriftSnapshot`` record of the ``drift`` topic and its codec.

A snapshot is one drift window of one scorer instance for one (model version, variant), or an
exact merge of several; counts, means, ``m2`` and bin counts are sufficient statistics, so windows
merge exactly (``streams.drift.monitor.merge_snapshots``). On the wire it is Avro in single-object
framing like every other record (``schemas/drift_snapshot.avsc``, older versions in
``schemas/history/``; Confluent framing with ``--output-format confluent``), decoded with schema
resolution from any historical writer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final

from schemas.avro import record_codec
from schemas.confluent import WriterLookup
from schemas.errors import PoisonMessage, SchemaError

RECORD: Final[str] = "drift_snapshot"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature in one window: sufficient statistics, baseline, z-score, PSI, verdict."""

    name: str
    count: int
    mean: float
    m2: float
    std: float
    baseline_mean: float
    baseline_std: float
    z_score: float
    bin_counts: tuple[int, ...]
    baseline_proportions: tuple[float, ...]
    psi: float
    drifted: bool


@dataclass(frozen=True)
class PredictionDrift:
    """The fraud-score distribution in one window against the training scores."""

    count: int
    mean: float
    m2: float
    baseline_mean: float
    block_threshold: float
    above_threshold_count: int
    share_above_threshold: float
    bin_counts: tuple[int, ...]
    baseline_proportions: tuple[float, ...]
    psi: float
    drifted: bool


@dataclass(frozen=True)
class DriftSnapshot:
    """One drift window of one instance, or an exact merge of several (Avro ``DriftSnapshot``)."""

    scorer_id: str
    model_version: str
    variant: str
    window_start_ms: int
    window_end_ms: int
    count: int
    psi_threshold: float
    z_threshold: float
    t_threshold: float
    min_count: int
    features: tuple[FeatureDrift, ...]
    prediction: PredictionDrift
    drifted: bool
    drifted_features: tuple[str, ...]


def encode_snapshot(snapshot: DriftSnapshot, schema_id: int | None = None) -> bytes:
    """Single-object Avro bytes of a snapshot (Confluent-framed with the registry's
    ``schema_id`` of ``drift_snapshot.avsc``); SchemaError if it does not fit the schema."""
    return record_codec(RECORD).encode(dataclasses.asdict(snapshot), schema_id)


def _tupled(record: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}


def decode_snapshot(data: bytes, registry: WriterLookup | None = None) -> DriftSnapshot:
    """Inverse of :func:`encode_snapshot`, from any writer in the schema history (or, with a
    ``registry``, any writer schema it holds).

    Raises SchemaError for bytes that are not a DriftSnapshot (wrong framing, unknown writer,
    corrupt or trailing bytes), SchemaRegistryUnavailable when the registry cannot answer.
    """
    try:
        record = record_codec(RECORD).decode(data, registry)
        features = tuple(FeatureDrift(**_tupled(f)) for f in record.pop("features"))
        prediction = PredictionDrift(**_tupled(record.pop("prediction")))
        return DriftSnapshot(features=features, prediction=prediction, **_tupled(record))
    except PoisonMessage as exc:
        raise SchemaError(f"not an Avro DriftSnapshot ({exc.reason})") from exc
    except (TypeError, KeyError) as exc:
        raise SchemaError(f"not an Avro DriftSnapshot ({exc})") from exc
