"""The Confluent wire format against a real registry (Apicurio) and the real broker.

Producers and consumers here are confluent-kafka's own ``AvroSerializer``/``AvroDeserializer``:
what a team's Java, Go or Python services would use.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas.avro import SCHEMA_DIR
from schemas.confluent import confluent_header
from schemas.decision_codec import decode_decision
from schemas.transaction_codec import encode_transaction, encode_transaction_json
from streams.config import KafkaSettings, TopicNames
from tests.fixtures.registry import Gate, RunningRegistry, dedicated_registry
from tests.fixtures.scorer import ScorerLauncher, read_topic

pytestmark = pytest.mark.integration


def transaction(i: int, prefix: str) -> dict[str, Any]:
    return {
        "transaction_id": f"{prefix}-{i:06d}",
        "card_id": f"card-{i % 37}",
        "event_time": int(time.time() * 1000),
        "amount": 12.5 + i % 100,
        "features": [((i * 7 + k) % 13 - 6) / 4 for k in range(28)],
    }


def avro_serializer(url: str) -> AvroSerializer:
    """What a payment system would run: it registers Transaction under ``<topic>-value``."""
    return AvroSerializer(
        SchemaRegistryClient({"url": url}), (SCHEMA_DIR / "transaction.avsc").read_text()
    )


def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(KafkaSettings(bootstrap).client_config({"acks": "all"}))
    for key, value in values:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


def serialize(serializer: AvroSerializer, topic: str, record: dict[str, Any]) -> bytes:
    value = serializer(record, SerializationContext(topic, MessageField.VALUE))
    assert value is not None and value[:1] == b"\x00"
    return value


def test_avro_serializer_in_avro_deserializer_out_beside_single_object_and_json(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    schema_registry: RunningRegistry,
) -> None:
    url = schema_registry.url
    scorers.start(
        f"--schema-registry-url={url}", "--output-format=confluent", "--drift-interval-s=1"
    )
    topic = scorer_topics.transactions
    serializer = avro_serializer(url)
    records = [transaction(i, "cf") for i in range(300)]
    values = [(r["card_id"].encode(), serialize(serializer, topic, r)) for r in records]
    values.append((b"card-so", encode_transaction(transaction(0, "so"))))
    values.append((b"card-js", encode_transaction_json(transaction(0, "js"))))
    produce(kafka_bootstrap, topic, values)

    messages = read_topic(kafka_bootstrap, scorer_topics.decisions, until=lambda m: len(m) >= 302)
    client = SchemaRegistryClient({"url": url})
    deserialize = AvroDeserializer(client)
    context = SerializationContext(scorer_topics.decisions, MessageField.VALUE)
    decisions = [deserialize(m.value(), context) for m in messages]
    assert sorted(d["transaction_id"] for d in decisions) == sorted(
        [r["transaction_id"] for r in records] + ["so-000000", "js-000000"]
    )
    assert {d["decision"] for d in decisions} <= {"ALLOW", "REVIEW", "BLOCK"}
    assert read_topic(kafka_bootstrap, scorer_topics.dlq, idle_s=1) == []
    # registered under TopicNameStrategy subjects, BACKWARD (Apicurio's default is NONE)
    for subject in (f"{scorer_topics.decisions}-value", f"{scorer_topics.drift}-value"):
        assert client.get_compatibility(subject) == "BACKWARD"
    drift = read_topic(kafka_bootstrap, scorer_topics.drift, until=lambda m: len(m) >= 1)
    snapshot = deserialize(
        drift[0].value(), SerializationContext(scorer_topics.drift, MessageField.VALUE)
    )
    assert snapshot["count"] >= 1 and snapshot["model_version"]


def test_an_unknown_schema_id_goes_to_the_dlq_with_its_original_bytes(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    schema_registry: RunningRegistry,
) -> None:
    scorers.start(f"--schema-registry-url={schema_registry.url}")
    unknown = confluent_header(987_654) + encode_transaction(transaction(1, "x"))[10:]
    good = encode_transaction(transaction(2, "ok"))
    produce(kafka_bootstrap, scorer_topics.transactions, [(b"card-1", unknown), (b"card-2", good)])

    dlq = read_topic(kafka_bootstrap, scorer_topics.dlq, until=lambda m: len(m) >= 1)
    assert [m.value() for m in dlq] == [unknown]
    headers = dict(dlq[0].headers() or [])
    assert headers["sentinel.error.kind"] == b"unknown_schema"
    assert b"987654" in headers["sentinel.error.reason"]
    decisions = read_topic(kafka_bootstrap, scorer_topics.decisions, until=lambda m: len(m) >= 1)
    assert [decode_decision(m.value() or b"")["transaction_id"] for m in decisions] == ["ok-000002"]


def test_an_incompatible_schema_under_the_decisions_subject_refuses_the_start(
    scorer_topics: TopicNames, scorers: ScorerLauncher, schema_registry: RunningRegistry
) -> None:
    client = SchemaRegistryClient({"url": schema_registry.url})
    subject = f"{scorer_topics.decisions}-value"
    client.set_compatibility(subject, "BACKWARD")
    other = {"type": "record", "name": "Decision", "namespace": "sentinel",
             "fields": [{"name": "verdict", "type": "int"}]}  # fmt: skip
    client.register_schema(subject, Schema(json.dumps(other), "AVRO"))

    scorer = scorers.start(
        f"--schema-registry-url={schema_registry.url}", "--output-format=confluent", wait=False
    )
    assert scorer.proc.wait(60) != 0
    errors = [line for line in scorer.output().splitlines() if line.startswith("sentinel: error")]
    assert len(errors) == 1
    assert subject in errors[0] and "refused" in errors[0] and "409" in errors[0]
    assert "scoring" not in scorer.output()


class SteadyProducer:
    """Serializes uniquely identified transactions with AvroSerializer at ``rate`` per second."""

    def __init__(self, bootstrap: str, topic: str, serializer: AvroSerializer, rate: float) -> None:
        self._producer = Producer(KafkaSettings(bootstrap).client_config({"acks": "all"}))
        self._topic, self._serializer, self._rate = topic, serializer, rate
        self._prefix = uuid.uuid4().hex[:8]
        self.sent: list[str] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SteadyProducer:
        self._thread.start()
        return self

    def _run(self) -> None:
        began = time.monotonic()
        while not self._stopping.is_set():
            record = transaction(len(self.sent), self._prefix)
            value = serialize(self._serializer, self._topic, record)
            self._producer.produce(self._topic, value, record["card_id"].encode())
            self.sent.append(record["transaction_id"])
            self._producer.poll(0)
            pause = began + len(self.sent) / self._rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10)
        assert self._producer.flush(30) == 0


def test_a_registry_stopped_for_20_s_dead_letters_nothing_and_loses_nothing(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    tmp_path: Path,
) -> None:
    """The registry process really stops and restarts; being in-memory, it comes back empty.

    The gate keeps the scorer from seeing it until the Transaction schema is registered again
    (same registry, same order: the same id), as a restored registry would be. The scorer
    starts during the outage, so it has no schema cached and must wait for the registry.
    """
    with dedicated_registry(tmp_path / "registry") as registry:
        gate = Gate(registry.info.port)
        gate.open()
        serializer = avro_serializer(registry.url)
        topic = scorer_topics.transactions
        first = serialize(serializer, topic, transaction(0, "warm-up"))  # registers the schema
        schema_id = int.from_bytes(first[1:5], "big")

        gate.close()
        registry.registry.stop()
        outage_began = time.monotonic()
        scorer = scorers.start(f"--schema-registry-url={gate.url()}")
        load = SteadyProducer(kafka_bootstrap, topic, serializer, rate=100).start()
        time.sleep(max(0.0, 20 - (time.monotonic() - outage_began)))
        assert read_topic(kafka_bootstrap, scorer_topics.decisions, idle_s=0.5) == []

        registry.restart()
        client = SchemaRegistryClient({"url": registry.url})
        transaction_schema = Schema((SCHEMA_DIR / "transaction.avsc").read_text(), "AVRO")
        assert client.register_schema(f"{topic}-value", transaction_schema) == schema_id
        gate.open()
        time.sleep(3)
        load.stop()
        sent = set(load.sent)

        messages = read_topic(
            kafka_bootstrap,
            scorer_topics.decisions,
            until=lambda m: len(m) >= len(sent),
            idle_s=15,
        )
        decided = {decode_decision(m.value() or b"")["transaction_id"] for m in messages}
        lost = sorted(sent - decided)
        assert not lost, f"{len(lost)} of {len(sent)} lost: {lost[:5]}\n{scorer.output()[-3000:]}"
        assert len(sent) > 1_500  # it did flow during the 20 s
        assert read_topic(kafka_bootstrap, scorer_topics.dlq, idle_s=1) == []  # 0 dead-lettered
        errors = scorer_metric(scorer.metrics_port, "sentinel_schema_registry_errors_total")
        assert errors >= 3  # it retried during the outage, and then resumed by itself
        gate.close()


def scorer_metric(port: int, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name} on the scorer's /metrics")
