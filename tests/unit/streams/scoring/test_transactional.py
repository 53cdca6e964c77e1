"""The exactly-once transaction lifecycle against fakes of the transactional producer and the
consumer: what commits, what an abort rewinds, when a fenced producer stops the scorer."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from schemas.errors import DeliveryError
from streams.scoring import transactional
from streams.scoring.delivery import PendingBatch
from streams.scoring.transactional import (
    TransactionFenced,
    Transactions,
    transactional_id,
    transactional_settings,
)


class FakeTransactionalProducer:
    """Records the transactional calls; ``fail`` maps a call name to the errors it raises next."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.offsets_sent: list[dict[tuple[str, int], int]] = []
        self.fail: dict[str, list[KafkaError]] = {}

    def _call(self, name: str) -> None:
        self.calls.append(name)
        errors = self.fail.get(name)
        if errors:
            raise KafkaException(errors.pop(0))

    def init_transactions(self, timeout: float) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float
    ) -> None:
        assert group_metadata == "generation-3"
        self._call("send_offsets")
        self.offsets_sent.append({(tp.topic, tp.partition): tp.offset for tp in positions})

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit")

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort")


class FakeConsumer:
    def __init__(self, assigned: list[int]) -> None:
        self.assigned = assigned
        self.seeks: list[tuple[str, int, int]] = []
        self.committed_offsets: dict[int, int] = {}  # by partition; none committed yet

    def consumer_group_metadata(self) -> str:
        return "generation-3"

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("tx", p) for p in self.assigned]

    def seek(self, partition: TopicPartition) -> None:
        self.seeks.append((partition.topic, partition.partition, partition.offset))

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.committed_offsets.get(tp.partition, -1001))
            for tp in partitions
        ]


def abortable() -> KafkaError:
    return KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True)


def batch(next_offsets: dict[int, int]) -> PendingBatch:
    pending = PendingBatch({("tx", p): o for p, o in next_offsets.items()}, np.zeros(0, np.int64))
    pending.outcome_counts = {("A", "v1", "ALLOW"): 1}
    return pending


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def slowed(
    producer: FakeTransactionalProducer, call: str, clock: Clock, seconds: float = 0
) -> None:
    """Each ``call`` advances the clock by ``seconds``, or by its whole timeout (a call that
    waits its slice out) when ``seconds`` is 0."""
    original = getattr(producer, call)

    def slow(timeout: float) -> None:
        clock.now += seconds or timeout
        original(timeout)

    setattr(producer, call, slow)


@pytest.fixture
def parts() -> tuple[FakeTransactionalProducer, FakeConsumer, list[PendingBatch], Transactions]:
    producer, consumer = FakeTransactionalProducer(), FakeConsumer([0, 1])
    committed: list[PendingBatch] = []
    return producer, consumer, committed, Transactions(lambda: producer, consumer, committed.append)


def test_the_transactional_id_is_stable_per_group_and_scorer() -> None:
    assert transactional_id("scorers", "scorer-1") == "scorers.scorer-1"
    settings = transactional_settings({"acks": "all"}, "scorers.scorer-1")
    assert settings["transactional.id"] == "scorers.scorer-1" and settings["acks"] == "all"


def test_two_batches_commit_in_one_transaction_with_the_last_offsets(parts: Any) -> None:
    producer, _, committed, txns = parts
    first, second = batch({0: 10, 1: 5}), batch({0: 12})
    txns.begin({("tx", 0): 0, ("tx", 1): 3})
    txns.add(first)
    txns.begin({("tx", 0): 10})  # already open: no second begin
    txns.add(second)

    assert txns.commit() is True
    assert producer.calls == ["begin", "send_offsets", "commit"]
    assert producer.offsets_sent == [{("tx", 0): 12, ("tx", 1): 5}]
    assert committed == [first, second]  # counted only once committed
    assert first.acked_at > 0 and txns.uncommitted() == {}


def test_an_abortable_commit_aborts_and_rewinds_to_the_first_offsets(parts: Any) -> None:
    producer, consumer, committed, txns = parts
    producer.fail["commit"] = [abortable()]
    txns.begin({("tx", 0): 7, ("tx", 1): 3, ("tx", 2): 9})  # partition 2 since revoked
    txns.add(batch({0: 8, 1: 4, 2: 10}))

    assert txns.commit() is False
    assert producer.calls == ["begin", "send_offsets", "commit", "abort"]
    assert consumer.seeks == [("tx", 0, 7), ("tx", 1, 3)]  # only what is still assigned
    assert committed == [] and len(txns) == 0
    txns.begin({("tx", 0): 7})  # the next transaction starts afresh
    assert producer.calls[-1] == "begin"


def test_a_retriable_commit_is_resumed_not_aborted(parts: Any) -> None:
    producer, _, committed, txns = parts
    producer.fail["commit"] = [KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)]
    txns.begin({("tx", 0): 0})
    txns.add(batch({0: 1}))

    assert txns.commit() is True
    assert producer.calls == ["begin", "send_offsets", "commit", "commit"]
    assert len(committed) == 1


def timed_out() -> KafkaError:
    return KafkaError(KafkaError._TIMED_OUT, "timed out, retry call to resume", retriable=True)


def test_a_broker_outage_longer_than_the_transaction_timeout_resumes_the_commit() -> None:
    """librdkafka refuses an abort while a commit is in progress: the commit is resumed until
    the broker answers (here: the coordinator had aborted it meanwhile), never abandoned for an
    abort that cannot run (that spun for 120 s, then stopped the scorer)."""
    producer, consumer, clock = FakeTransactionalProducer(), FakeConsumer([0]), Clock()
    txns = Transactions(lambda: producer, consumer, clock=clock)
    seconds = int(transactional.HUNG_AFTER_S) - 5  # shorter than a stuck producer's limit
    outage = [timed_out() for _ in range(seconds)]
    producer.fail["commit"] = [*outage, abortable()]
    slowed(producer, "commit_transaction", clock)  # each resumed call waits its whole slice
    txns.begin({("tx", 0): 4})
    txns.add(batch({0: 9}))

    assert txns.commit() is False
    assert producer.calls.count("commit") == seconds + 1  # the outage, then the abortable answer
    assert producer.calls[-1] == "abort" and consumer.seeks == [("tx", 0, 4)]


def test_out_of_shutdown_budget_the_transaction_is_left_to_the_coordinator() -> None:
    producer, consumer, clock = FakeTransactionalProducer(), FakeConsumer([0]), Clock()
    txns = Transactions(lambda: producer, consumer, clock=clock, give_up=lambda: clock.now > 105)
    producer.fail["commit"] = [timed_out() for _ in range(100)]
    slowed(producer, "commit_transaction", clock)
    txns.begin({("tx", 0): 4})
    txns.add(batch({0: 9}))

    assert txns.commit() is False
    assert "abort" not in producer.calls  # refused while the commit runs: not attempted
    assert len(txns) == 0


def test_a_fenced_producer_raises_instead_of_committing(parts: Any) -> None:
    producer, _, committed, txns = parts
    producer.fail["commit"] = [KafkaError(KafkaError._FENCED, "fenced", fatal=True)]
    txns.begin({("tx", 0): 0})
    txns.add(batch({0: 1}))

    with pytest.raises(TransactionFenced, match="another instance with the same"):
        txns.commit()
    assert committed == []


def test_lost_partitions_abort_the_open_transaction(parts: Any) -> None:
    producer, consumer, committed, txns = parts
    txns.begin({("tx", 0): 4, ("tx", 1): 2})
    txns.add(batch({0: 5, 1: 3}))
    consumer.assigned = [1]

    txns.forget([TopicPartition("tx", 0)])
    assert producer.calls == ["begin", "abort"]
    assert consumer.seeks == [("tx", 1, 2)]
    assert txns.commit() is True and committed == []  # nothing open any more


def test_aborts_in_a_row_stop_the_scorer(parts: Any) -> None:
    producer, _, _, txns = parts
    producer.fail["commit"] = [abortable() for _ in range(transactional.MAX_CONSECUTIVE_ABORTS)]
    for attempt in range(transactional.MAX_CONSECUTIVE_ABORTS):
        txns.begin({("tx", 0): 0})
        txns.add(batch({0: 1}))
        if attempt < transactional.MAX_CONSECUTIVE_ABORTS - 1:
            assert txns.commit() is False
    with pytest.raises(DeliveryError, match="aborted in a row"):
        txns.commit()


def test_caught_up_commits_at_once_a_backlog_waits_for_the_commit_share() -> None:
    clock = Clock()

    class SlowCommit(FakeTransactionalProducer):
        def commit_transaction(self, timeout: float) -> None:
            clock.now += 0.05  # a 50 ms commit

    txns = Transactions(SlowCommit, FakeConsumer([0]), clock=clock)
    assert not txns.due(caught_up=True)  # nothing open
    txns.begin({("tx", 0): 0})
    assert txns.due(caught_up=True)
    assert not txns.due(caught_up=False)
    clock.now += transactional.MIN_TRANSACTION_S + 0.001
    assert txns.due(caught_up=False)

    assert txns.commit()
    txns.begin({("tx", 0): 1})
    clock.now += 0.4  # a 50 ms commit: a backlog keeps the next one open for 9 x 50 ms
    assert not txns.due(caught_up=False)
    clock.now += 0.06
    assert txns.due(caught_up=False)


def test_a_hung_send_offsets_replaces_the_producer_and_rewinds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka's send_offsets_to_transaction can wait forever after a broker restart (seen in
    the broker-restart test: the scorer decided nothing more, ever): the hung producer is
    abandoned, a new one with the same id is initialised (fencing it), the consumer rewound to
    the transaction's first offset (nothing committed on the partition yet)."""
    monkeypatch.setattr(transactional, "HUNG_AFTER_S", 0.05)
    released = threading.Event()

    class Hangs(FakeTransactionalProducer):
        def send_offsets_to_transaction(
            self, positions: list[TopicPartition], group_metadata: Any, timeout: float
        ) -> None:
            self.calls.append("send_offsets")
            released.wait(30)  # never answers while the test runs

    hung, fresh, consumer = Hangs(), FakeTransactionalProducer(), FakeConsumer([0])
    made = iter([hung, fresh])
    txns = Transactions(lambda: next(made), consumer, clock=Clock())
    txns.start(10)
    txns.begin({("tx", 0): 4})
    txns.add(batch({0: 9}))
    try:
        assert txns.commit(timeout_s=0.01) is False
        assert txns.producer is fresh and fresh.calls == ["init"]
        assert "commit" not in hung.calls and consumer.seeks == [("tx", 0, 4)]

        txns.begin({("tx", 0): 4})  # decided again, committed through the new producer
        txns.add(batch({0: 9}))
        assert txns.commit() is True
        assert fresh.calls == ["init", "begin", "send_offsets", "commit"]
    finally:
        released.set()


def test_a_commit_failing_past_the_limit_replaces_the_producer_and_resumes_from_the_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A coordinator connection that never comes back: every call times out, for ever (seen
    after a broker restart). Past HUNG_AFTER_S a new producer completes the old transaction;
    if its commit had reached the coordinator, the group's offset is past it: no re-decide."""
    clock = Clock()
    stuck, fresh, consumer = (
        FakeTransactionalProducer(),
        FakeTransactionalProducer(),
        FakeConsumer([0]),
    )
    stuck.fail["commit"] = [timed_out() for _ in range(1000)]
    slowed(stuck, "commit_transaction", clock, 10)  # each call times out after its request timeout
    made = iter([stuck, fresh])
    txns = Transactions(lambda: next(made), consumer, clock=clock)
    txns.begin({("tx", 0): 4})
    txns.add(batch({0: 9}))
    consumer.committed_offsets = {0: 9}  # the old transaction turned out committed

    assert txns.commit() is False
    assert stuck.calls.count("commit") == int(transactional.HUNG_AFTER_S // 10)
    assert txns.producer is fresh and fresh.calls == ["init"]
    assert consumer.seeks == [("tx", 0, 9)] and "abort" not in stuck.calls


def test_an_abort_failing_past_the_limit_replaces_the_producer_and_rewinds() -> None:
    clock = Clock()
    stuck, fresh, consumer = (
        FakeTransactionalProducer(),
        FakeTransactionalProducer(),
        FakeConsumer([0]),
    )
    stuck.fail["commit"] = [abortable()]
    stuck.fail["abort"] = [timed_out() for _ in range(1000)]
    slowed(stuck, "abort_transaction", clock)
    made = iter([stuck, fresh])
    txns = Transactions(lambda: next(made), consumer, clock=clock)
    txns.begin({("tx", 0): 4})
    txns.add(batch({0: 9}))

    assert txns.commit() is False  # abortable: abort, which never finishes on this producer
    assert txns.producer is fresh and fresh.calls == ["init"]
    assert consumer.seeks == [("tx", 0, 4)]  # nothing committed on the partition: its start
