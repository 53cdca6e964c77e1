"""Hostile input against a real scorer and broker: every message is refused into the DLQ with
the right kind and its original bytes (a tombstone stays null), and good ones are decided."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Producer

from schemas.avro import zigzag_varint
from schemas.transaction_codec import encode_transaction, encode_transaction_json
from streams.config import KafkaSettings, TopicNames
from tests.fixtures.scorer import ScorerLauncher, read_decisions, read_topic

pytestmark = pytest.mark.integration


def sample(transaction_id: str, **change: Any) -> dict[str, Any]:
    return {
        "transaction_id": transaction_id,
        "card_id": "card-7",
        "event_time": int(time.time() * 1000),
        "amount": 12.5,
        "features": [0.01 * i for i in range(28)],
        **change,
    }


def with_event_time_bytes(record: dict[str, Any], varint: bytes) -> bytes:
    good = encode_transaction(record)
    encoded = zigzag_varint(record["event_time"])
    at = 10 + 1 + len(record["transaction_id"]) + 1 + len(record["card_id"])
    return good[:at] + varint + good[at + len(encoded) :]


def test_hostile_transactions_go_to_the_dlq_with_their_kind_and_original_bytes(
    kafka_bootstrap: str, scorer_topics: TopicNames, scorers: ScorerLauncher
) -> None:
    bad: dict[str, tuple[bytes | None, str]] = {
        "varint-12": (with_event_time_bytes(sample("v12"), b"\xff" * 11 + b"\x01"), "undecodable"),
        "varint-7f": (with_event_time_bytes(sample("v7f"), b"\xff" * 9 + b"\x7f"), "undecodable"),
        "varint-11": (with_event_time_bytes(sample("v11"), b"\x80" * 10 + b"\x01"), "undecodable"),
        "time-zero": (encode_transaction(sample("t0", event_time=0)), "absurd_value"),
        "time-minus-one": (encode_transaction(sample("t-1", event_time=-1)), "absurd_value"),
        "time-10000": (
            encode_transaction(sample("t10k", event_time=253_402_300_800_000)),
            "absurd_value",
        ),
        "time-max": (encode_transaction(sample("tmax", event_time=2**63 - 1)), "absurd_value"),
        "time-min": (encode_transaction_json(sample("tmin", event_time=-(2**63))), "absurd_value"),
        "empty-tx": (encode_transaction(sample("")), "missing_field"),
        "empty-card": (encode_transaction_json(sample("tc", card_id="")), "missing_field"),
        "tombstone": (None, "empty"),
    }
    good = [encode_transaction(sample(f"good-{i}")) for i in range(5)]
    scorers.start()
    producer = Producer(KafkaSettings(kafka_bootstrap).client_config())
    for name, (value, _) in bad.items():
        producer.produce(scorer_topics.transactions, value, key=name.encode())
    for i, value in enumerate(good):
        producer.produce(scorer_topics.transactions, value, key=f"good-{i}".encode())
    assert producer.flush(30) == 0

    dlq = read_topic(kafka_bootstrap, scorer_topics.dlq, until=lambda m: len(m) >= len(bad))
    decisions = read_decisions(kafka_bootstrap, scorer_topics.decisions, len(good))

    assert sorted(d["transaction_id"] for d in decisions) == [f"good-{i}" for i in range(5)]
    assert all(0 <= d["latency_ms"] < 600_000 for d in decisions)
    seen = {}
    for msg in dlq:
        headers = dict(msg.headers() or [])
        seen[(msg.key() or b"").decode()] = (msg.value(), headers["sentinel.error.kind"].decode())
    assert seen == bad  # every one refused, original bytes kept byte for byte, tombstone null
    assert Counter(kind for _, kind in seen.values())["absurd_value"] == 5
