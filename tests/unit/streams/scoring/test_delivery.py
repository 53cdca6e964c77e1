"""Commit only behind the broker's acknowledgements: the at-least-once core, without a broker.

The fake producer holds produced records "in flight" until the test acknowledges them; like
librdkafka it runs the delivery callbacks only inside poll() and flush().
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from schemas.errors import DeliveryError
from streams.scoring import delivery
from streams.scoring.delivery import CommitTracker, PendingBatch

Offsets = dict[tuple[str, int], int]


@dataclass
class FakeMessage:
    topic_name: str

    def topic(self) -> str:
        return self.topic_name


@dataclass
class FakeRecord:
    topic: str
    on_delivery: Any
    error: KafkaError | None = None


@dataclass
class FakeProducer:
    """Records stay in flight until acked; poll() and flush() run the delivery callbacks."""

    in_flight: list[FakeRecord] = field(default_factory=list)
    reported: list[FakeRecord] = field(default_factory=list)
    unflushable: int = 0  # records flush() cannot get acknowledged
    flushes: int = 0

    def produce(self, topic: str, on_delivery: Any) -> FakeRecord:
        record = FakeRecord(topic, on_delivery)
        self.in_flight.append(record)
        return record

    def ack(self, *records: FakeRecord, error: KafkaError | None = None) -> None:
        for record in records:
            self.in_flight.remove(record)
            record.error = error
            self.reported.append(record)

    def poll(self, timeout: float = 0) -> int:
        reported, self.reported = self.reported, []
        for record in reported:
            record.on_delivery(record.error, FakeMessage(record.topic))
        return len(reported)

    def flush(self, timeout: float = 0) -> int:
        self.flushes += 1
        self.ack(*self.in_flight[self.unflushable :])
        self.poll()
        return len(self.in_flight)


@dataclass
class FakeConsumer:
    """Records commits. Like the group coordinator it confirms each asynchronous commit through
    the ``on_commit`` callback and returns the partitions of a synchronous one; ``failing``
    commits are refused (as during a rebalance) instead."""

    commits: list[tuple[Offsets, bool]] = field(default_factory=list)
    on_commit: Any = None
    failing: int = 0

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        self.commits.append(({(tp.topic, tp.partition): tp.offset for tp in offsets}, asynchronous))
        refused = self.failing > 0
        self.failing -= refused
        if asynchronous:
            error = KafkaError(KafkaError.REBALANCE_IN_PROGRESS) if refused else None
            self.on_commit(error, [] if refused else offsets)
            return None
        if refused:
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
        return offsets


class Harness:
    """A tracker wired to the fakes; ``completed`` lists the batches it reported complete."""

    def __init__(self, commit_interval_s: float = 0.0) -> None:
        self.producer, self.consumer = FakeProducer(), FakeConsumer()
        self.completed: list[PendingBatch] = []
        self.sent: list[PendingBatch] = []
        self.tracker = CommitTracker(
            cast(Consumer, self.consumer),
            cast(Producer, self.producer),
            on_complete=self.completed.append,
            commit_interval_s=commit_interval_s,
        )
        self.consumer.on_commit = self.tracker.on_commit

    def send(self, next_offsets: Offsets, n_records: int) -> list[FakeRecord]:
        """Produce one batch's records the way the scorer does: the batch is their callback."""
        batch = PendingBatch(next_offsets, np.zeros(n_records, dtype=np.int64))
        batch.outstanding = n_records
        records = [self.producer.produce("decisions", batch.on_delivery) for _ in range(n_records)]
        self.tracker.add(batch)
        self.sent.append(batch)
        return records

    def committed(self) -> list[Offsets]:
        return [offsets for offsets, _ in self.consumer.commits]


TIMED_OUT = KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out")


def test_nothing_is_committed_until_every_record_of_the_batch_is_acked() -> None:
    h = Harness()
    records = h.send({("transactions", 0): 11}, 3)

    h.producer.ack(*records[:2])
    assert h.tracker.commit_ready() == 0
    assert h.committed() == [] and h.completed == []
    assert h.sent[0].acked_at == 0.0  # the end-to-end latency clock has not stopped yet

    h.producer.ack(records[2])
    assert h.tracker.commit_ready() == 1
    assert h.consumer.commits == [({("transactions", 0): 11}, True)]
    assert h.completed == h.sent and len(h.tracker) == 0
    assert h.completed[0].acked_at > 0


def test_a_later_batch_acked_first_waits_for_the_earlier_one() -> None:
    h = Harness()
    first = h.send({("transactions", 0): 11}, 2)
    second = h.send({("transactions", 0): 21, ("transactions", 1): 5}, 2)

    h.producer.ack(*second)
    assert h.tracker.commit_ready() == 0
    assert h.committed() == [] and h.completed == []

    h.producer.ack(*first)
    assert h.tracker.commit_ready() == 2
    assert h.committed() == [{("transactions", 0): 21, ("transactions", 1): 5}]
    assert len(h.completed) == 2


def test_each_completed_batch_is_committed_once() -> None:
    h = Harness()
    h.producer.ack(*h.send({("transactions", 0): 11}, 1))
    h.tracker.commit_ready()
    assert h.tracker.commit_ready() == 0
    h.producer.ack(*h.send({("transactions", 0): 12}, 1))
    h.tracker.commit_ready()
    assert h.committed() == [{("transactions", 0): 11}, {("transactions", 0): 12}]


def test_a_refused_record_raises_and_its_batch_is_not_committed() -> None:
    h = Harness()
    records = h.send({("transactions", 0): 11}, 2)
    h.producer.ack(records[0])
    h.producer.ack(records[1], error=TIMED_OUT)

    with pytest.raises(DeliveryError, match=r"1 record.*not acknowledged.*decisions.*timed out"):
        h.tracker.commit_ready()
    assert h.committed() == [] and h.completed == []


def test_after_a_refused_record_no_later_batch_is_ever_committed() -> None:
    """Committing a later batch would skip the refused records: they would be lost."""
    h = Harness()
    good = h.send({("transactions", 0): 11}, 1)
    refused = h.send({("transactions", 0): 21}, 1)
    later = h.send({("transactions", 0): 31}, 1)
    h.producer.ack(*good, *later)
    h.producer.ack(*refused, error=TIMED_OUT)

    with pytest.raises(DeliveryError):
        h.tracker.commit_ready()
    # the scorer's shutdown and rebalance paths drain the tracker next: they must refuse too
    with pytest.raises(DeliveryError):
        h.tracker.drain()
    with pytest.raises(DeliveryError):
        h.tracker.commit_ready()
    assert h.committed() == [{("transactions", 0): 11}]  # acked before the refused batch


def test_drain_waits_for_every_ack_and_commits_synchronously() -> None:
    h = Harness()
    h.send({("transactions", 0): 11}, 2)
    h.send({("transactions", 1): 7}, 3)

    h.tracker.drain()

    assert h.producer.flushes == 1 and h.producer.in_flight == []
    assert h.consumer.commits == [({("transactions", 0): 11, ("transactions", 1): 7}, False)]
    assert len(h.completed) == 2 and len(h.tracker) == 0


def test_drain_raises_when_flush_leaves_records_unacknowledged() -> None:
    h = Harness()
    h.producer.unflushable = 1
    h.send({("transactions", 0): 11}, 3)

    with pytest.raises(DeliveryError, match=r"1 record.*still unacknowledged"):
        h.tracker.drain(timeout_s=0.1)
    assert h.committed() == [] and h.completed == []


def test_drain_with_nothing_pending_commits_nothing() -> None:
    h = Harness()
    h.tracker.drain()
    assert h.committed() == []


def test_a_refused_commit_is_retried_until_the_coordinator_confirms_it() -> None:
    h = Harness()
    h.consumer.failing = 1  # e.g. REBALANCE_IN_PROGRESS while the group rebalances
    h.producer.ack(*h.send({("transactions", 3): 45_210}, 2))
    assert h.tracker.commit_ready() == 1
    assert len(h.tracker) == 1  # acknowledged, but the commit is not confirmed

    # No new batch for that partition ever arrives; the next loop still commits the offset.
    assert h.tracker.commit_ready() == 0
    assert h.committed() == [{("transactions", 3): 45_210}] * 2
    assert len(h.tracker) == 0
    h.tracker.commit_ready()
    assert len(h.consumer.commits) == 2  # confirmed offsets are not committed again


def test_a_failed_synchronous_commit_keeps_the_offsets_and_revoked_partitions_are_forgotten() -> (
    None
):
    h = Harness()
    h.consumer.failing = 1
    h.producer.ack(*h.send({("transactions", 0): 5, ("transactions", 1): 9}, 1))
    h.tracker.drain()  # the sync commit is refused: logged, not raised, offsets kept
    assert len(h.tracker) == 1
    h.tracker.forget([TopicPartition("transactions", 0)])
    h.tracker.drain()
    assert h.committed()[-1] == {("transactions", 1): 9}
    assert len(h.tracker) == 0


def test_lost_partitions_are_forgotten_even_in_batches_still_in_flight() -> None:
    """After a lost assignment the member commits nothing more for those partitions."""
    h = Harness()
    records = h.send({("transactions", 0): 5, ("transactions", 1): 9}, 2)
    h.tracker.forget([TopicPartition("transactions", 1)])  # on_lost, acks still outstanding
    assert h.tracker.uncommitted() == {("transactions", 0): 5}
    h.producer.ack(*records)
    assert h.tracker.commit_ready() == 1
    assert h.committed() == [{("transactions", 0): 5}]
    assert len(h.completed) == 1  # the batch's decisions are still counted once acked


def test_a_fenced_commit_is_not_retried_in_a_tight_loop() -> None:
    h = Harness()
    refusal = KafkaError(KafkaError.UNKNOWN_MEMBER_ID)
    h.consumer.on_commit = lambda error, partitions: h.tracker.on_commit(refusal, [])
    h.producer.ack(*h.send({("transactions", 2): 40}, 1))
    h.tracker.commit_ready()
    for _ in range(100):  # the scorer's loop spins while the member rejoins
        h.tracker.commit_ready()
    assert h.committed() == [{("transactions", 2): 40}]
    assert h.tracker.uncommitted() == {("transactions", 2): 40}


def test_asynchronous_commits_wait_out_the_interval_and_a_drain_commits_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(delivery.time, "monotonic", lambda: now[0])
    h = Harness(commit_interval_s=0.1)
    h.producer.ack(*h.send({("transactions", 0): 11}, 1))
    h.tracker.commit_ready()
    h.producer.ack(*h.send({("transactions", 0): 12}, 1))
    now[0] += 0.05
    assert h.tracker.commit_ready() == 1  # acked and counted, but not committed yet
    assert h.committed() == [{("transactions", 0): 11}]
    now[0] += 0.05
    h.tracker.commit_ready()
    assert h.committed() == [{("transactions", 0): 11}, {("transactions", 0): 12}]
    h.producer.ack(*h.send({("transactions", 0): 13}, 1))
    h.tracker.drain()
    assert h.committed()[-1] == {("transactions", 0): 13}
