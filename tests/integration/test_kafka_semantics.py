"""The Kafka guarantees the scorer relies on, checked against the real broker.

Committed offsets survive a consumer (at-least-once resumes where it left off), a group spreads
partitions across instances and hands them over when one leaves, and transactions hide aborted
records from ``read_committed`` readers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from tests.fixtures.kafka import TopicFactory

pytestmark = pytest.mark.integration

PARTITIONS = 6
DEADLINE_S = 60.0  # a guard against hanging, not a performance goal


def _consumer(bootstrap: str, group: str, **extra: str | bool | int) -> Consumer:
    config: dict[str, str | bool | int] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    config.update(extra)
    return Consumer(config)


def _produce(producer: Producer, topic: str, records: Iterable[tuple[str, str]]) -> None:
    """Produce ``(key, value)`` records and wait until the broker acknowledged all of them."""
    failures: list[str] = []

    def on_delivery(err: object, _msg: Message) -> None:
        if err is not None:
            failures.append(str(err))

    for n, (key, value) in enumerate(records):
        producer.produce(topic, key=key.encode(), value=value.encode(), on_delivery=on_delivery)
        if n % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    assert failures == []


def _batch(consumer: Consumer) -> list[Message]:
    """One short poll for up to 100 messages; a consumer error fails the test."""
    batch: list[Message] = consumer.consume(num_messages=100, timeout=0.2)
    for msg in batch:
        assert msg.error() is None, msg.error()
    return batch


def _consume(consumer: Consumer, count: int) -> list[Message]:
    """Poll until ``count`` messages arrived (fails if they do not within the deadline)."""
    received: list[Message] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(received) < count and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=1000, timeout=0.5):
            assert msg.error() is None, msg.error()
            received.append(msg)
    assert len(received) == count, f"got {len(received)} of {count} messages"
    return received


def _poll_until(consumers: list[Consumer], done: Callable[[], bool]) -> None:
    """Keep every consumer polling (so group rebalances complete) until ``done()``."""
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, "the group never reached the expected assignment"
        for consumer in consumers:
            msg = consumer.poll(0.2)
            assert msg is None, f"unexpected record while rebalancing: {msg.value()!r}"


def _value(msg: Message) -> str:
    value = msg.value()
    assert isinstance(value, bytes)
    return value.decode()


def _partitions(consumer: Consumer) -> set[int]:
    return {tp.partition for tp in consumer.assignment()}


def test_new_consumer_resumes_from_committed_offsets(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topic = new_topic("resume", partitions=PARTITIONS)
    group = f"resume-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20})
    _produce(producer, topic, ((f"card-{n % 700}", f"old-{n}") for n in range(10_000)))

    first = _consumer(kafka_bootstrap, group)
    first.subscribe([topic])
    old = _consume(first, 10_000)
    first.commit(asynchronous=False)
    first.close()

    assert sorted(_value(m) for m in old) == sorted(f"old-{n}" for n in range(10_000))
    partitions_of_key: dict[object, set[object]] = {}
    for m in old:
        partitions_of_key.setdefault(m.key(), set()).add(m.partition())
    assert all(len(parts) == 1 for parts in partitions_of_key.values()), "a key was split"
    assert {m.partition() for m in old} == set(range(PARTITIONS))

    second = _consumer(kafka_bootstrap, group)
    committed = second.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    assert sum(tp.offset for tp in committed) == 10_000
    second.subscribe([topic])
    _produce(producer, topic, ((f"card-{n}", f"new-{n}") for n in range(5)))
    resumed = _consume(second, 5)
    second.close()

    # Had the offsets not been committed, old records (earlier in each partition) would come first.
    assert sorted(_value(m) for m in resumed) == [f"new-{n}" for n in range(5)]


def test_group_splits_partitions_and_hands_them_over(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topic = new_topic("split", partitions=PARTITIONS)
    group = f"split-{uuid.uuid4().hex[:8]}"
    one, two = _consumer(kafka_bootstrap, group), _consumer(kafka_bootstrap, group)
    one.subscribe([topic])
    two.subscribe([topic])
    try:
        _poll_until(
            [one, two],
            lambda: (
                bool(_partitions(one))
                and bool(_partitions(two))
                and not _partitions(one) & _partitions(two)
                and _partitions(one) | _partitions(two) == set(range(PARTITIONS))
            ),
        )
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for p in range(PARTITIONS):
            for n in range(50):
                producer.produce(topic, value=f"{p}-{n}".encode(), partition=p)
        assert producer.flush(30) == 0

        got_one: list[Message] = []
        got_two: list[Message] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(got_one) + len(got_two) < 300 and time.monotonic() < deadline:
            got_one += _batch(one)
            got_two += _batch(two)
        one.commit(asynchronous=False)
        two.commit(asynchronous=False)

        seen_one = {(m.partition(), m.offset()) for m in got_one}
        seen_two = {(m.partition(), m.offset()) for m in got_two}
        assert seen_one and seen_two, "each instance must receive part of the stream"
        assert not seen_one & seen_two, "a record was delivered to both instances"
        assert len(seen_one | seen_two) == 300
        assert {p for p, _ in seen_one} == _partitions(one)
        assert {p for p, _ in seen_two} == _partitions(two)

        two.close()
        _poll_until([one], lambda: _partitions(one) == set(range(PARTITIONS)))
        for p in range(PARTITIONS):
            producer.produce(topic, value=f"after-{p}".encode(), partition=p)
        assert producer.flush(30) == 0
        after = _consume(one, PARTITIONS)
        # The survivor resumes the leaver's partitions at its committed offsets: only new records.
        assert sorted(_value(m) for m in after) == [f"after-{p}" for p in range(6)]
    finally:
        one.close()


def test_aborted_transactions_are_invisible_to_read_committed(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topic = new_topic("txn")
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(60)
    batches = {"committed-a": True, "aborted": False, "committed-b": True}
    for label, commit in batches.items():
        producer.begin_transaction()
        for n in range(20):
            producer.produce(topic, value=f"{label}-{n}".encode())
        if commit:
            producer.commit_transaction(30)
        else:
            producer.flush(30)  # the aborted records really reach the log
            producer.abort_transaction(30)

    def read_all(isolation: str, count: int) -> list[str]:
        consumer = _consumer(
            kafka_bootstrap, f"iso-{uuid.uuid4().hex[:8]}", **{"isolation.level": isolation}
        )
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        try:
            return [_value(m) for m in _consume(consumer, count)]
        finally:
            consumer.close()

    committed = read_all("read_committed", 40)
    everything = read_all("read_uncommitted", 60)

    assert committed == [f"committed-a-{n}" for n in range(20)] + [
        f"committed-b-{n}" for n in range(20)
    ]
    # The aborted records are in the log: a read_uncommitted reader sees them.
    assert [v for v in everything if v.startswith("aborted")] == [f"aborted-{n}" for n in range(20)]
