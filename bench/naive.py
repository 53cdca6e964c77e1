"""The naive baseline: one message at a time, the way a first version is usually written.

poll one -> fastavro decode -> validate -> score one row -> fastavro encode -> produce -> commit.
It commits each offset asynchronously right after producing (without waiting for the broker's
ack), so it is *weaker* than the scorer's at-least-once guarantee, and still far slower.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer

from schemas.avro import record_codec
from schemas.features import invalid_rows
from schemas.models_dir import current_version
from streams.model.loader import load_bundle


def run_naive(
    bootstrap: str, source_topic: str, sink_topic: str, models_dir: Path, count: int
) -> float:
    """Process ``count`` messages; returns messages per second."""
    bundle = load_bundle(models_dir, current_version(models_dir))
    transaction_codec = record_codec("transaction")  # stock fastavro, one message at a time
    decision_codec = record_codec("decision")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"naive-{time.time()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    consumer.subscribe([source_topic])
    done, began = 0, None
    while done < count:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        if began is None:
            began = time.perf_counter()
        tx = transaction_codec.decode(msg.value() or b"")
        row = np.array([[*tx["features"], tx["amount"]]], dtype=np.float32)
        if invalid_rows(row):
            continue
        probability = float(bundle.predict_proba(row)[0])
        value = decision_codec.encode(
            {
                "transaction_id": tx["transaction_id"],
                "card_id": tx["card_id"],
                "fraud_probability": probability,
                "predicted_fraud": probability >= bundle.block_threshold,
                "decision": "BLOCK" if probability >= bundle.block_threshold else "ALLOW",
                "block_threshold": bundle.block_threshold,
                "review_threshold": bundle.review_threshold,
                "model_version": bundle.version,
                "variant": "A",
                "cache_hit": False,
                "batch_size": 1,
                "event_time": tx["event_time"],
                "scored_at": int(time.time() * 1e6),
                "latency_ms": time.time() * 1000 - tx["event_time"],
                "scorer_id": "naive",
                "source_topic": msg.topic(),
                "source_partition": msg.partition(),
                "source_offset": msg.offset(),
            },
        )
        producer.produce(sink_topic, value, msg.key())
        producer.poll(0)
        consumer.commit(message=msg, asynchronous=True)
        done += 1
    producer.flush(30)
    elapsed = time.perf_counter() - (began or time.perf_counter())
    consumer.close()
    return done / elapsed
