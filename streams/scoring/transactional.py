"""Exactly-once delivery: a batch's decisions, DLQ records and consumed offsets commit together.

The transaction lifecycle of librdkafka's transactional producer (KIP-98, KIP-447):

* ``init_transactions`` once, before joining the group. The ``transactional.id`` is stable per
  instance (:func:`transactional_id`: group id + scorer id), so a restarted instance bumps the
  id's epoch: its zombie (the process it replaces, killed or cut off) is fenced and the zombie's
  open transaction is aborted at once instead of holding back ``read_committed`` readers until
  the transaction timeout.
* per micro-batch: :meth:`Transactions.begin` before the first produce, decisions and DLQ
  records produced as usual, then :meth:`Transactions.commit`: ``send_offsets_to_transaction``
  (the next offsets with the consumer's group metadata, so the coordinator refuses them from a
  member of an older generation: KIP-447 makes one producer per instance safe across
  rebalances) and ``commit_transaction``.
* an abortable error: ``abort_transaction``, then the consumer is rewound (``seek``) to the first
  offset the transaction consumed on each partition, which is the partition's committed offset:
  the aborted records are never seen by ``read_committed`` readers and are decided again.
  A fatal error (the producer was fenced by a newer instance with the same id) raises
  :class:`TransactionFenced`: this process must stop, it is the zombie.
* a stuck producer: librdkafka can stop reaching the coordinators after a broker restart.
  ``send_offsets_to_transaction`` waits for the group coordinator without a timeout and can
  wait forever (its coordinator lookup, failed with e.g. COORDINATOR_LOAD_IN_PROGRESS, is
  retried only on a broker state change that a single healthy broker never makes again:
  librdkafka issues #5456, #5511), and AddOffsetsToTxn can sit in the queue of a coordinator
  connection that never comes back, timing out every 10 s, and so can an abort (all three
  seen in the broker-restart test: nothing more was ever decided). send_offsets runs on a
  helper thread. A commit or abort still hanging, or still failing, ``HUNG_AFTER_S`` after it
  began means the producer is stuck: it is abandoned and a new one with the same
  ``transactional.id`` started, whose ``init_transactions`` fences the old one and completes
  the transaction it left open (an abort, or the commit if ``EndTxn`` had reached the
  coordinator); the consumer is rewound to the offsets the group then holds.

Nothing here commits consumer offsets directly: with exactly-once they travel only inside the
transaction (the :class:`~streams.scoring.delivery.CommitTracker`'s commit path is not used).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from schemas.errors import DeliveryError, SentinelError
from streams.scoring.delivery import PendingBatch
from streams.scoring.shutdown import COMMIT_SHARE

log = logging.getLogger(__name__)

ProcessingGuarantee = Literal["at-least-once", "exactly-once"]

# Shorter than librdkafka's 60 s default: a killed instance that never comes back holds an open
# transaction, and read_committed readers of every decisions partition it wrote to wait for the
# coordinator to abort it (timeout + the broker's 10 s abort-check interval). Our transactions
# last milliseconds; librdkafka lowers message.timeout.ms to this too.
TRANSACTION_TIMEOUT_MS: Final[int] = 10_000
# A commit is synchronous: AddOffsetsToTxn + TxnOffsetCommit + EndTxn, 10-50 ms on the local
# broker (bench/RESULTS.md), mostly waiting. Caught up, the scorer commits after every poll
# (latency). With a backlog (full batches) one transaction spans polls until it has been open
# COMMIT_EVERY times as long as the last commit took (commits cost at most ~1/(1+COMMIT_EVERY)
# of a drain), within MIN/MAX_TRANSACTION_S.
COMMIT_EVERY: Final[float] = 9.0
MIN_TRANSACTION_S: Final[float] = 0.1
MAX_TRANSACTION_S: Final[float] = 1.0
# librdkafka retries AddPartitionsToTxn/AddOffsetsToTxn after CONCURRENT_TRANSACTIONS (the
# previous commit's markers still being written) with retry.backoff.ms, 100 ms by default: the
# next transaction then waits ~100 ms. The Java producer retries these after 20 ms.
RETRY_BACKOFF_MS: Final[int] = 20
# ...and backs off exponentially up to retry.backoff.max.ms (1 s by default): back-to-back
# transactions of 20 records on the local broker took p99 100-157 ms with it, 54-83 ms capped at
# 50 ms (/tmp/txlat.py, 150 transactions each, interleaved).
RETRY_BACKOFF_MAX_MS: Final[int] = 50
# Each blocking call waits at most this long before it is resumed (librdkafka lets a timed-out
# commit or abort be called again), so a stop request is noticed during a broker outage.
CALL_SLICE_S: Final[float] = 1.0
# An abort during a broker outage waits for the coordinator this long before the scorer stops.
ABORT_TIMEOUT_S: Final[float] = 120.0
# Abort -> rewind -> decide again, this many times in a row without one commit: a record the
# broker refuses every time (too large, no such topic) must stop the scorer, not loop forever.
MAX_CONSECUTIVE_ABORTS: Final[int] = 10
# A retriable call refused at once (another transactional call in progress) waits this long.
RETRY_PAUSE_S: Final[float] = 0.05
# A commit or abort still hanging, or failing, this long after it began: the producer is stuck (see
# the module doc). A healthy call returns within its request timeout (seen: 10 s during an
# outage); by twice the transaction timeout the coordinator has aborted the transaction anyway.
HUNG_AFTER_S: Final[float] = 2 * TRANSACTION_TIMEOUT_MS / 1000
# Reading the group's committed offsets once the broker answers again.
COMMITTED_TIMEOUT_S: Final[float] = 30.0


class TransactionFenced(SentinelError):
    """A newer producer with this instance's transactional id exists: this process is a zombie."""


class _ProducerStuck(Exception):
    """A commit hangs or keeps failing long after it began (see the module doc)."""


class TransactionalProducer(Protocol):
    """The transactional part of ``confluent_kafka.Producer`` used here."""

    def init_transactions(self, timeout: float) -> None: ...
    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float
    ) -> None: ...
    def commit_transaction(self, timeout: float) -> None: ...
    def abort_transaction(self, timeout: float) -> None: ...


P = TypeVar("P", bound=TransactionalProducer)


class GroupConsumer(Protocol):
    """The consumer calls a transaction needs: group metadata, and a rewind after an abort."""

    def consumer_group_metadata(self) -> Any: ...
    def assignment(self) -> list[TopicPartition]: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def committed(
        self, partitions: list[TopicPartition], timeout: float
    ) -> list[TopicPartition]: ...


def transactional_id(group_id: str, scorer_id: str) -> str:
    """The instance's stable ``transactional.id``: the same group and scorer id fence a zombie."""
    return f"{group_id}.{scorer_id}"


def transactional_settings(producer_settings: dict[str, Any], txn_id: str) -> dict[str, Any]:
    """The scorer's producer settings made transactional (idempotence stays on, acks=all)."""
    return {
        **producer_settings,
        "transactional.id": txn_id,
        "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        "retry.backoff.ms": RETRY_BACKOFF_MS,
        "retry.backoff.max.ms": RETRY_BACKOFF_MAX_MS,
    }


class Transactions(Generic[P]):
    """One open transaction at a time over the scorer's producer and consumer.

    Not thread-safe: every call runs on the scoring thread (rebalance callbacks included, which
    librdkafka serves inside ``consume``). Calls that talk to the coordinator block up to their
    ``timeout_s``. :meth:`commit` and :meth:`abort` raise :class:`TransactionFenced` on a fatal
    error and :class:`~schemas.errors.DeliveryError` after ``MAX_CONSECUTIVE_ABORTS``.
    """

    def __init__(
        self,
        new_producer: Callable[[], P],
        consumer: GroupConsumer,
        on_committed: Callable[[PendingBatch], None] = lambda batch: None,
        give_up: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._new_producer = new_producer
        self.producer = new_producer()  # replaced when it hangs: read it, never keep it
        self._abandoned: list[P] = []  # hung ones, kept from destruction
        self._consumer = consumer
        self._on_committed = on_committed
        self._last_commit_s = 0.0
        self._give_up = give_up  # True once retrying must stop (the shutdown budget is spent)
        self._clock = clock
        self._open = False
        self._opened_at = 0.0
        self._batches: list[PendingBatch] = []
        self._next_offsets: dict[tuple[str, int], int] = {}
        self._first_offsets: dict[tuple[str, int], int] = {}  # where an abort rewinds to
        self._aborts_in_a_row = 0
        self.committed = 0  # transactions committed (for tests and logs)
        self.aborted = 0

    def __len__(self) -> int:
        """Batches in the open transaction."""
        return len(self._batches)

    def start(self, timeout_s: float) -> None:
        """``init_transactions``: fence this id's zombie; raises TransactionFenced if fatal."""
        try:
            self._retry(self.producer.init_transactions, self._clock() + timeout_s)
        except KafkaException as exc:
            raise SentinelError(f"cannot initialise transactions: {_error(exc)}") from exc

    def begin(self, first_offsets: dict[tuple[str, int], int]) -> None:
        """Open a transaction unless one is; call before producing a batch's records.

        ``first_offsets``: per partition, the batch's first consumed offset (an abort rewinds
        each partition to the first offset of the open transaction).
        """
        if not self._open:
            self._retry(lambda _timeout: self.producer.begin_transaction(), self._clock())
            self._open = True
            self._opened_at = self._clock()
        for key, offset in first_offsets.items():
            self._first_offsets.setdefault(key, offset)

    def add(self, batch: PendingBatch) -> None:
        """A batch whose records were handed to the producer inside the open transaction."""
        self._batches.append(batch)
        self._next_offsets.update(batch.next_offsets)

    def in_flight(self) -> int:
        """Records produced in the open transaction and not yet acknowledged."""
        return sum(batch.outstanding for batch in self._batches)

    def uncommitted(self) -> dict[tuple[str, int], int]:
        """Per partition, the offset the open transaction would commit."""
        return dict(self._next_offsets)

    def due(self, caught_up: bool) -> bool:
        """Commit now? When the consumer is caught up (latency), or the transaction has been
        open long enough that its commit is a small share of the time (throughput)."""
        if not self._open:
            return False
        span = min(MAX_TRANSACTION_S, max(MIN_TRANSACTION_S, COMMIT_EVERY * self._last_commit_s))
        return caught_up or self._clock() - self._opened_at >= span

    def commit(self, timeout_s: float | None = None) -> bool:
        """Offsets into the transaction, then commit it; True if committed (or nothing open).

        An abortable error aborts and rewinds (False). A retriable one (a timeout: the broker or
        the coordinator is away) is resumed until the call finishes, or until ``timeout_s`` (the
        shutdown's share) or the give-up signal: librdkafka refuses an abort while a commit is
        still in progress, so such a transaction is left to the coordinator, which aborts it
        after ``TRANSACTION_TIMEOUT_MS`` or when this instance's successor starts (False).
        """
        if not self._open:
            return True
        began = self._clock()
        deadline = began + timeout_s if timeout_s is not None else float("inf")
        stuck_at = began + HUNG_AFTER_S
        try:
            if self._next_offsets:
                self._retry(self._send_offsets, deadline, stuck_at)
            self._retry(self.producer.commit_transaction, deadline, stuck_at)
        except _ProducerStuck as exc:
            self._start_over(exc, self._drop_as_aborted(), rewind=True)
            return False
        except KafkaException as exc:
            if _in_progress(exc):
                log.error(
                    "transaction left to the coordinator, its commit still in progress: %s",
                    _error(exc),
                )
                self._reset()
                self.aborted += 1
                return False
            log.warning("transaction not committed, aborting it: %s", _error(exc))
            self.abort()
            return False
        now = time.time()
        for batch in self._batches:
            batch.acked_at = now  # read_committed readers see the decisions from now on
            self._on_committed(batch)
        self.committed += 1
        self._last_commit_s = self._clock() - began
        self._aborts_in_a_row = 0
        self._reset()
        return True

    def abort(self, timeout_s: float = ABORT_TIMEOUT_S, rewind: bool = True) -> None:
        """Abort the open transaction and (``rewind``) seek its still-assigned partitions back.

        The abort is retried while retriable within ``timeout_s``; if it still has not finished,
        the coordinator aborts the transaction after ``TRANSACTION_TIMEOUT_MS`` anyway, or at
        once when this instance's successor calls ``init_transactions``. With ``rewind``, an
        abort still failing after ``HUNG_AFTER_S`` replaces the stuck producer (module doc).
        """
        if not self._open:
            return
        rewind_to = self._drop_as_aborted()
        began = self._clock()
        try:
            # a failing scorer (no rewind) stops within timeout_s instead of starting over
            stuck_at = began + HUNG_AFTER_S if rewind else float("inf")
            self._retry(self.producer.abort_transaction, began + timeout_s, stuck_at)
            if rewind:
                self._rewind(rewind_to)
        except _ProducerStuck as exc:
            self._start_over(exc, rewind_to, rewind)
        except KafkaException as exc:
            log.error("transaction abort did not finish: %s", _error(exc))
            raise SentinelError(f"transaction abort failed: {_error(exc)}") from exc
        if self._aborts_in_a_row >= MAX_CONSECUTIVE_ABORTS:
            raise DeliveryError(
                f"{self._aborts_in_a_row} transactions aborted in a row without a commit; "
                "stopping (nothing of them is visible to read_committed readers)"
            )

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions lost without a revoke: the open transaction holds offsets of a generation
        this member left, and decisions their new owner will make again: abort it, rewind the
        rest."""
        if self._open:
            lost = {(tp.topic, tp.partition) for tp in partitions}
            log.warning("aborting the open transaction: partitions %s were lost", sorted(lost))
            self._first_offsets = {k: v for k, v in self._first_offsets.items() if k not in lost}
            self.abort()

    def _send_offsets(self, timeout_s: float) -> None:
        """``send_offsets_to_transaction`` on a helper thread; raises _ProducerStuck past
        ``timeout_s + HUNG_AFTER_S`` (the call's own timeout does not bound it)."""
        positions = [TopicPartition(t, p, o) for (t, p), o in self._next_offsets.items()]
        metadata = self._consumer.consumer_group_metadata()
        outcome: list[BaseException | None] = []

        def call() -> None:
            try:
                self.producer.send_offsets_to_transaction(positions, metadata, timeout_s)
                outcome.append(None)
            except BaseException as exc:  # handed to the scoring thread below
                outcome.append(exc)

        helper = threading.Thread(target=call, name="send-offsets", daemon=True)
        helper.start()
        helper.join(timeout_s + HUNG_AFTER_S)
        if not outcome:
            raise _ProducerStuck(
                f"send_offsets_to_transaction has not returned {timeout_s + HUNG_AFTER_S:.0f} s "
                "after it was called (librdkafka's group coordinator lookup hangs)"
            )
        if outcome[0] is not None:
            raise outcome[0]

    def _start_over(
        self, stuck: _ProducerStuck, first_offsets: dict[tuple[str, int], int], rewind: bool
    ) -> None:
        """A stuck producer: a new one in its place; (``rewind``) the consumer to where the
        group stands once the new producer has completed the old transaction."""
        log.error("%s; a new transactional producer takes its place", stuck)
        self._replace_producer()
        if rewind:
            self._rewind(self._committed_or(first_offsets))

    def _replace_producer(self) -> None:
        """A new producer with the same transactional id; its ``init_transactions`` fences the
        stuck one and completes the transaction that one left open. Retried while the broker is
        away, until the shutdown budget is spent."""
        self._abandoned.append(self.producer)
        self.producer = self._new_producer()
        try:
            self._retry(self.producer.init_transactions, float("inf"))
        except KafkaException as exc:
            raise SentinelError(
                f"cannot initialise the replacement transactional producer: {_error(exc)}"
            ) from exc

    def _committed_or(
        self, first_offsets: dict[tuple[str, int], int]
    ) -> dict[tuple[str, int], int]:
        """Where the group stands on these partitions now that their transaction is complete:
        its committed offset (the first offset again if it was aborted, the next one if it was
        committed), or, with none committed yet, the transaction's first offset."""
        partitions = [TopicPartition(t, p) for t, p in first_offsets]
        try:
            committed = self._consumer.committed(partitions, timeout=COMMITTED_TIMEOUT_S)
        except KafkaException as exc:
            raise SentinelError(f"cannot read the committed offsets: {_error(exc)}") from exc
        return {
            (tp.topic, tp.partition): tp.offset
            if tp.offset >= 0
            else first_offsets[(tp.topic, tp.partition)]
            for tp in committed
        }

    def _rewind(self, first_offsets: dict[tuple[str, int], int]) -> None:
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        for (topic, partition), offset in sorted(first_offsets.items()):
            if (topic, partition) in assigned:
                self._consumer.seek(TopicPartition(topic, partition, offset))
        log.warning(
            "rewound %s to the last committed offsets",
            ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(first_offsets.items())) or "nothing",
        )

    def _drop_as_aborted(self) -> dict[tuple[str, int], int]:
        """Close the open transaction's books as an abort; returns where it began (rewind)."""
        first_offsets = dict(self._first_offsets)
        self._reset()
        self.aborted += 1
        self._aborts_in_a_row += 1
        return first_offsets

    def _reset(self) -> None:
        self._open = False
        self._batches = []
        self._next_offsets = {}
        self._first_offsets = {}

    def _retry(
        self, call: Callable[[float], None], deadline: float, stuck_at: float = float("inf")
    ) -> None:
        """``call(timeout)`` until it succeeds; retriable errors again until ``deadline``.

        Raises :class:`TransactionFenced` on a fatal error, _ProducerStuck on a retriable one
        after ``stuck_at``, KafkaException otherwise.
        """
        while True:
            called = self._clock()
            try:
                call(min(CALL_SLICE_S, max(0.1, deadline - self._clock())))
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is not None and error.fatal():
                    raise TransactionFenced(
                        f"transactional producer fenced or failed fatally ({_error(exc)}): "
                        "another instance with the same group and scorer id took over; "
                        "this one stops without committing"
                    ) from exc
                if (
                    error is None
                    or not error.retriable()
                    or error.txn_requires_abort()
                    or self._clock() >= deadline
                    or self._give_up()
                ):
                    raise
                if self._clock() >= stuck_at:
                    raise _ProducerStuck(
                        f"still failing {HUNG_AFTER_S:.0f} s after the call began: {_error(exc)}"
                    ) from exc
                log.info("transaction call failed, retrying: %s", _error(exc))
                if self._clock() - called < RETRY_PAUSE_S:  # refused at once: do not spin
                    time.sleep(RETRY_PAUSE_S)


def finish_transaction(
    consumer: Consumer, transactions: Transactions[Producer], telemetry: Producer, budget_s: float
) -> tuple[int, dict[tuple[str, int], int], float]:
    """Shutdown with exactly-once: commit the open transaction within ``COMMIT_SHARE`` of the
    budget (fetching paused first), then flush the telemetry producer (drift snapshots).

    Returns ``(records not committed, offsets not committed, monotonic deadline of the whole
    budget)``; a transaction that cannot commit is aborted, and its partitions' next owner
    decides its records again from the committed offsets.
    """
    began = time.monotonic()
    try:
        consumer.pause(consumer.assignment())
    except KafkaException as exc:  # no assignment to pause, or the handle is failing
        log.info("could not pause fetching for shutdown: %s", exc)
    in_flight, offsets = transactions.in_flight(), transactions.uncommitted()
    committed = transactions.commit(budget_s * COMMIT_SHARE)
    telemetry.flush(max(0.0, began + budget_s * COMMIT_SHARE - time.monotonic()))
    return (0, {}, began + budget_s) if committed else (in_flight, offsets, began + budget_s)


def _in_progress(exc: KafkaException) -> bool:
    """A retriable error that needs no abort: the call is still running inside librdkafka."""
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    return error is not None and error.retriable() and not error.txn_requires_abort()


def _error(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else exc
    return str(error.str() if isinstance(error, KafkaError) else error)
