"""Produce, then commit only what the broker acknowledged: the at-least-once core.

Each micro-batch becomes a :class:`PendingBatch` that counts its outstanding deliveries (decisions
and DLQ records). Batches complete out of the scorer's sight, in librdkafka's delivery
callbacks; :meth:`CommitTracker.commit_ready` commits the offsets of the completed batches at the
FRONT of the queue only, so an offset is never committed while an earlier record is in flight.
While batch *k* waits for its acks, the scorer is already decoding batch *k+1*.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from streams.errors import DeliveryError


class PendingBatch:
    """One batch's outstanding deliveries and the offsets it may commit once all are acked."""

    __slots__ = (
        "acked_at",
        "event_time_ms",
        "failures",
        "next_offsets",
        "outcome_counts",
        "outstanding",
    )

    def __init__(
        self,
        next_offsets: dict[tuple[str, int], int],
        event_time_ms: npt.NDArray[np.int64],
    ) -> None:
        self.next_offsets = next_offsets
        self.event_time_ms = event_time_ms
        self.outstanding = 0
        self.failures: list[str] = []
        self.acked_at = 0.0
        # (variant, model version, outcome) -> decisions in this batch, counted once acked
        self.outcome_counts: dict[tuple[str, str, str], int] = {}

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka delivery callback (runs inside producer.poll/flush on the scorer thread)."""
        self.outstanding -= 1
        if err is not None:
            self.failures.append(f"{msg.topic()}: {err}")
        if self.outstanding == 0:
            self.acked_at = time.time()


class CommitTracker:
    """Commits consumer offsets strictly behind the broker's acknowledgements."""

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        on_complete: Callable[[PendingBatch], None] = lambda batch: None,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._on_complete = on_complete
        self._pending: deque[PendingBatch] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, batch: PendingBatch) -> None:
        self._pending.append(batch)

    def commit_ready(self, asynchronous: bool = True) -> int:
        """Serve delivery callbacks, then commit the completed batches at the queue's front.

        Returns how many batches were committed. Raises :class:`DeliveryError` if the broker
        refused a record: the completed batches before it are committed, nothing of that batch
        or later ever is (the failed batch stays at the front, so every later call, including
        :meth:`drain` on shutdown or rebalance, raises again instead of committing past it).
        """
        self._producer.poll(0)
        offsets: dict[tuple[str, int], int] = {}
        done = 0
        while self._pending and self._pending[0].outstanding == 0:
            batch = self._pending[0]
            if batch.failures:
                if offsets:
                    self._commit(offsets.items(), asynchronous)
                raise DeliveryError(
                    f"{len(batch.failures)} record(s) not acknowledged, e.g. {batch.failures[0]}"
                )
            self._pending.popleft()
            offsets.update(batch.next_offsets)
            self._on_complete(batch)
            done += 1
        if offsets:
            self._commit(offsets.items(), asynchronous)
        return done

    def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for every outstanding delivery, then commit synchronously (rebalance, shutdown)."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} record(s) still unacknowledged after {timeout_s} s")
        self.commit_ready(asynchronous=False)

    def _commit(self, offsets: Iterable[tuple[tuple[str, int], int]], asynchronous: bool) -> None:
        partitions = [TopicPartition(t, p, off) for (t, p), off in offsets]
        kwargs: dict[str, Any] = {"offsets": partitions, "asynchronous": asynchronous}
        self._consumer.commit(**kwargs)
