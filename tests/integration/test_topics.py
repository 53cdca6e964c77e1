"""``sentinel topics create|describe`` against the real session broker."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from ops.kafka_broker import free_ports
from schemas.errors import BrokerError
from streams.cli import main
from streams.config import DLQ_MAX_MESSAGE_BYTES, KafkaSettings
from streams.tools.topics import TopicAdmin
from tests.fixtures.kafka import TopicFactory

pytestmark = pytest.mark.integration

ROLES = ("transactions", "decisions", "drift", "control", "control-events", "dlq")


def _names() -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {role: f"ops-{role}-{run}" for role in ROLES}


def _topic_flags(names: dict[str, str]) -> list[str]:
    return [arg for role, name in names.items() for arg in (f"--topic-{role}", name)]


def _sentinel(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _partitions(admin: AdminClient, name: str) -> int:
    return len(admin.list_topics(name, timeout=10).topics[name].partitions)


def _config(admin: AdminClient, name: str) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = admin.describe_configs([resource])[resource].result(timeout=10)
    return {key: str(entry.value) for key, entry in entries.items()}


def _commit(bootstrap: str, group: str, offset: TopicPartition) -> None:
    """Commit ``offset`` for ``group`` the way a consumer of that group would."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        consumer.commit(offsets=[offset], asynchronous=False)
    finally:
        consumer.close()


def test_create_makes_every_topic_with_its_spec(
    kafka_bootstrap: str, kafka_admin: AdminClient, capsys: pytest.CaptureFixture[str]
) -> None:
    names = _names()
    code, out, _ = _sentinel(
        capsys,
        "topics",
        "create",
        "--bootstrap-servers",
        kafka_bootstrap,
        "--partitions",
        "4",
        *_topic_flags(names),
    )
    assert code == 0
    assert out.count("created") == 6, out
    expected_partitions = {
        "transactions": 4,
        "decisions": 4,
        "drift": 1,
        "control": 1,
        "control-events": 1,
        "dlq": 3,
    }
    for role, partitions in expected_partitions.items():
        assert _partitions(kafka_admin, names[role]) == partitions, role
    control = _config(kafka_admin, names["control"])
    assert (control["retention.ms"], control["retention.bytes"]) == ("-1", "-1")
    dlq = _config(kafka_admin, names["dlq"])
    assert dlq["retention.ms"] == str(30 * 24 * 3600 * 1000)
    assert int(dlq["max.message.bytes"]) > int(
        _config(kafka_admin, names["transactions"])["max.message.bytes"]
    )


def test_create_twice_reports_existing_topics_and_changes_nothing(
    kafka_bootstrap: str, kafka_admin: AdminClient, capsys: pytest.CaptureFixture[str]
) -> None:
    names = _names()
    argv = ["topics", "create", "--bootstrap-servers", kafka_bootstrap, *_topic_flags(names)]
    assert _sentinel(capsys, *argv)[0] == 0
    code, out, err = _sentinel(capsys, *argv, "--partitions", "9")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines].count("exists") == 4, out
    assert "differs" in next(line for line in lines if names["transactions"] in line)
    assert "6 partitions (spec 9)" in out
    assert _partitions(kafka_admin, names["transactions"]) == 6


def test_existing_topic_with_other_partitions_and_retention_is_reported_not_changed(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    new_topic: TopicFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = _names()
    names["control"] = new_topic("control", partitions=2, config={"retention.ms": "60000"})
    code, out, err = _sentinel(
        capsys, "topics", "create", "--bootstrap-servers", kafka_bootstrap, *_topic_flags(names)
    )
    assert code == 0, err
    line = next(line for line in out.splitlines() if names["control"] in line)
    assert line.startswith("differs")
    assert "2 partitions (spec 1)" in line
    assert "retention.ms=60000 (spec -1)" in line
    assert _partitions(kafka_admin, names["control"]) == 2
    assert _config(kafka_admin, names["control"])["retention.ms"] == "60000"


def test_describe_shows_committed_offsets_and_lag_of_a_group(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    names = _names()
    flags = ["--bootstrap-servers", kafka_bootstrap, *_topic_flags(names)]
    assert _sentinel(capsys, "topics", "create", "--partitions", "2", *flags)[0] == 0
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(10):
        producer.produce(names["transactions"], value=b"{}", partition=i % 2)
    assert producer.flush(30) == 0
    group = f"ops-group-{uuid.uuid4().hex[:8]}"
    _commit(kafka_bootstrap, group, TopicPartition(names["transactions"], 0, 3))

    code, out, _ = _sentinel(capsys, "topics", "describe", "--group", group, *flags)
    assert code == 0
    section = out.split(f"{names['transactions']}:")[1].split(f"{names['decisions']}:")[0]
    rows = [line.split() for line in section.splitlines() if line[:11].strip().isdigit()]
    assert rows == [["0", "5", "3", "2"], ["1", "5", "-", "5"]]
    assert f"group {group}: total lag 7" in section
    assert f"{names['control']}: 1 partitions, retention forever" in out


def test_describe_reports_missing_topics_and_exits_nonzero(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    names = _names()
    code, out, _ = _sentinel(
        capsys, "topics", "describe", "--bootstrap-servers", kafka_bootstrap, *_topic_flags(names)
    )
    assert code == 1
    assert f"{names['control']}: missing" in out
    assert "run 'sentinel topics create'" in out


def test_dlq_accepts_a_record_larger_than_the_transactions_topic_does(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    names = _names()
    flags = ["--bootstrap-servers", kafka_bootstrap, *_topic_flags(names)]
    assert _sentinel(capsys, "topics", "create", "--partitions", "1", *flags)[0] == 0
    big = b"x" * (DLQ_MAX_MESSAGE_BYTES * 3 // 4)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "message.max.bytes": DLQ_MAX_MESSAGE_BYTES + 4096}
    )
    results: dict[str, str | None] = {}
    for role in ("dlq", "transactions"):
        producer.produce(
            names[role],
            value=big,
            on_delivery=lambda err, _msg, role=role: results.__setitem__(
                role, None if err is None else err.name()
            ),
        )
    assert producer.flush(30) == 0
    assert results == {"dlq": None, "transactions": "MSG_SIZE_TOO_LARGE"}


def test_unreachable_cluster_is_one_clear_error() -> None:
    (port,) = free_ports(1)  # nothing listens there
    admin = TopicAdmin(KafkaSettings(f"127.0.0.1:{port}"), timeout_s=2)
    with pytest.raises(BrokerError, match=f"cannot reach Kafka at 127.0.0.1:{port}"):
        admin.partition_counts(["transactions"])


def test_unknown_kafka_setting_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _sentinel(
        capsys,
        "topics",
        "create",
        "--bootstrap-servers",
        "127.0.0.1:9",
        "--kafka-config",
        "no.such.setting=1",
    )
    assert code == 1
    assert err.startswith("sentinel: error: invalid Kafka settings")
    assert "no.such.setting" in err
    assert len(err.strip().splitlines()) == 1
