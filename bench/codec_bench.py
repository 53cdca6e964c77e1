"""Micro-benchmark of the hot-path codecs against stock fastavro (no broker, one core).

Decodes ``--rows`` single-object ``Transaction`` messages with the C-backed
``decode_transactions`` in micro-batches of ``--batch`` rows, and encodes as many ``Decision``s with
``encode_decisions``; the baseline is fastavro's ``schemaless_reader`` / ``schemaless_writer`` per
message (plus the 10-byte single-object header). The same rows are also decoded (and the
decisions encoded) in the Confluent wire format (00 + schema id), the writer schema served from a
lookup that already holds it, as the scorer's registry client does after an id's first batch.
Prints a markdown table of rows/s and µs/row.

Times are the CPU time of this process (``time.process_time``), best of ``--repeat`` runs: the
machine's cores are shared, and wall-clock time would mostly measure the neighbours. Both sides
run in the same process under the same conditions, so the ratio is the figure to trust.

    .venv/bin/python -m bench.codec_bench --rows 100000 --batch 100 1000 5000
"""

from __future__ import annotations

import argparse
import io
import time
import uuid
from collections.abc import Callable
from typing import Any

import fastavro
import numpy as np

from schemas.avro import fingerprint, load_schema, record_codec, strip_logical_types
from schemas.confluent import RegisteredSchema, confluent_header
from schemas.decision_codec import DECISION_OUTCOMES, VARIANTS, encode_decisions
from schemas.transaction_codec import decode_transactions, encode_transaction


def transactions(rows: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Replayer-like transactions: uuid-prefixed ids, recurring cards, event time ~ now."""
    prefix = uuid.uuid4().hex[:12]
    features = rng.normal(size=(rows, 28))
    amounts = rng.exponential(88.0, size=rows).round(2)
    cards = rng.integers(0, 50_000, size=rows)
    now_ms = int(time.time() * 1000)
    return [
        {
            "transaction_id": f"{prefix}-{i:09d}",
            "card_id": f"card-{cards[i]:06d}",
            "event_time": now_ms + i,
            "amount": float(amounts[i]),
            "features": features[i].tolist(),
        }
        for i in range(rows)
    ]


def decision_columns(rows: int, rng: np.random.Generator) -> dict[str, Any]:
    """encode_decisions keyword arguments for ``rows`` scorer-like decisions."""
    probability = rng.random(rows)
    return {
        "transaction_ids": [f"{uuid.uuid4().hex[:12]}-{i:09d}".encode() for i in range(rows)],
        "card_ids": [f"card-{i % 50_000:06d}".encode() for i in range(rows)],
        "fraud_probability": probability,
        "predicted_fraud": probability >= 0.7,
        "decision": np.digitize(probability, [0.3, 0.7]).astype(np.int8),
        "block_threshold": np.full(rows, 0.7),
        "review_threshold": np.full(rows, 0.3),
        "model_version": np.zeros(rows, dtype=np.int64),
        "model_versions": ["v1"],
        "variant": np.zeros(rows, dtype=np.int8),
        "cache_hit": rng.random(rows) < 0.5,
        "batch_size": rows,
        "event_time_ms": np.full(rows, int(time.time() * 1000), dtype=np.int64),
        "scored_at_us": int(time.time() * 1_000_000),
        "latency_ms": rng.random(rows) * 5,
        "scorer_id": "scorer-bench-0",
        "source_topic": "transactions",
        "source_partition": np.zeros(rows, dtype=np.int32),
        "source_offset": np.arange(rows, dtype=np.int64) + 123_456_789,
    }


def decision_records(columns: dict[str, Any]) -> list[dict[str, Any]]:
    """The same decisions as dicts, the way a per-message fastavro writer takes them."""
    c = columns
    return [
        {
            "transaction_id": c["transaction_ids"][i].decode(),
            "card_id": c["card_ids"][i].decode(),
            "fraud_probability": float(c["fraud_probability"][i]),
            "predicted_fraud": bool(c["predicted_fraud"][i]),
            "decision": DECISION_OUTCOMES[c["decision"][i]],
            "block_threshold": float(c["block_threshold"][i]),
            "review_threshold": float(c["review_threshold"][i]),
            "model_version": c["model_versions"][c["model_version"][i]],
            "variant": VARIANTS[c["variant"][i]],
            "cache_hit": bool(c["cache_hit"][i]),
            "batch_size": c["batch_size"],
            "event_time": int(c["event_time_ms"][i]),
            "scored_at": c["scored_at_us"],
            "latency_ms": float(c["latency_ms"][i]),
            "scorer_id": c["scorer_id"],
            "source_topic": c["source_topic"],
            "source_partition": int(c["source_partition"][i]),
            "source_offset": int(c["source_offset"][i]),
        }
        for i in range(len(c["transaction_ids"]))
    ]


def _rows(columns: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """The decision columns of rows ``start:stop`` (one micro-batch)."""
    part = {
        name: value[start:stop] if isinstance(value, list | np.ndarray) else value
        for name, value in columns.items()
    }
    part["model_versions"] = columns["model_versions"]
    part["batch_size"] = len(part["transaction_ids"])
    return part


class CachedLookup:
    """A WriterLookup holding one schema id: what the registry client is once it has it."""

    def __init__(self, schema_id: int, name: str) -> None:
        schema = load_schema(name)
        self.registered = RegisteredSchema(schema_id, fingerprint(schema), schema)

    def writer_schema(self, schema_id: int) -> RegisteredSchema:
        return self.registered


def best_cpu_seconds(run: Callable[[], object], repeat: int) -> float:
    """The least CPU time of ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        began = time.process_time()
        run()
        best = min(best, time.process_time() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="messages per measurement")
    parser.add_argument("--batch", type=int, nargs="+", default=[1000], help="micro-batch sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    tx_records = transactions(args.rows, rng)
    messages = [encode_transaction(tx) for tx in tx_records]
    columns = decision_columns(args.rows, rng)
    decisions = decision_records(columns)
    tx_schema = fastavro.parse_schema(strip_logical_types(load_schema("transaction")))
    decision_schema = fastavro.parse_schema(strip_logical_types(load_schema("decision")))
    tx_header, decision_header = record_codec("transaction").header, record_codec("decision").header

    def fastavro_decode() -> None:
        for message in messages:
            body = io.BytesIO(message)
            body.seek(len(tx_header))
            fastavro.schemaless_reader(body, tx_schema, None)

    def fastavro_encode(schema: Any, header: bytes, records: list[dict[str, Any]]) -> None:
        for record in records:
            body = io.BytesIO()
            body.write(header)
            fastavro.schemaless_writer(body, schema, record)
            body.getvalue()

    table: list[tuple[str, str, float, float]] = []  # what, batch, seconds, fastavro seconds

    def measure(what: str, batch: str, run: Callable[[], object], baseline: float) -> None:
        seconds = baseline if batch == "1" else best_cpu_seconds(run, args.repeat)
        table.append((what, batch, seconds, baseline))

    base = best_cpu_seconds(fastavro_decode, args.repeat)
    measure("Transaction decode: fastavro schemaless_reader", "1", fastavro_decode, base)
    for size in args.batch:
        chunks = [messages[i : i + size] for i in range(0, len(messages), size)]

        def vector_decode(chunks: list[list[bytes]] = chunks) -> None:
            for chunk in chunks:
                decode_transactions(chunk)

        measure("Transaction decode: decode_transactions", f"{size:,}", vector_decode, base)
    lookup = CachedLookup(1, "transaction")
    framed = [confluent_header(1) + message[len(tx_header) :] for message in messages]
    for size in args.batch:
        chunks = [framed[i : i + size] for i in range(0, len(framed), size)]

        def confluent_decode(chunks: list[list[bytes]] = chunks) -> None:
            for chunk in chunks:
                decode_transactions(chunk, registry=lookup)

        measure("Transaction decode: decode_transactions, Confluent", f"{size:,}", confluent_decode,
                base)  # fmt: skip

    def fastavro_decisions() -> None:
        fastavro_encode(decision_schema, decision_header, decisions)

    base = best_cpu_seconds(fastavro_decisions, args.repeat)
    measure("Decision encode: fastavro schemaless_writer", "1", fastavro_decisions, base)
    for size in args.batch:
        parts = [_rows(columns, i, i + size) for i in range(0, args.rows, size)]

        def vector_encode(parts: list[dict[str, Any]] = parts) -> None:
            for part in parts:
                encode_decisions(**part)

        measure("Decision encode: encode_decisions", f"{size:,}", vector_encode, base)
    for size in args.batch:
        parts = [_rows(columns, i, i + size) for i in range(0, args.rows, size)]

        def confluent_encode(parts: list[dict[str, Any]] = parts) -> None:
            for part in parts:
                encode_decisions(**part, schema_id=2)

        measure("Decision encode: encode_decisions, Confluent", f"{size:,}", confluent_encode, base)

    def fastavro_transactions() -> None:
        fastavro_encode(tx_schema, tx_header, tx_records)

    def replayer_encode() -> None:
        for tx in tx_records:
            encode_transaction(tx)

    base = best_cpu_seconds(fastavro_transactions, args.repeat)
    measure("Transaction encode: fastavro schemaless_writer", "1", fastavro_transactions, base)
    measure("Transaction encode: encode_transaction", "per message", replayer_encode, base)

    print(f"{args.rows:,} rows per measurement; CPU time, best of {args.repeat}\n")
    print("| codec | batch | rows/s | µs/row | vs fastavro |")
    print("|---|---:|---:|---:|---:|")
    for what, batch, seconds, baseline in table:
        rate = args.rows / seconds
        print(f"| {what} | {batch} | {rate:,.0f} | {1e6 / rate:.3f} | {baseline / seconds:.1f}x |")


if __name__ == "__main__":
    main()
