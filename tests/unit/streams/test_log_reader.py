"""read_to_end against a fake consumer: the end is the watermark taken at the call, OFFSET_END
partitions are not waited for, a stall or a broker error is a BrokerError."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from schemas.errors import BrokerError
from streams import log_reader
from streams.log_reader import read_to_end

TOPIC = "control"


@dataclass
class FakeMessage:
    partition_id: int
    at: int
    payload: bytes | None
    failure: KafkaError | None = None

    def partition(self) -> int:
        return self.partition_id

    def offset(self) -> int:
        return self.at

    def value(self) -> bytes | None:
        return self.payload

    def error(self) -> KafkaError | None:
        return self.failure


@dataclass
class FakeConsumer:
    """A topic whose partitions hold ``logs[p]`` from offset ``low[p]`` (earlier ones deleted).

    ``poll`` serves the assigned partitions round robin; ``on_poll`` runs before each poll (a
    producer appending meanwhile); a partition read to its end yields one EOF event.
    ``clock`` advances by the poll timeout on every poll.
    """

    logs: dict[int, list[bytes]]
    low: dict[int, int] = field(default_factory=dict)
    errors: list[KafkaError] = field(default_factory=list)
    on_poll: Any = None
    stalled: bool = False
    clock: float = 0.0
    positions: dict[int, int] = field(default_factory=dict)
    assigned: list[tuple[str, int, int]] = field(default_factory=list)
    polls: int = 0
    _eof_sent: set[int] = field(default_factory=set)

    def high(self, p: int) -> int:
        return self.low.get(p, 0) + len(self.logs[p])

    def list_topics(self, topic: str, timeout: float) -> Any:
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions=dict.fromkeys(self.logs))})

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        return self.low.get(tp.partition, 0), self.high(tp.partition)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = [(tp.topic, tp.partition, tp.offset) for tp in partitions]
        for tp in partitions:
            low = self.low.get(tp.partition, 0)
            if tp.offset == OFFSET_BEGINNING:
                self.positions[tp.partition] = low
            elif tp.offset == OFFSET_END:
                self.positions[tp.partition] = self.high(tp.partition)
            else:
                self.positions[tp.partition] = max(tp.offset, low)

    def poll(self, timeout: float) -> FakeMessage | None:
        self.polls += 1
        self.clock += timeout
        if self.on_poll is not None:
            self.on_poll(self)
        if self.errors:
            return FakeMessage(-1, -1, None, self.errors.pop(0))
        if self.stalled:
            return None
        for p in sorted(self.positions, key=lambda p: (self.positions[p], p)):
            at = self.positions[p]
            if at < self.high(p):
                self.positions[p] = at + 1
                self._eof_sent.discard(p)
                return FakeMessage(p, at, self.logs[p][at - self.low.get(p, 0)])
            if p not in self._eof_sent:
                self._eof_sent.add(p)
                return FakeMessage(p, at, None, KafkaError(KafkaError._PARTITION_EOF))
        return None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[FakeConsumer]:
    """Makes read_to_end's clock the fake consumer's (registered in the returned list)."""
    consumers: list[FakeConsumer] = []
    monkeypatch.setattr(
        log_reader,
        "time",
        SimpleNamespace(monotonic=lambda: consumers[0].clock if consumers else 0),
    )
    return consumers


Seen = list[tuple[int | None, int | None, bytes | None]]


def read(
    consumer: FakeConsumer, start: dict[int, int] | None = None, **kwargs: float
) -> tuple[int, Seen]:
    seen: Seen = []
    count = read_to_end(
        cast(Consumer, consumer),
        TOPIC,
        lambda m: seen.append((m.partition(), m.offset(), m.value())),
        start=start,
        **kwargs,
    )
    return count, seen


def test_reads_every_partition_from_its_first_record_to_its_end() -> None:
    consumer = FakeConsumer({0: [b"a0", b"a1", b"a2"], 1: [b"b0"], 2: []}, low={1: 7})
    count, seen = read(consumer)
    assert count == 4
    assert sorted(seen) == [(0, 0, b"a0"), (0, 1, b"a1"), (0, 2, b"a2"), (1, 7, b"b0")]
    assert [o for p, o, _ in seen if p == 0] == [0, 1, 2]  # in partition order


def test_records_published_while_reading_are_left_for_the_follower() -> None:
    def publish(consumer: FakeConsumer) -> None:
        consumer.logs[0].append(b"later-%d" % consumer.polls)

    consumer = FakeConsumer({0: [b"r0", b"r1"]}, on_poll=publish)
    count, seen = read(consumer)
    assert count == 2 and [v for _, _, v in seen] == [b"r0", b"r1"]
    # the consumer stays assigned, positioned right after what was read
    assert consumer.assigned == [(TOPIC, 0, OFFSET_BEGINNING)]
    assert consumer.positions[0] == 2 and consumer.high(0) > 2


def test_start_offsets_are_honoured_and_offset_end_partitions_are_not_waited_for() -> None:
    consumer = FakeConsumer({0: [b"x0", b"x1", b"x2", b"x3"], 1: [b"y0", b"y1"]})
    count, seen = read(consumer, start={0: 2, 1: OFFSET_END})
    assert count == 2
    assert seen == [(0, 2, b"x2"), (0, 3, b"x3")]
    # OFFSET_END is still assigned: whoever follows the log gets partition 1's new records
    assert consumer.assigned == [(TOPIC, 0, 2), (TOPIC, 1, OFFSET_END)]


def test_a_start_past_the_end_or_an_empty_topic_returns_without_waiting(
    clock: list[FakeConsumer],
) -> None:
    consumer = FakeConsumer({0: [b"x0"], 1: []}, stalled=True)
    clock.append(consumer)
    assert read(consumer, start={0: 1, 1: OFFSET_BEGINNING}, idle_timeout_s=1.0) == (0, [])
    assert consumer.polls == 0


def test_only_the_listed_partitions_are_read() -> None:
    consumer = FakeConsumer({0: [b"a"], 1: [b"b"]})
    count, seen = read(consumer, start={1: OFFSET_BEGINNING})
    assert (count, seen) == (1, [(1, 0, b"b")])
    assert consumer.assigned == [(TOPIC, 1, OFFSET_BEGINNING)]


def test_a_stall_before_the_end_raises_broker_error_naming_the_partitions(
    clock: list[FakeConsumer],
) -> None:
    consumer = FakeConsumer({0: [b"a"], 3: [b"b", b"c"]}, stalled=True)
    clock.append(consumer)
    with pytest.raises(BrokerError, match=r"'control' stalled for 5 s with partitions \[0, 3\]"):
        read(consumer, idle_timeout_s=5.0)
    assert 5.0 / log_reader.POLL_TIMEOUT_S <= consumer.polls <= 5.0 / log_reader.POLL_TIMEOUT_S + 2


def test_progress_resets_the_stall_clock(clock: list[FakeConsumer]) -> None:
    """A slow log is not a stall: only time without any record counts."""

    def trickle(consumer: FakeConsumer) -> None:
        consumer.stalled = consumer.polls % 20 != 0  # one record every 20 polls = 4 s

    consumer = FakeConsumer({0: [b"%d" % i for i in range(5)]}, on_poll=trickle)
    clock.append(consumer)
    count, _ = read(consumer, idle_timeout_s=5.0)
    assert count == 5 and consumer.clock > 5.0


def test_a_broker_error_other_than_end_of_partition_raises() -> None:
    consumer = FakeConsumer(
        {0: [b"a", b"b"]},
        errors=[
            KafkaError(KafkaError._PARTITION_EOF),  # just "nothing more right now": ignored
            KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "not authorized"),
        ],
    )
    with pytest.raises(BrokerError, match=r"reading 'control': .*not authorized"):
        read(consumer)


def test_an_exception_from_handle_propagates() -> None:
    consumer = FakeConsumer({0: [b"a", b"b"]})

    def handle(message: Any) -> None:
        raise ValueError(f"bad record at {message.offset()}")

    with pytest.raises(ValueError, match="bad record at 0"):
        read_to_end(cast(Consumer, consumer), TOPIC, handle)
