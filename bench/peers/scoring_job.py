"""The job every peer framework runs: what a user of that framework would write for it.

Runs in the peer's own virtualenv (numpy, onnxruntime, fastavro and the framework), so it imports
nothing of Sentinel's: it reads the Avro schemas (``schemas/*.avsc``) and the model bundle
(``models/<version>/model.onnx`` and ``manifest.json``) from disk, as an outside team would.

The wire format is Sentinel's: Avro single-object encoding, ``C3 01`` + the writer schema's
8-byte CRC-64-AVRO fingerprint + the Avro body. Decoding strips the 10-byte header and reads the
body with fastavro ``schemaless_reader``; encoding writes the header then ``schemaless_writer``.
Both are per message: fastavro has no batch codec, and that is what a user of these frameworks
would call.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import onnxruntime as ort
from fastavro.schema import fingerprint, to_parsing_canonical_form

ROOT = Path(__file__).resolve().parents[2]
HEADER_SIZE = 10
OUTCOMES = ("ALLOW", "REVIEW", "BLOCK")


def _without_logical_types(schema: Any) -> Any:
    """Timestamps stay the integers on the wire (fastavro would make them datetimes)."""
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_without_logical_types(item) for item in schema]
    return schema


class AvroRecord:
    """One record type in single-object framing, read from ``schemas/<name>.avsc``."""

    def __init__(self, name: str) -> None:
        schema = json.loads((ROOT / "schemas" / f"{name}.avsc").read_text())
        self.header = b"\xc3\x01" + bytes.fromhex(
            fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
        )
        self.parsed = fastavro.parse_schema(_without_logical_types(schema))

    def decode(self, value: bytes) -> dict[str, Any]:
        if value[:HEADER_SIZE] != self.header:
            raise ValueError("not a single-object record of this schema")
        body = io.BytesIO(value)
        body.seek(HEADER_SIZE)
        return fastavro.schemaless_reader(body, self.parsed, None)  # type: ignore[return-value]

    def encode(self, record: dict[str, Any]) -> bytes:
        body = io.BytesIO()
        body.write(self.header)
        fastavro.schemaless_writer(body, self.parsed, record)
        return body.getvalue()


@dataclass(frozen=True)
class FraudModel:
    """The active bundle's ONNX model and thresholds (``models/current``), one thread."""

    version: str
    session: ort.InferenceSession
    input_name: str
    output_name: str
    block: float
    review: float

    @classmethod
    def load(cls, models_dir: Path) -> FraudModel:
        version = (models_dir / "current").read_text().strip()
        manifest = json.loads((models_dir / version / "manifest.json").read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(models_dir / version / manifest["onnx"]["file"]),
            options,
            providers=["CPUExecutionProvider"],
        )
        return cls(
            version,
            session,
            manifest["onnx"]["input_name"],
            manifest["onnx"]["probability_output"],
            float(manifest["thresholds"]["block"]),
            float(manifest["thresholds"]["review"]),
        )

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Fraud probability per row of a (n, 29) float32 matrix: V1..V28, then Amount."""
        (probabilities,) = self.session.run([self.output_name], {self.input_name: matrix})
        return np.asarray(probabilities, dtype=np.float64)[:, 1]

    def outcome(self, probability: float) -> str:
        if probability >= self.block:
            return "BLOCK"
        return "REVIEW" if probability >= self.review else "ALLOW"


def feature_row(transaction: dict[str, Any]) -> list[float]:
    """The model's feature order: the 28 PCA components, then the amount."""
    return [*transaction["features"], transaction["amount"]]


def decision(
    model: FraudModel,
    transaction: dict[str, Any],
    probability: float,
    *,
    batch_size: int,
    scorer_id: str,
    source_topic: str,
    partition: int,
    offset: int,
) -> dict[str, Any]:
    """The Decision record (schemas/decision.avsc) for one scored transaction."""
    scored_at_us = time.time_ns() // 1000
    return {
        "transaction_id": transaction["transaction_id"],
        "card_id": transaction["card_id"],
        "fraud_probability": probability,
        "predicted_fraud": probability >= model.block,
        "decision": model.outcome(probability),
        "block_threshold": model.block,
        "review_threshold": model.review,
        "model_version": model.version,
        "variant": "A",
        "cache_hit": False,
        "batch_size": batch_size,
        "event_time": transaction["event_time"],
        "scored_at": scored_at_us,
        "latency_ms": scored_at_us / 1000.0 - transaction["event_time"],
        "scorer_id": scorer_id,
        "source_topic": source_topic,
        "source_partition": partition,
        "source_offset": offset,
    }


# The producer settings Sentinel's scorer uses, so the comparison is of the frameworks, not of
# librdkafka tuning.
PRODUCER_SETTINGS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 2,
    "compression.type": "lz4",
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
}


def arguments(description: str) -> argparse.ArgumentParser:
    """The command line every peer job takes (the benchmark passes the same to each)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--group-id", required=True)
    parser.add_argument("--input-topic", required=True)
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    return parser
