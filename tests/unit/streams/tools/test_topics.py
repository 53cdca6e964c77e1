"""Topic specs: the six roles, control as one partition kept forever, a DLQ that fits a poison
record plus its headers; and how an existing topic is compared with its spec."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from schemas.errors import BrokerError, ConfigError
from streams.config import (
    DLQ_MAX_MESSAGE_BYTES,
    TOPIC_ROLES,
    TRANSACTIONS_MAX_MESSAGE_BYTES,
    KafkaSettings,
    TopicNames,
)
from streams.tools import topics
from streams.tools.topics import DEFAULT_PARTITIONS, PartitionOffsets, TopicAdmin, topic_specs

NAMES = TopicNames(
    transactions="t",
    decisions="d",
    drift="dr",
    control="c",
    control_events="ce",
    dlq="dlq",
)


def test_one_spec_per_role_in_a_stable_order_with_the_configured_names() -> None:
    specs = topic_specs(NAMES)
    assert [s.role for s in specs] == list(TOPIC_ROLES)
    assert [s.name for s in specs] == ["t", "d", "dr", "c", "ce", "dlq"]
    assert [s.name for s in topic_specs(TopicNames())] == [
        "transactions",
        "decisions",
        "drift",
        "control",
        "control-events",
        "transactions-dlq",
    ]


def test_control_is_one_partition_kept_forever() -> None:
    (control,) = [s for s in topic_specs(NAMES, partitions=24) if s.role == "control"]
    assert control.partitions == 1  # one totally ordered log, whatever --partitions says
    assert control.config["retention.ms"] == "-1"
    assert control.config["retention.bytes"] == "-1"
    assert control.config["cleanup.policy"] == "delete"  # never compacted away


def test_the_dlq_accepts_any_transaction_plus_its_error_headers() -> None:
    specs = {s.role: s for s in topic_specs(NAMES)}
    dlq, transactions = specs["dlq"], specs["transactions"]
    assert int(transactions.config["max.message.bytes"]) == TRANSACTIONS_MAX_MESSAGE_BYTES
    assert int(dlq.config["max.message.bytes"]) == DLQ_MAX_MESSAGE_BYTES
    assert DLQ_MAX_MESSAGE_BYTES > TRANSACTIONS_MAX_MESSAGE_BYTES + 8 * 1024  # room for headers
    # poison is kept for investigation longer than the input it came from
    assert int(dlq.config["retention.ms"]) > int(transactions.config["retention.ms"])


def test_partitions_scale_only_the_scoring_topics() -> None:
    default = {s.role: s.partitions for s in topic_specs(NAMES)}
    scaled = {s.role: s.partitions for s in topic_specs(NAMES, partitions=12)}
    assert default["transactions"] == default["decisions"] == DEFAULT_PARTITIONS
    assert scaled["transactions"] == scaled["decisions"] == 12
    for role in ("drift", "control", "control_events", "dlq"):
        assert scaled[role] == default[role]


@pytest.mark.parametrize("partitions", [0, -3])
def test_a_non_positive_partition_count_is_refused(partitions: int) -> None:
    with pytest.raises(ConfigError, match=f"positive integer, got {partitions}"):
        topic_specs(NAMES, partitions)


def test_every_retention_is_a_whole_number_of_milliseconds() -> None:
    for spec in topic_specs(NAMES):
        retention = int(spec.config["retention.ms"])
        assert retention == -1 or retention >= 24 * 60 * 60 * 1000, spec


def test_lag_is_what_the_group_has_not_committed() -> None:
    assert PartitionOffsets(0, high_watermark=100).lag is None  # no group asked about
    assert PartitionOffsets(0, 100, committed=-1).lag == 100  # never committed: all of it
    assert PartitionOffsets(0, 100, committed=-1001).lag == 100
    assert PartitionOffsets(0, 100, committed=60).lag == 40
    assert PartitionOffsets(0, 100, committed=100).lag == 0
    assert PartitionOffsets(0, 90, committed=100).lag == 0  # truncated topic: never negative


def done(value: Any = None, error: KafkaError | None = None) -> Future[Any]:
    future: Future[Any] = Future()
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(KafkaException(error))
    return future


@dataclass
class FakeTopicMetadata:
    partitions: dict[int, object]
    error: KafkaError | None = None


@dataclass
class FakeEntry:
    value: str


@dataclass
class FakeAdminClient:
    """A cluster holding ``topics`` (name -> (partitions, config)); records what is created."""

    topics: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    created: list[Any] = field(default_factory=list)
    refuse: KafkaError | None = None

    def list_topics(self, timeout: float) -> Any:
        listed = {
            n: FakeTopicMetadata(dict.fromkeys(range(p))) for n, (p, _) in self.topics.items()
        }
        return type("Metadata", (), {"topics": listed})()

    def describe_configs(self, resources: list[Any], request_timeout: float) -> dict[Any, Any]:
        return {
            r: done({k: FakeEntry(v) for k, v in self.topics[r.name][1].items()}) for r in resources
        }

    def create_topics(self, new_topics: list[Any], request_timeout: float) -> dict[str, Any]:
        futures = {}
        for topic in new_topics:
            if self.refuse is None:
                self.created.append(topic)
                self.topics[topic.topic] = (topic.num_partitions, dict(topic.config))
            futures[topic.topic] = done(error=self.refuse)
        return futures


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeAdminClient:
    fake = FakeAdminClient()
    monkeypatch.setattr(topics, "AdminClient", lambda config: fake)
    return fake


def test_ensure_creates_what_is_missing_and_reports_what_differs(cluster: FakeAdminClient) -> None:
    specs = {s.role: s for s in topic_specs(NAMES)}
    cluster.topics["c"] = (3, {**specs["control"].config, "retention.ms": "604800000"})
    cluster.topics["t"] = (DEFAULT_PARTITIONS, dict(specs["transactions"].config))

    reports = {
        r.spec.role: r for r in TopicAdmin(KafkaSettings("fake:9092")).ensure(list(specs.values()))
    }

    assert reports["transactions"].outcome == "exists"
    assert reports["control"].outcome == "differs"
    assert reports["control"].partitions == 3
    assert reports["control"].differences == (
        "3 partitions (spec 1)",
        "retention.ms=604800000 (spec -1)",
    )
    assert cluster.topics["c"][0] == 3  # reported, never altered
    created = {t.topic: t for t in cluster.created}
    assert sorted(created) == ["ce", "d", "dlq", "dr"]
    assert created["dlq"].config["max.message.bytes"] == str(DLQ_MAX_MESSAGE_BYTES)
    assert {
        r.outcome for role, r in reports.items() if role not in ("transactions", "control")
    } == {"created"}


def test_a_refused_creation_names_the_topic_and_kafkas_reason(cluster: FakeAdminClient) -> None:
    cluster.refuse = KafkaError(KafkaError.POLICY_VIOLATION, "replication factor too large")
    with pytest.raises(BrokerError, match="cannot create topic t: replication factor too large"):
        TopicAdmin(KafkaSettings("fake:9092")).ensure(topic_specs(NAMES)[:1])
