"""The scoring loop end to end without a broker: confluent_kafka's Consumer and Producer are
replaced by fakes in ``streams.scoring.loop``, and each test looks at what a user would see: the
decisions on the topic, the DLQ records, the committed offsets, the drift snapshots, the metrics.

The fake producer keeps records in flight until the test acknowledges them and, like librdkafka,
runs delivery callbacks only inside poll() and flush(). The fake consumer plays a script: each
consume() returns the next batch (or runs the next step); when the script ends it stops the
scorer, which then drains, commits and returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from schemas.avro import fingerprint, load_schema
from schemas.confluent import RegisteredSchema, confluent_header
from schemas.decision_codec import decode_decision
from schemas.drift_baseline import DriftBaseline, build_baseline
from schemas.drift_codec import DriftSnapshot, decode_snapshot
from schemas.errors import DeliveryError, DlqLimitExceeded, SchemaRegistryUnavailable
from schemas.features import N_FEATURES, N_PCA_FEATURES
from schemas.transaction_codec import decode_transactions, encode_transaction
from streams.config import KafkaSettings, TopicNames
from streams.control.plane import ControlPlaneFailed
from streams.drift.monitor import DriftConfig
from streams.metrics import ScorerMetrics
from streams.registry import RegistrySettings
from streams.scoring import loop
from streams.scoring.dlq import DlqLimit
from streams.scoring.loop import Scorer, ScorerConfig

TOPICS = TopicNames(
    transactions="tx", decisions="dec", drift="drift", control="ctl", control_events="ev", dlq="dlq"
)
# A minute ago: inside the scorer's event-time window (older ones are refused as absurd).
EVENT_AGE_MS = 60_000


def event_time_ms() -> int:
    """A minute ago, read when the transaction is made (collection may be long before a test
    runs: CI collected this module 17 minutes before it ran)."""
    return int(time.time() * 1000) - EVENT_AGE_MS


# --- fakes -------------------------------------------------------------------------------------


@dataclass
class FakeMessage:
    """A consumed message (the confluent_kafka.Message methods the scorer calls)."""

    topic_name: str
    partition_id: int
    at: int
    payload: bytes | None
    key_bytes: bytes | None = None
    header_list: list[tuple[str, bytes]] | None = None
    failure: KafkaError | None = None

    def topic(self) -> str:
        return self.topic_name

    def partition(self) -> int:
        return self.partition_id

    def offset(self) -> int:
        return self.at

    def value(self) -> bytes | None:
        return self.payload

    def key(self) -> bytes | None:
        return self.key_bytes

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.header_list

    def error(self) -> KafkaError | None:
        return self.failure


@dataclass
class Record:
    """One produced record; ``error`` is what its delivery report will say."""

    topic: str
    value: bytes
    key: bytes | None
    headers: list[tuple[str, Any]] | None
    on_delivery: Callable[[KafkaError | None, Any], None] | None
    error: KafkaError | None = None

    def topic_name(self) -> str:
        return self.topic


class FakeProducer:
    """Records stay in flight until ack(); with a ``capacity``, the local queue holds that many
    records until their reports are served (as librdkafka's does) and poll() then acknowledges
    everything in flight, like a broker catching up."""

    capacity: int | None = None

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.records: list[Record] = []  # everything ever produced, in order
        self.in_flight: list[Record] = []
        self.reported: list[Record] = []
        self.queue_full_seen = 0

    def _queue_full(self) -> bool:
        full = self.capacity is not None and (
            len(self.in_flight) + len(self.reported) >= self.capacity
        )
        self.queue_full_seen += full
        return full

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        on_delivery: Any = None,
        headers: Any = None,
    ) -> None:
        if self._queue_full():
            raise BufferError("Local: Queue full")
        record = Record(topic, value, key, headers, on_delivery)
        self.records.append(record)
        self.in_flight.append(record)

    def produce_batch(
        self, topic: str, messages: list[dict[str, Any]], on_delivery: Any = None
    ) -> int:
        queued = 0
        for m in messages:
            if self._queue_full():
                m["_error"] = KafkaError(KafkaError._QUEUE_FULL)
                continue
            self.produce(topic, m.get("value"), m.get("key"), on_delivery)
            queued += 1
        return queued

    def ack(self, records: list[Record] | None = None, error: KafkaError | None = None) -> None:
        for record in list(self.in_flight if records is None else records):
            self.in_flight.remove(record)
            record.error = error
            self.reported.append(record)

    def poll(self, timeout: float = 0) -> int:
        if self.capacity is not None:
            self.ack()
        reported, self.reported = self.reported, []
        for record in reported:
            if record.on_delivery is not None:
                record.on_delivery(record.error, SimpleNamespace(topic=record.topic_name))
        return len(reported)

    def flush(self, timeout: float = 0) -> int:
        self.ack()
        self.poll()
        return 0

    def on(self, topic: str) -> list[Record]:
        return [r for r in self.records if r.topic == topic]


Step = list[FakeMessage] | Callable[[], list[FakeMessage] | None]


class FakeConsumer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.script: list[Step] = []
        self.stop: Callable[[], None] = lambda: None
        self.commits: list[tuple[dict[tuple[str, int], int], bool]] = []
        self.subscribed: list[str] = []
        self.closed = False
        self.owned: list[TopicPartition] = []
        self.seeks: list[tuple[str, int, int]] = []
        self.resumed = 0

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.subscribed = topics

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if not self.script:
            self.stop()
            return []
        step = self.script.pop(0)
        batch = step() if callable(step) else step
        return batch or []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        self.commits.append(({(tp.topic, tp.partition): tp.offset for tp in offsets}, asynchronous))
        if asynchronous:
            self.config["on_commit"](None, offsets)
            return None
        return offsets

    def assignment(self) -> list[TopicPartition]:
        return list(self.owned)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        return -1, -1

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumed += 1

    def pause(self, partitions: list[TopicPartition]) -> None:
        """The bounded shutdown pauses fetching before it serves callbacks."""

    def poll(self, timeout: float = 0) -> None:
        """Serves callbacks only (commits confirm at once here); fetching is paused."""
        return None

    def close(self) -> None:
        self.closed = True

    def committed_offsets(self) -> list[dict[tuple[str, int], int]]:
        return [offsets for offsets, _ in self.commits]


# --- models and serving state ------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline() -> DriftBaseline:
    rng = np.random.default_rng(5)
    return build_baseline(rng.random((2_000, N_FEATURES)), rng.random(2_000))


@dataclass
class FakeModel:
    """Scores a row as its V1 feature, so a test picks each probability by picking V1."""

    version: str
    baseline: DriftBaseline
    block_threshold: float = 0.8
    review_threshold: float = 0.5
    calls: list[int] = field(default_factory=list)

    @property
    def manifest(self) -> Any:
        return SimpleNamespace(drift_baseline=self.baseline)

    @property
    def sha256(self) -> str:
        return f"sha256-of-{self.version}"  # the cache key's model part

    def predict_proba(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        self.calls.append(len(features))
        return features[:, 0].astype(np.float64)


@dataclass(frozen=True)
class State:
    a: FakeModel
    b: FakeModel | None = None
    split_percent: int = 0


class FakeControlPlane:
    """A ServingSource whose state the test swaps; counts every read of ``state``."""

    def __init__(self, state: State) -> None:
        self.current = state
        self.reads = 0
        self.failure: Exception | None = None

    @property
    def state(self) -> State:
        self.reads += 1
        return self.current

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure


class Harness:
    """A Scorer whose Kafka clients are the fakes above."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        state: State,
        drift: DriftConfig | None = None,
        **config: Any,
    ) -> None:
        made: dict[str, Any] = {}
        monkeypatch.setattr(
            loop, "Consumer", lambda c: made.setdefault("consumer", FakeConsumer(c))
        )
        monkeypatch.setattr(
            loop, "Producer", lambda c: made.setdefault("producer", FakeProducer(c))
        )
        self.registry = CollectorRegistry()
        self.control = FakeControlPlane(state)
        self.scorer = Scorer(
            ScorerConfig(KafkaSettings("fake:9092"), TOPICS, "scorer-7", drift=drift, **config),
            self.control,
            ScorerMetrics(self.registry),
        )
        self.consumer: FakeConsumer = made["consumer"]
        self.producer: FakeProducer = made["producer"]
        self.consumer.stop = self.scorer.stop

    def run(self, *script: Step) -> None:
        self.consumer.script = list(script)
        self.scorer.run()

    def decisions(self) -> list[dict[str, Any]]:
        return [decode_decision(r.value) for r in self.producer.on(TOPICS.decisions)]

    def snapshots(self) -> list[DriftSnapshot]:
        return [decode_snapshot(r.value) for r in self.producer.on(TOPICS.drift)]

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


def transaction(i: int, fraud_probability: float = 0.1, card: str | None = None) -> bytes:
    features = [fraud_probability] + [0.01 * (i % 7)] * (N_PCA_FEATURES - 1)
    return encode_transaction(
        {
            "transaction_id": f"tx-{i}",
            "card_id": card or f"card-{i}",
            "event_time": event_time_ms() + i,
            "amount": 10.0 + i,
            "features": features,
        }
    )


def message(partition: int, offset: int, value: bytes | None, **kwargs: Any) -> FakeMessage:
    return FakeMessage(TOPICS.transactions, partition, offset, value, **kwargs)


def batch(start: int, n: int, partition: int = 0, probability: float = 0.1) -> list[FakeMessage]:
    return [
        message(partition, start + i, transaction(start + i, probability), key_bytes=b"k")
        for i in range(n)
    ]


# --- tests -------------------------------------------------------------------------------------


def test_each_transaction_gets_one_decision_keyed_by_card_with_its_lineage(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    h = Harness(monkeypatch, State(FakeModel("v1", baseline)))
    messages = [
        message(0, 40, transaction(1, 0.1)),
        message(3, 7, transaction(2, 0.6)),
        message(0, 41, transaction(3, 0.9)),
    ]
    h.run(messages)

    assert h.consumer.subscribed == [TOPICS.transactions]
    decisions = h.decisions()
    assert [r.key for r in h.producer.on(TOPICS.decisions)] == [b"card-1", b"card-2", b"card-3"]
    assert [d["transaction_id"] for d in decisions] == ["tx-1", "tx-2", "tx-3"]
    assert [d["decision"] for d in decisions] == ["ALLOW", "REVIEW", "BLOCK"]
    assert [d["predicted_fraud"] for d in decisions] == [False, False, True]
    assert [(d["source_partition"], d["source_offset"]) for d in decisions] == [
        (0, 40),
        (3, 7),
        (0, 41),
    ]
    for d in decisions:
        assert d["source_topic"] == TOPICS.transactions
        assert d["scorer_id"] == "scorer-7"
        assert (d["model_version"], d["variant"]) == ("v1", "A")
        assert (d["block_threshold"], d["review_threshold"]) == (0.8, 0.5)
        assert d["batch_size"] == 3 and d["cache_hit"] is False
    assert decisions[1]["fraud_probability"] == pytest.approx(0.6)
    sent_event_time = decode_transactions([messages[2].payload])[0].event_time_ms[0]
    assert decisions[2]["event_time"] == sent_event_time
    # the consumer commits the next offset of each partition, once
    assert h.consumer.committed_offsets()[-1] == {("tx", 0): 42, ("tx", 3): 8}
    assert h.metric("sentinel_decisions_total", variant="A", model_version="v1", decision="BLOCK")
    assert h.metric("sentinel_consumed_messages_total") == 3
    assert h.consumer.closed


def test_poison_goes_to_the_dlq_with_its_original_bytes_key_and_headers(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    h = Harness(monkeypatch, State(FakeModel("v1", baseline)))
    garbage = b"\xc3\x01not avro at all"
    original_headers = [("trace-id", b"abc123")]
    messages = [
        message(2, 10, transaction(1)),
        message(2, 11, garbage, key_bytes=b"card-x", header_list=original_headers),
        message(2, 12, transaction(3)),
    ]
    h.run(messages)

    assert [d["transaction_id"] for d in h.decisions()] == ["tx-1", "tx-3"]
    (dead,) = h.producer.on(TOPICS.dlq)
    assert dead.value == garbage and dead.key == b"card-x"
    headers = dict(dead.headers or [])
    assert dead.headers is not None and dead.headers[0] == ("trace-id", b"abc123")  # kept, first
    assert headers["sentinel.error.kind"] == b"unknown_schema"
    assert headers["sentinel.source.topic"] == b"tx"
    assert headers["sentinel.source.partition"] == b"2"
    assert headers["sentinel.source.offset"] == b"11"
    assert headers["sentinel.scorer.id"] == b"scorer-7"
    assert headers["sentinel.error.reason"]
    # the poison is behind us: its offset is committed with the good ones
    assert h.consumer.committed_offsets()[-1] == {("tx", 2): 13}
    assert h.metric("sentinel_dlq_messages_total", reason="unknown_schema") == 1


def test_a_batch_of_only_poison_is_dead_lettered_and_committed(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    h = Harness(monkeypatch, State(FakeModel("v1", baseline)))
    h.run([message(0, 5, b""), message(0, 6, b"{not json")])
    assert h.decisions() == []
    assert [r.value for r in h.producer.on(TOPICS.dlq)] == [b"", b"{not json"]
    assert h.consumer.committed_offsets()[-1] == {("tx", 0): 7}


def test_offsets_are_committed_only_after_every_record_of_the_batch_is_acknowledged(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    h = Harness(monkeypatch, State(FakeModel("v1", baseline)))
    seen: list[list[dict[tuple[str, int], int]]] = []

    def ack_decisions_only() -> None:
        seen.append(h.consumer.committed_offsets())
        h.producer.ack([r for r in h.producer.in_flight if r.topic == TOPICS.decisions])

    def ack_the_dlq_record() -> None:
        seen.append(h.consumer.committed_offsets())
        h.producer.ack()

    def look() -> None:
        seen.append(h.consumer.committed_offsets())

    h.run([*batch(0, 3), message(0, 3, b"")], ack_decisions_only, ack_the_dlq_record, look)

    assert seen[0] == []  # produced, nothing acknowledged
    assert seen[1] == []  # decisions acknowledged, the DLQ record still in flight
    assert seen[2] == [{("tx", 0): 4}]  # everything acknowledged: committed
    # decisions are counted when acknowledged, not when produced
    assert h.metric("sentinel_decisions_total", variant="A", model_version="v1", decision="ALLOW")


def test_a_refused_record_stops_the_scorer_and_nothing_of_its_batch_is_committed(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    h = Harness(monkeypatch, State(FakeModel("v1", baseline)))

    def ack_first_batch() -> None:
        h.producer.ack()

    def refuse_one() -> None:
        first, *rest = h.producer.in_flight
        h.producer.ack([first], error=KafkaError(KafkaError._MSG_TIMED_OUT))
        h.producer.ack(rest)

    with pytest.raises(DeliveryError, match=r"1 record\(s\) not acknowledged"):
        h.run(batch(0, 2), ack_first_batch, batch(2, 2), refuse_one, batch(4, 2))
    assert h.consumer.committed_offsets() == [{("tx", 0): 2}]
    assert h.consumer.closed
    assert len(h.decisions()) == 4  # the batch after the refusal was never read


def test_the_serving_state_is_read_once_per_batch_and_a_batch_never_mixes_states(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    v1, v2 = FakeModel("v1", baseline), FakeModel("v2", baseline, block_threshold=0.05)
    h = Harness(monkeypatch, State(v1))

    def reload_v2() -> list[FakeMessage]:
        h.control.current = State(v2)  # what the control plane does between batches
        return batch(10, 4)

    h.run(batch(0, 5), [], reload_v2)

    assert h.control.reads == 2  # two non-empty batches; the empty poll reads nothing
    versions = [(d["transaction_id"], d["model_version"], d["decision"]) for d in h.decisions()]
    assert versions == [(f"tx-{i}", "v1", "ALLOW") for i in range(5)] + [
        (f"tx-{i}", "v2", "BLOCK") for i in range(10, 14)
    ]
    assert v1.calls == [5] and v2.calls == [4]  # one model call per batch and variant


def test_ab_split_routes_cards_to_b_with_bs_thresholds_and_feeds_drift_per_variant(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    a = FakeModel("v1", baseline)
    b = FakeModel("v2", baseline, block_threshold=0.3, review_threshold=0.2)
    h = Harness(monkeypatch, State(a, b, split_percent=50), drift=DriftConfig(interval_s=3600))
    h.run(batch(0, 60, probability=0.4), batch(60, 40, partition=1, probability=0.4))

    decisions = h.decisions()
    by_variant = {v: [d for d in decisions if d["variant"] == v] for v in ("A", "B")}
    assert 10 < len(by_variant["B"]) < 90  # about half the cards
    assert {(d["model_version"], d["decision"]) for d in by_variant["A"]} == {("v1", "ALLOW")}
    assert {(d["model_version"], d["decision"]) for d in by_variant["B"]} == {("v2", "BLOCK")}
    assert sum(a.calls) == len(by_variant["A"]) and sum(b.calls) == len(by_variant["B"])
    assert len(a.calls) == len(b.calls) == 2  # one call per variant per batch

    snapshots = {(s.variant, s.model_version): s for s in h.snapshots()}
    assert set(snapshots) == {("A", "v1"), ("B", "v2")}
    assert snapshots["A", "v1"].count == len(by_variant["A"])
    assert snapshots["B", "v2"].count == len(by_variant["B"])
    assert snapshots["B", "v2"].prediction.mean == pytest.approx(0.4)
    assert [r.key for r in h.producer.on(TOPICS.drift)] == [b"scorer-7"] * 2


def test_a_monitor_whose_model_is_replaced_publishes_its_last_window(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    v1, v2 = FakeModel("v1", baseline), FakeModel("v2", baseline)
    h = Harness(monkeypatch, State(v1), drift=DriftConfig(interval_s=3600))

    def promote() -> list[FakeMessage]:
        h.control.current = State(v2)
        return batch(30, 20)

    h.run(batch(0, 30), promote)
    counts = [(s.variant, s.model_version, s.count) for s in h.snapshots()]
    assert counts == [("A", "v1", 30), ("A", "v2", 20)]


def test_too_much_poison_stops_loudly_and_commits_only_the_good_batches_before(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    h = Harness(
        monkeypatch,
        State(FakeModel("v1", baseline)),
        dlq_limit=DlqLimit(max_share=0.5, window_messages=10),
    )
    poison = [message(0, 10 + i, b"junk") for i in range(10)]
    with pytest.raises(DlqLimitExceeded, match="poison"):
        h.run(batch(0, 10), poison)
    assert h.producer.on(TOPICS.dlq) == []  # the tripping batch was never produced
    assert len(h.decisions()) == 10
    assert h.consumer.committed_offsets()[-1] == {("tx", 0): 10}


def test_a_dead_control_plane_stops_the_scorer(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    h = Harness(monkeypatch, State(FakeModel("v1", baseline)))

    def die() -> list[FakeMessage]:
        h.control.failure = ControlPlaneFailed("control thread died: RuntimeError('bug')")
        return batch(5, 2)

    def ack() -> None:
        h.producer.ack()

    with pytest.raises(ControlPlaneFailed, match="control thread died"):
        h.run(batch(0, 5), ack, die, batch(7, 5))
    # the batch after the failure is never scored; the one in flight when it died is not committed
    assert [d["source_offset"] for d in h.decisions()] == list(range(7))
    assert h.consumer.committed_offsets() == [{("tx", 0): 5}]
    assert h.consumer.closed


def test_transport_errors_are_skipped_and_fatal_ones_raise(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    h = Harness(monkeypatch, State(FakeModel("v1", baseline)))
    transient = message(0, -1, None, failure=KafkaError(KafkaError._TRANSPORT))
    h.run([transient, *batch(0, 2)])
    assert len(h.decisions()) == 2 and h.producer.on(TOPICS.dlq) == []

    h = Harness(monkeypatch, State(FakeModel("v1", baseline)))
    fatal = message(0, -1, None, failure=KafkaError(KafkaError._FATAL, fatal=True))
    with pytest.raises(KafkaException):
        h.run([fatal, *batch(0, 2)])
    assert h.decisions() == [] and h.consumer.commits == []


def test_a_redelivered_transaction_is_answered_from_the_cache(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    model = FakeModel("v1", baseline)
    h = Harness(monkeypatch, State(model))
    h.run(batch(0, 4, probability=0.9), batch(0, 4, probability=0.9))  # at-least-once redelivery
    decisions = h.decisions()
    assert [d["cache_hit"] for d in decisions] == [False] * 4 + [True] * 4
    assert [d["decision"] for d in decisions] == ["BLOCK"] * 8
    assert model.calls == [4]
    assert h.metric("sentinel_cache_lookups_total", result="hit") == 4


def test_the_producer_is_configured_for_idempotent_full_acks_and_the_consumer_never_autocommits(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    h = Harness(monkeypatch, State(FakeModel("v1", baseline)))
    assert h.producer.config["acks"] == "all" and h.producer.config["enable.idempotence"] is True
    assert h.consumer.config["enable.auto.commit"] is False
    assert h.consumer.config["group.id"] == "sentinel-scorer"


def test_kafka_config_replaces_the_scorers_tuning_defaults_and_keeps_its_guarantees() -> None:
    tuned = {"queued.max.messages.kbytes": "8192", "linger.ms": "0", "client.id": "fraud-eu-1"}
    config = ScorerConfig(KafkaSettings("k:9092", tuned), TOPICS, "scorer-7")
    consumer, producer = config.consumer_settings(), config.producer_settings()
    assert consumer["queued.max.messages.kbytes"] == "8192" and producer["linger.ms"] == "0"
    assert consumer["client.id"] == producer["client.id"] == "fraud-eu-1"
    assert consumer["enable.auto.commit"] is False
    assert consumer["isolation.level"] == "read_committed"
    assert producer["acks"] == "all" and producer["enable.idempotence"] is True
    default = ScorerConfig(KafkaSettings("k:9092"), TOPICS, "scorer-7").consumer_settings()
    assert default["queued.max.messages.kbytes"] == 64 * 1024 and default["client.id"] == "scorer-7"


def test_a_tombstone_stays_null_in_the_dlq_and_an_absurd_event_time_is_refused(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    h = Harness(monkeypatch, State(FakeModel("v1", baseline)))
    stale = encode_transaction(
        {
            "transaction_id": "tx-old",
            "card_id": "card-old",
            "event_time": 0,
            "amount": 1.0,
            "features": [0.1] * N_PCA_FEATURES,
        }
    )
    h.run([message(0, 5, None), message(0, 6, stale), message(0, 7, transaction(1))])
    dead = h.producer.on(TOPICS.dlq)
    assert [r.value for r in dead] == [None, stale]
    assert [dict(r.headers)["sentinel.error.kind"] for r in dead] == [b"empty", b"absurd_value"]
    (decision,) = h.decisions()
    assert 0 <= decision["latency_ms"] < 600_000  # from a sane event time, not 1970


def test_the_same_features_under_new_transaction_ids_hit_the_cache(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    model = FakeModel("v1", baseline)
    h = Harness(monkeypatch, State(model))
    first = [message(0, i, transaction(i)) for i in range(3)]
    renamed = [
        message(0, 10 + i, transaction(i).replace(f"tx-{i}".encode(), f"tx-{i + 7}".encode()))
        for i in range(3)
    ]
    h.run(first, renamed)
    decisions = h.decisions()
    assert [d["transaction_id"] for d in decisions] == [
        "tx-0",
        "tx-1",
        "tx-2",
        "tx-7",
        "tx-8",
        "tx-9",
    ]
    assert [d["cache_hit"] for d in decisions] == [False] * 3 + [True] * 3
    assert model.calls == [3]


def test_a_full_local_queue_is_waited_out_and_every_decision_produced_once(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    monkeypatch.setattr(FakeProducer, "capacity", 7)
    h = Harness(monkeypatch, State(FakeModel("v1", baseline)))
    poison = message(0, 25, b"not avro")
    h.run(batch(0, 25), [poison, *batch(26, 30)])

    assert h.producer.queue_full_seen > 0
    ids = [d["transaction_id"] for d in h.decisions()]
    assert ids == [f"tx-{i}" for i in range(56) if i != 25]
    assert [r.value for r in h.producer.on(TOPICS.dlq)] == [b"not avro"]
    assert h.consumer.committed_offsets()[-1] == {("tx", 0): 56}


class FakeRegistry:
    """A registry holding Transaction v1 under id 5 that registers decisions as 11, drift as 12;
    ``down`` makes every lookup fail like an unreachable registry."""

    made: ClassVar[list[FakeRegistry]] = []

    def __init__(self, settings: RegistrySettings) -> None:
        self.down = False
        self.subjects: list[str] = []
        FakeRegistry.made.append(self)

    def writer_schema(self, schema_id: int) -> RegisteredSchema:
        if self.down:
            raise SchemaRegistryUnavailable("connection refused")
        known = {5: load_schema("transaction"), 11: load_schema("decision")}[schema_id]
        return RegisteredSchema(schema_id, fingerprint(known), known)

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        self.subjects.append(subject)
        return {f"{TOPICS.decisions}-value": 11, f"{TOPICS.drift}-value": 12}[subject]


def test_a_registry_outage_rewinds_the_batch_and_dead_letters_nothing(
    monkeypatch: pytest.MonkeyPatch, baseline: DriftBaseline
) -> None:
    monkeypatch.setattr(loop, "SchemaRegistry", FakeRegistry)
    h = Harness(
        monkeypatch,
        State(FakeModel("v1", baseline)),
        schema_registry=RegistrySettings("http://registry:8081"),
        output_format="confluent",
    )
    registry = FakeRegistry.made[-1]
    assert registry.subjects == [f"{TOPICS.decisions}-value", f"{TOPICS.drift}-value"]
    h.consumer.owned = [TopicPartition(TOPICS.transactions, 0)]
    framed = [
        message(0, 20 + i, confluent_header(5) + transaction(i)[10:], key_bytes=b"k")
        for i in range(3)
    ]
    registry.down = True

    def registry_back() -> list[FakeMessage]:
        registry.down = False
        return framed  # what the consumer reads again after the seek

    h.run(framed, registry_back)

    assert h.producer.on(TOPICS.dlq) == []
    assert h.consumer.seeks == [(TOPICS.transactions, 0, 20)]
    assert h.metric("sentinel_schema_registry_errors_total") == 1
    values = [r.value for r in h.producer.on(TOPICS.decisions)]
    assert all(value[:5] == confluent_header(11) for value in values)
    decisions = [decode_decision(value, registry) for value in values]
    assert [d["transaction_id"] for d in decisions] == ["tx-0", "tx-1", "tx-2"]
    assert h.consumer.committed_offsets()[-1] == {("tx", 0): 23}
