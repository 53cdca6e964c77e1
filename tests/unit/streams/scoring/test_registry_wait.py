"""A registry outage rewinds the batch's partitions, pauses, and resumes after a growing backoff."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import TopicPartition

from schemas.errors import SchemaRegistryUnavailable
from streams.scoring.registry_wait import (
    FIRST_BACKOFF_S,
    MAX_BACKOFF_S,
    PAUSED_POLL_S,
    RegistryWait,
)


@dataclass
class Message:
    where: tuple[str, int, int]

    def topic(self) -> str:
        return self.where[0]

    def partition(self) -> int:
        return self.where[1]

    def offset(self) -> int:
        return self.where[2]


@dataclass
class Consumer:
    owned: list[tuple[str, int]]
    paused: set[tuple[str, int]] = field(default_factory=set)
    seeks: list[tuple[str, int, int]] = field(default_factory=list)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.owned]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def seek(self, partition: TopicPartition) -> None:
        self.seeks.append((partition.topic, partition.partition, partition.offset))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


DOWN = SchemaRegistryUnavailable("connection refused")


def test_the_batch_is_rewound_to_its_first_offsets_and_the_assignment_paused() -> None:
    consumer = Consumer([("tx", 0), ("tx", 1), ("tx", 2)])
    errors: list[int] = []
    wait = RegistryWait(consumer, lambda: errors.append(1), Clock())
    batch = [
        Message(("tx", 1, 50)),
        Message(("tx", 0, 7)),
        Message(("tx", 1, 49)),
        Message(("tx", 3, 5)),
    ]  # fmt: skip  (partition 3 was lost meanwhile)
    wait.rewind(batch, DOWN)
    assert sorted(consumer.seeks) == [("tx", 0, 7), ("tx", 1, 49)]
    assert consumer.paused == {("tx", 0), ("tx", 1), ("tx", 2)}
    assert wait.paused and errors == [1]
    assert wait.poll_timeout(0.001) == PAUSED_POLL_S


def test_it_resumes_after_the_backoff_which_doubles_up_to_the_cap_and_resets() -> None:
    consumer = Consumer([("tx", 0)])
    clock = Clock()
    wait = RegistryWait(consumer, lambda: None, clock)
    delays = []
    for _ in range(8):
        wait.rewind([Message(("tx", 0, 1))], DOWN)
        began = clock.now
        while wait.paused:
            wait.tick()
            clock.now += 0.05
        delays.append(round(clock.now - began, 1))
    assert consumer.paused == set()
    assert delays[0] >= FIRST_BACKOFF_S and delays[1] >= 2 * FIRST_BACKOFF_S
    assert max(delays) <= MAX_BACKOFF_S + 0.1 and delays[-1] >= MAX_BACKOFF_S
    wait.succeeded()
    wait.rewind([Message(("tx", 0, 1))], DOWN)
    clock.now += FIRST_BACKOFF_S
    wait.tick()
    assert not wait.paused  # back to the first backoff
    assert wait.poll_timeout(0.001) == 0.001
