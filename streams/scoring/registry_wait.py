"""Riding out a schema registry outage: rewind the batch, pause, retry, lose nothing.

When the registry cannot say which schema a Confluent-framed transaction was written with
(refused, timeout, 5xx), the message is not poison: dead-lettering it would turn a registry blink
into lost decisions. Nothing of the batch has been produced at that point (the lookup comes first
in decode), so :class:`RegistryWait` seeks every partition of the batch back to its first offset
in the batch and pauses the whole assignment for a backoff (0.2 s doubling to 5 s). The loop keeps
calling ``consume()`` meanwhile, so the consumer stays in its group (heartbeats, rebalances,
``max.poll.interval.ms``) and acknowledgements and commits of earlier batches go on; when the
backoff ends the assignment resumes and the same messages come again, in order. The batch is
retried until the registry answers: a long outage shows as lag and in
``sentinel_schema_registry_errors_total``, never as DLQ records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from confluent_kafka import Message, TopicPartition

from schemas.errors import SchemaRegistryUnavailable

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
PAUSED_POLL_S = 0.1  # consume() timeout while paused: serve the group without spinning


class PausableConsumer(Protocol):
    """The consumer calls a rewind needs (confluent_kafka.Consumer has them)."""

    def assignment(self) -> list[TopicPartition]: ...

    def pause(self, partitions: list[TopicPartition], /) -> None: ...

    def resume(self, partitions: list[TopicPartition], /) -> None: ...

    def seek(self, partition: TopicPartition, /) -> None: ...


class RegistryWait:
    """Rewinds and pauses the consumer while the registry is unavailable (scoring thread only)."""

    def __init__(
        self,
        consumer: PausableConsumer,
        on_error: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._on_error = on_error
        self._clock = clock
        self._backoff = FIRST_BACKOFF_S
        self._resume_at: float | None = None
        self._failing_since: float | None = None

    @property
    def paused(self) -> bool:
        return self._resume_at is not None

    def poll_timeout(self, batch_wait_s: float) -> float:
        """The consume() timeout to use: the batch wait, or longer while paused."""
        return PAUSED_POLL_S if self.paused else batch_wait_s

    def rewind(self, messages: Sequence[Message], error: SchemaRegistryUnavailable) -> None:
        """Seek the batch's partitions back to its first offsets and pause for the backoff."""
        first: dict[tuple[str, int], int] = {}
        for message in messages:
            key = (message.topic() or "", message.partition() or 0)
            offset = message.offset() or 0
            if key not in first or offset < first[key]:
                first[key] = offset
        assignment = self._consumer.assignment()
        self._consumer.pause(assignment)
        owned = {(tp.topic, tp.partition) for tp in assignment}
        for (topic, partition), offset in first.items():
            if (topic, partition) in owned:  # a partition lost since is re-read by its new owner
                self._consumer.seek(TopicPartition(topic, partition, offset))
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
            log.warning("schema registry unavailable, pausing and retrying the batch: %s", error)
        else:
            log.debug("schema registry still unavailable: %s", error)
        self._resume_at = now + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
        self._on_error()

    def tick(self) -> None:
        """Resume the assignment once the backoff is over (call every loop turn)."""
        if self._resume_at is not None and self._clock() >= self._resume_at:
            self._resume_at = None
            self._consumer.resume(self._consumer.assignment())

    def succeeded(self) -> None:
        """The registry answered for a batch: reset the backoff."""
        if self._failing_since is not None:
            log.warning(
                "schema registry answers again after %.1f s; scoring resumed",
                self._clock() - self._failing_since,
            )
            self._failing_since = None
            self._backoff = FIRST_BACKOFF_S
