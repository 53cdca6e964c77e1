"""A shutdown that ends within a bound, whatever the broker does.

On SIGTERM the scorer finishes the batch in hand, then spends at most its shutdown budget on:
waiting for acknowledgements (``producer.flush``), committing what was acknowledged
(asynchronously, serving the consumer's callbacks until the coordinator confirms), and leaving
the group (``Consumer.close``). ``Consumer.close`` has no timeout in librdkafka and blocks
indefinitely while the group coordinator is unreachable (librdkafka#4519,
confluent-kafka-python#1667): it runs on a daemon thread that is abandoned when the budget is
spent; the process then exits and the group expires the member after its session timeout.

What could not be committed is reported per partition: nothing is lost, the partitions' next
owner re-reads from the last committed offset (at least once).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Producer

from streams.scoring.delivery import CommitTracker

log = logging.getLogger(__name__)

# Shares of the budget: acks until 50 %, commit confirmation until 75 %, close with the rest.
FLUSH_SHARE = 0.5
COMMIT_SHARE = 0.75
MIN_CLOSE_S = 1.0


@dataclass(frozen=True)
class ShutdownReport:
    """How a scorer's shutdown ended; ``clean`` means every acknowledged offset was committed."""

    uncommitted: dict[tuple[str, int], int] = field(default_factory=dict)
    unacknowledged: int = 0
    close_finished: bool = True
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.uncommitted and not self.unacknowledged

    def describe(self) -> str:
        """One line for the log: what is left, per partition (re-read by the next owner)."""
        if self.clean:
            left = "everything acknowledged was committed"
        else:
            parts = ", ".join(
                f"{topic}[{partition}] below {offset}"
                for (topic, partition), offset in sorted(self.uncommitted.items())
            )
            left = (
                f"{self.unacknowledged} record(s) unacknowledged; offsets NOT committed "
                f"(redelivered to the next owner, nothing lost): {parts or 'none'}"
            )
        closed = "left the group" if self.close_finished else "consumer close abandoned"
        return f"shutdown in {self.seconds:.1f} s: {left}; {closed}"


def finish_and_commit(
    consumer: Consumer, producer: Producer, tracker: CommitTracker, budget_s: float
) -> tuple[int, float]:
    """Wait for acks and commit, within the first ``COMMIT_SHARE`` of ``budget_s``.

    Returns ``(records still unacknowledged, monotonic deadline of the whole budget)``. Raises
    :class:`~schemas.errors.DeliveryError` if the broker refused a record (nothing of that batch
    or later is committed). Fetching is paused first, so serving callbacks reads nothing new.
    """
    began = time.monotonic()
    deadline = began + budget_s
    try:
        consumer.pause(consumer.assignment())
    except KafkaException as exc:  # no assignment to pause, or the handle is failing
        log.info("could not pause fetching for shutdown: %s", exc)
    unacked = int(producer.flush(max(0.0, began + budget_s * FLUSH_SHARE - time.monotonic())))
    commit_until = began + budget_s * COMMIT_SHARE
    while True:
        tracker.commit_ready()
        if not tracker.uncommitted() or time.monotonic() >= commit_until:
            break
        consumer.poll(0.05)  # serves on_commit (and rebalance callbacks); fetching is paused
    return unacked, deadline


def close_within(consumer: Consumer, timeout_s: float) -> bool:
    """``consumer.close()`` on a daemon thread, waited for ``timeout_s``; True if it finished."""
    done = threading.Event()

    def close() -> None:
        try:
            consumer.close()
        except KafkaException as exc:
            log.warning("consumer close failed: %s", exc)
        done.set()

    threading.Thread(target=close, name="consumer-close", daemon=True).start()
    finished = done.wait(max(timeout_s, MIN_CLOSE_S))
    if not finished:
        log.warning(
            "consumer close did not finish within %.1f s (broker unreachable?): abandoned; "
            "the group expires this member after its session timeout",
            timeout_s,
        )
    return finished
