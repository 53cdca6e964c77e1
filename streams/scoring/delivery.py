"""Produce, then commit only what the broker acknowledged: the at-least-once core.

Each micro-batch becomes a :class:`PendingBatch` that counts its outstanding deliveries (decisions
and DLQ records). Batches complete out of the scorer's sight, in librdkafka's delivery
callbacks; :meth:`CommitTracker.commit_ready` commits the offsets of the completed batches at the
FRONT of the queue only, so an offset is never committed while an earlier record is in flight.
While batch *k* waits for its acks, the scorer is already decoding batch *k+1*.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from schemas.errors import DeliveryError

log = logging.getLogger(__name__)


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


# Commit errors that say this member is no longer (or not yet again) in the group: retrying at
# once cannot succeed and, in a tight loop, made librdkafka restart its rejoin over and over
# (issue 12: 3,614 UNKNOWN_MEMBER_ID warnings a minute, 8 member ids from one process).
FENCED_COMMIT_ERRORS = frozenset(
    {
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError.STALE_MEMBER_EPOCH,
        KafkaError.FENCED_MEMBER_EPOCH,
    }
)
FENCED_RETRY_S = 1.0
# Asynchronous commits at most this often: one per batch (every 3-5 ms at 10k tx/s) loaded the
# broker on a 2-core machine; a crash repeats at most this much more of the tail. Shutdown and
# rebalance commit synchronously, at once.
COMMIT_INTERVAL_S = 0.1


class CommitTracker:
    """Commits consumer offsets strictly behind the broker's acknowledgements.

    Acknowledged offsets stay in ``_acked`` until the group coordinator confirms them (the
    consumer's ``on_commit`` callback, wired to :meth:`on_commit`). A commit that fails, as an
    asynchronous commit racing a rebalance does, is retried on the next call instead of being
    lost: otherwise a partition that receives no more messages would keep a stale committed
    offset (and a growing lag) forever. A commit refused because the member was fenced or
    expired is retried no sooner than ``FENCED_RETRY_S`` later, and only for partitions still
    assigned: the partitions of a lost assignment are forgotten (:meth:`forget`).
    """

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        on_complete: Callable[[PendingBatch], None] = lambda batch: None,
        commit_interval_s: float = COMMIT_INTERVAL_S,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._on_complete = on_complete
        self._pending: deque[PendingBatch] = deque()
        self._acked: dict[tuple[str, int], int] = {}  # acknowledged, commit not yet confirmed
        self._commit_in_flight = False
        self._retry_at = 0.0  # after a fenced commit, no retry before this (monotonic)
        self._commit_interval_s = commit_interval_s
        self._next_commit_at = 0.0  # no asynchronous commit before this (monotonic)

    def __len__(self) -> int:
        """Batches awaiting acknowledgement, plus one if acknowledged offsets await a commit."""
        return len(self._pending) + (1 if self._acked else 0)

    def in_flight(self) -> int:
        """Records produced and not yet acknowledged (or refused)."""
        return sum(batch.outstanding for batch in self._pending)

    def add(self, batch: PendingBatch) -> None:
        self._pending.append(batch)

    def commit_ready(self, asynchronous: bool = True) -> int:
        """Serve delivery callbacks, then commit the completed batches at the queue's front.

        Returns how many batches completed. Raises :class:`DeliveryError` if the broker
        refused a record: the completed batches before it are committed, nothing of that batch
        or later ever is (the failed batch stays at the front, so every later call, including
        :meth:`drain` on shutdown or rebalance, raises again instead of committing past it).
        """
        self._producer.poll(0)
        done = 0
        while self._pending and self._pending[0].outstanding == 0:
            batch = self._pending[0]
            if batch.failures:
                self._commit(asynchronous)
                raise DeliveryError(
                    f"{len(batch.failures)} record(s) not acknowledged, e.g. {batch.failures[0]}"
                )
            self._pending.popleft()
            self._acked.update(batch.next_offsets)
            self._on_complete(batch)
            done += 1
        self._commit(asynchronous)
        return done

    def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for every outstanding delivery, then commit synchronously (rebalance, shutdown)."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} record(s) still unacknowledged after {timeout_s} s")
        self.commit_ready(asynchronous=False)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Never commit for ``partitions`` again (revoked or lost: this member no longer owns them).

        Their acknowledged offsets are dropped, and so are their offsets in batches still in
        flight; those batches still complete (and count their decisions) when acked. Nothing is
        lost: the partitions' next owner resumes from their last committed offset.
        """
        keys = {(tp.topic, tp.partition) for tp in partitions}
        for key in keys:
            self._acked.pop(key, None)
        for batch in self._pending:
            for key in keys & batch.next_offsets.keys():
                del batch.next_offsets[key]

    def uncommitted(self) -> dict[tuple[str, int], int]:
        """Per partition, the offset a full commit would have stored (acked or still in flight).

        What a shutdown leaves behind: the next owner of each partition re-reads from its last
        committed offset up to (excluding) this one.
        """
        offsets = dict(self._acked)
        for batch in self._pending:
            for key, offset in batch.next_offsets.items():
                offsets[key] = max(offset, offsets.get(key, -1))
        return offsets

    def on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The consumer's ``on_commit`` callback: forget what the coordinator confirmed."""
        self._commit_in_flight = False
        if error is not None:
            if error.code() in FENCED_COMMIT_ERRORS:
                self._retry_at = time.monotonic() + FENCED_RETRY_S
                log.warning("offset commit refused, member fenced (retry after rejoin): %s", error)
            else:
                log.warning("offset commit failed (will retry): %s", error)
            return
        self._confirm(partitions)

    def _confirm(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            if tp.error is None and self._acked.get(key, -1) <= tp.offset:
                self._acked.pop(key, None)

    def _commit(self, asynchronous: bool) -> None:
        if not self._acked or (asynchronous and self._commit_in_flight):
            return
        if asynchronous:
            now = time.monotonic()
            if now < self._retry_at or now < self._next_commit_at:
                return
            self._next_commit_at = now + self._commit_interval_s
        partitions = [TopicPartition(t, p, off) for (t, p), off in self._acked.items()]
        if asynchronous:
            self._commit_in_flight = True
            self._consumer.commit(offsets=partitions, asynchronous=True)
            return
        try:
            committed = self._consumer.commit(offsets=partitions, asynchronous=False)
        except KafkaException as exc:  # at least once: not committing only means re-scoring
            log.warning("synchronous offset commit failed (offsets kept for retry): %s", exc)
            return
        self._confirm(committed or [])
