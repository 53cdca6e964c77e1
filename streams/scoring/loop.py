"""The scoring loop: one consumer-group member turning transactions into decisions.

Per micro-batch, top to bottom::

    poll -> decode + validate -> (DLQ the poison) -> serving state -> cache -> route -> score
         -> encode decisions -> produce -> commit what the broker acknowledged

Everything per batch runs once per batch (C decode, one ONNX call per variant, C encode); the
only per-message Python work is reading the message out of librdkafka and handing the encoded
decision back to it. Delivery is at least once by default: offsets are committed by
:class:`streams.scoring.delivery.CommitTracker` strictly behind the broker's acknowledgements.
With ``processing_guarantee="exactly-once"`` decisions, DLQ records and offsets commit in one
Kafka transaction instead (:mod:`streams.scoring.transactional`); drift snapshots, telemetry,
go through a second, plain producer, outside the transactions.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

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

from schemas.avro import load_schema
from schemas.decision_codec import DECISION_OUTCOMES, VARIANTS, encode_decisions
from schemas.drift_codec import encode_snapshot
from schemas.errors import (
    ConfigError,
    DlqLimitExceeded,
    PoisonMessage,
    SchemaRegistryUnavailable,
    SentinelError,
)
from schemas.event_time import EventTimeWindow
from schemas.transaction_codec import decode_transactions
from streams.config import DLQ_MAX_MESSAGE_BYTES, KafkaSettings, TopicNames
from streams.drift.monitor import DriftConfig, DriftMonitor
from streams.health import Progress
from streams.metrics import ScorerMetrics
from streams.registry import (
    OutputFormat,
    OutputSchemaIds,
    RegistrySettings,
    SchemaRegistry,
    subject_of,
)
from streams.scoring import _messages
from streams.scoring.batch import ScoredBatch, Serving, score_batch
from streams.scoring.cache import DecisionCache
from streams.scoring.delivery import CommitTracker, PendingBatch
from streams.scoring.digest import feature_digests
from streams.scoring.dlq import DlqGuard, DlqLimit, dlq_headers
from streams.scoring.group import GroupSettings
from streams.scoring.registry_wait import RegistryWait
from streams.scoring.shutdown import ShutdownReport, close_within, finish_and_commit
from streams.scoring.transactional import (
    ProcessingGuarantee,
    Transactions,
    finish_transaction,
    transactional_id,
    transactional_settings,
)

log = logging.getLogger(__name__)


STOP_PRODUCE_SHARE = 0.25
MIN_SHUTDOWN_S = 2.0
BROKER_SILENT_US = 10_000_000  # no bytes from any broker for 10 s: unreachable (health check)


class _ShutdownDuringProduce(SentinelError):
    """The local produce queue stayed full after stop(): the batch is abandoned, not committed."""


@dataclass(frozen=True)
class ScorerConfig:
    """Everything one scorer process needs; validated on construction."""

    kafka: KafkaSettings
    topics: TopicNames
    scorer_id: str
    group_id: str = "sentinel-scorer"
    max_batch: int = 2_000
    max_wait_s: float = 0.001
    cache_capacity: int = 10_000
    cache_ttl_s: float = 2.0
    max_message_bytes: int = 65_536
    event_time_window: EventTimeWindow = field(default_factory=EventTimeWindow)
    dlq_limit: DlqLimit = field(default_factory=DlqLimit)
    drift: DriftConfig | None = field(default_factory=DriftConfig)
    lag_interval_s: float = 5.0
    group: GroupSettings = field(default_factory=GroupSettings)
    # SIGTERM: acks + commit + leaving the group, all within this (see scoring/shutdown.py)
    shutdown_timeout_s: float = 20.0
    processing_guarantee: ProcessingGuarantee = "at-least-once"
    # Confluent-framed input is decoded only with a registry; ``confluent`` output needs one.
    schema_registry: RegistrySettings | None = None
    output_format: OutputFormat = "single-object"

    def __post_init__(self) -> None:
        if self.processing_guarantee not in ("at-least-once", "exactly-once"):
            raise ConfigError(
                "processing guarantee must be at-least-once or exactly-once, "
                f"got {self.processing_guarantee!r}"
            )
        if not 1 <= self.shutdown_timeout_s <= 600:
            raise ConfigError(f"shutdown timeout must be 1..600 s, got {self.shutdown_timeout_s}")
        if self.max_batch < 1:
            raise ConfigError(f"max batch must be >= 1, got {self.max_batch}")
        if not 0 <= self.max_wait_s <= 10:
            raise ConfigError(f"max wait must be within 0..10 s, got {self.max_wait_s}")
        if not self.scorer_id:
            raise ConfigError("scorer id must not be empty")
        if self.output_format == "confluent" and self.schema_registry is None:
            raise ConfigError("output format 'confluent' needs a schema registry URL")

    def consumer_settings(self) -> dict[str, Any]:
        """The consumer's librdkafka settings (the bench's pass-through relay uses them too).

        ``--kafka-config`` may replace the tuning defaults, never the guarantees."""
        return self.kafka.client_config(
            {
                "group.id": self.group_id,
                "enable.auto.commit": False,
                # librdkafka's default, stated: never score a transaction its producer aborted
                "isolation.level": "read_committed",
                # broker reachability for the health check (served inside consume())
                "statistics.interval.ms": 3_000,
                **self.group.client_config(),
            },
            {  # tuning defaults
                "client.id": self.scorer_id,
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": 8 * 1024 * 1024,
                # Pre-fetch up to 64 MiB, not 100k messages: librdkafka stops fetching for
                # fetch.queue.backoff.ms (1 s) once the queue holds queued.min.messages, and a
                # group consumer counts its whole queue. At the default 100k (under a second of
                # a backlog drain) the queue ran dry: in a 1-worker drain 20-77% of the polls came
                # back empty after their 1 ms wait; with this, none did (issue 16's note).
                "queued.min.messages": 1_000_000,
                "queued.max.messages.kbytes": 64 * 1024,
            },
        )

    def producer_settings(self) -> dict[str, Any]:
        """The producer's librdkafka settings: idempotent, acks from all in-sync replicas.

        ``--kafka-config`` may replace the tuning defaults, never the guarantees."""
        return self.kafka.client_config(
            {
                "acks": "all",
                "enable.idempotence": True,
                # A DLQ record carries the original message (up to the transactions topic's
                # max.message.bytes) plus error headers.
                "message.max.bytes": DLQ_MAX_MESSAGE_BYTES,
            },
            {  # tuning defaults
                "client.id": self.scorer_id,
                "linger.ms": 2,
                "compression.type": "lz4",
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 1_000_000,
            },
        )


class ServingSource(Protocol):
    """Where the scorer reads the serving state, once per batch (the control plane)."""

    @property
    def state(self) -> Serving: ...

    def check(self) -> None:
        """Raise if the source can no longer follow the control log (never blocks)."""


class Scorer:
    """A consumer-group member scoring ``topics.transactions`` into ``topics.decisions``.

    :meth:`run` blocks until :meth:`stop` is called (from a signal handler or another thread),
    then finishes the batch in hand, waits for acknowledgements, commits and leaves the group,
    all within ``config.shutdown_timeout_s``, and returns a :class:`ShutdownReport` saying what
    (if anything) was left uncommitted. With ``confluent`` output the constructor registers the
    decision and drift schemas (raising ConfigError when the registry refuses them as
    incompatible, SchemaRegistryUnavailable when it does not answer). A registry outage while
    running pauses and retries (``registry_wait``). It raises
    :class:`~schemas.errors.DlqLimitExceeded`
    when too much input is poison and :class:`~schemas.errors.DeliveryError` when the broker
    refuses a record; in both cases
    nothing unacknowledged was committed.
    """

    def __init__(
        self,
        config: ScorerConfig,
        serving: ServingSource,
        metrics: ScorerMetrics,
        progress: Progress | None = None,
    ):
        self.config = config
        self._serving = serving
        self._metrics = metrics
        self._registry = SchemaRegistry(config.schema_registry) if config.schema_registry else None
        self._output_ids: OutputSchemaIds | None = None
        if self._registry is not None and config.output_format == "confluent":
            self._output_ids = register_outputs(self._registry, config.topics)
        self.progress = progress or Progress()
        self._stopping = threading.Event()
        self._closing = False
        self._stop_asked_at = 0.0
        # offsets acked or in flight on partitions lost since (the shutdown report names them)
        self._lost_uncommitted: dict[tuple[str, int], int] = {}
        self._cache = DecisionCache(config.cache_capacity, config.cache_ttl_s)
        self._dlq_guard = DlqGuard(config.dlq_limit)
        self.decision_counts: Counter[tuple[str, str, str]] = Counter()
        self._consumer = Consumer(
            {**config.consumer_settings(), "on_commit": self._on_commit, "stats_cb": self._on_stats}
        )
        self._transactions: Transactions[Producer] | None = None
        self._telemetry = Producer(config.producer_settings())
        if config.processing_guarantee == "exactly-once":
            settings = transactional_settings(
                config.producer_settings(), transactional_id(config.group_id, config.scorer_id)
            )
            self._transactions = Transactions(
                lambda: Producer(settings),
                self._consumer,
                self._on_batch_acked,
                give_up=self._out_of_time,
            )
        self._tracker = CommitTracker(self._consumer, self._producer, self._on_batch_acked)
        self._registry_wait = RegistryWait(self._consumer, metrics.schema_registry_errors.inc)
        self._drift: dict[str, DriftMonitor] = {}  # by variant
        self._next_lag_check = 0.0
        self._failed = False

    @property
    def _producer(self) -> Producer:
        """Decisions and DLQ records go here: with exactly-once the current transactional
        producer (replaced if it hangs), else the one producer that also carries telemetry."""
        return self._telemetry if self._transactions is None else self._transactions.producer

    def stop(self) -> None:
        """Ask :meth:`run` to finish the current batch and shut down cleanly (thread-safe)."""
        if not self._stopping.is_set():
            self._stop_asked_at = time.monotonic()
        self._stopping.set()

    def stats(self) -> dict[str, int]:
        """Decisions acknowledged so far by ``variant/version/outcome`` (for heartbeats)."""
        # dict(Counter) is one C-level copy under the GIL: safe against the scoring thread.
        counts = dict(self.decision_counts)
        return {"/".join(key): count for key, count in counts.items()}

    def run(self) -> ShutdownReport:
        cfg = self.config
        if self._transactions is not None:  # before joining: fences this id's zombie first
            self._transactions.start(cfg.shutdown_timeout_s)
        # Everything built so far (modules, onnxruntime, models, the replayed control log: ~40k
        # objects) lives as long as the process. A full collection walks it all (20-100 ms
        # measured here, a latency spike each time); frozen, collections only see what the
        # loop allocates.
        gc.collect()
        gc.freeze()
        self._consumer.subscribe(
            [cfg.topics.transactions],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        progress = self.progress
        try:
            while not self._stopping.is_set():
                progress.loop_turned()
                self._registry_wait.tick()
                began = time.perf_counter()
                wait_s = self._registry_wait.poll_timeout(cfg.max_wait_s)
                messages = self._consumer.consume(cfg.max_batch, timeout=wait_s)
                if messages:  # idle polls are waiting, not work: keep them out of the profile
                    self._metrics.stage["poll"].inc(time.perf_counter() - began)
                    self._process(messages)
                if self._transactions is not None:
                    if self._transactions.due(caught_up=len(messages) < cfg.max_batch):
                        began = time.perf_counter()
                        self._transactions.commit()
                        self._metrics.stage["commit"].inc(time.perf_counter() - began)
                elif len(self._tracker):
                    began = time.perf_counter()
                    self._tracker.commit_ready()
                    self._metrics.stage["commit"].inc(time.perf_counter() - began)
                self._housekeeping()
        except _ShutdownDuringProduce:
            log.warning("stopped while the produce queue was full: that batch is not committed")
        except DlqLimitExceeded:
            # The tripping batch was never produced; the good batches before it may commit.
            self._failed = True
            self._shutdown()
            raise
        except BaseException:
            # Nothing unacknowledged may be committed: close() must not drain (and commit) again.
            self._failed = True
            self._closing = True
            self._abandon_transaction()
            close_within(self._consumer, cfg.shutdown_timeout_s / 2)
            raise
        try:
            self._publish_drift(final=True)
        except _ShutdownDuringProduce:
            log.warning("final drift snapshot not published: the produce queue is full")
        return self._shutdown()

    def _shutdown(self) -> ShutdownReport:
        """Acks, commit and leave the group within ``shutdown_timeout_s``; never blocks longer."""
        began = time.monotonic()
        budget = self.config.shutdown_timeout_s
        if self._stop_asked_at:  # the budget counts from stop(), the batch in hand included
            budget = max(MIN_SHUTDOWN_S, budget - (began - self._stop_asked_at))
        aborted: dict[tuple[str, int], int] = {}
        try:
            if self._transactions is None:
                unacked, deadline = finish_and_commit(
                    self._consumer, self._producer, self._tracker, budget
                )
            else:
                unacked, aborted, deadline = finish_transaction(
                    self._consumer, self._transactions, self._telemetry, budget
                )
        except BaseException:
            self._failed = self._closing = True
            self._abandon_transaction()
            close_within(self._consumer, self.config.shutdown_timeout_s / 4)
            raise
        uncommitted = {**self._lost_uncommitted, **self._tracker.uncommitted(), **aborted}
        self._closing = True  # on_revoke during close: already committed what could be
        finished = close_within(self._consumer, deadline - time.monotonic())
        report = ShutdownReport(uncommitted, unacked, finished, time.monotonic() - began)
        (log.info if report.clean else log.error)("%s %s", self.config.scorer_id, report.describe())
        return report

    def _process(self, messages: list[Message]) -> None:
        cfg, metrics, clock = self.config, self._metrics, time.perf_counter
        t0 = clock()  # reading the messages counts as decode
        messages, values, partitions, offsets = read_consumed(messages)
        if not messages:
            return
        n_in = len(messages)
        try:
            batch, poisons = decode_transactions(
                values,
                max_message_bytes=cfg.max_message_bytes,
                event_time_window=cfg.event_time_window,
                now_ms=int(time.time() * 1000),
                registry=self._registry,
            )
        except SchemaRegistryUnavailable as exc:  # not poison: re-read the batch later
            self._registry_wait.rewind(messages, exc)
            return
        if self._registry is not None:
            self._registry_wait.succeeded()
        self._dlq_guard.check(n_in, len(poisons))
        t1 = clock()
        # The serving state is read once per batch and handed to every stage that needs it.
        state = self._serving.state
        digests = feature_digests(batch.features_f64)
        t_digest = clock()
        scored = score_batch(state, self._cache, digests, batch.card_ids, batch.features)
        t2 = clock()
        rows = batch.index
        scored_at_us = int(time.time() * 1_000_000)
        # Finite and within [-max_ahead, max_age + batch time]: decode refused event times
        # outside the window around the clock read just before it.
        latency_ms = (scored_at_us / 1000.0) - batch.event_time_ms.astype(np.float64)
        decisions = encode_decisions(
            transaction_ids=batch.transaction_ids,
            card_ids=batch.card_ids,
            fraud_probability=scored.probability,
            predicted_fraud=scored.probability >= scored.block_threshold,
            decision=scored.outcome,
            block_threshold=scored.block_threshold,
            review_threshold=scored.review_threshold,
            model_version=scored.variant,
            model_versions=scored.model_versions,
            variant=scored.variant,
            cache_hit=scored.cache_hit,
            batch_size=n_in,
            event_time_ms=batch.event_time_ms,
            scored_at_us=scored_at_us,
            latency_ms=latency_ms,
            scorer_id=cfg.scorer_id,
            source_topic=cfg.topics.transactions,
            source_partition=partitions[rows],
            source_offset=offsets[rows],
            schema_id=self._output_ids.decision if self._output_ids else None,
        )
        t3 = clock()
        first_offsets, next_offsets = _messages.offset_bounds(
            cfg.topics.transactions, partitions, offsets
        )
        pending = PendingBatch(next_offsets, batch.event_time_ms)
        pending.outstanding = len(decisions) + len(poisons)
        self._count_outcomes(pending, scored.variant, scored.model_versions, scored.outcome)
        if self._transactions is not None:
            self._transactions.begin(first_offsets)
        self._produce_batch(
            cfg.topics.decisions,
            _messages.produce_dicts(decisions, batch.card_ids),
            pending.on_delivery,
        )
        if poisons:
            self._dead_letter(messages, poisons, pending)
        if self._transactions is not None:
            self._transactions.add(pending)
        else:
            self._tracker.add(pending)
        t4 = clock()
        self._observe_drift(state, batch.features, scored)
        t5 = clock()
        metrics.consumed.inc(n_in)
        metrics.batch_size.observe(n_in)
        cache_hits = int(scored.cache_hit.sum())
        metrics.cache_hits.inc(cache_hits)
        metrics.cache_misses.inc(len(rows) - cache_hits)
        for v, seconds in enumerate(scored.inference_seconds):
            if seconds:
                metrics.inference_seconds.labels(VARIANTS[v]).observe(seconds)
        stage = metrics.stage
        inference = sum(scored.inference_seconds)
        stage["decode"].inc(t1 - t0)
        stage["score"].inc(inference)
        stage["digest"].inc(t_digest - t1)
        stage["cache"].inc(t2 - t_digest - inference)
        stage["encode"].inc(t3 - t2)
        stage["produce"].inc(t4 - t3)
        stage["drift"].inc(t5 - t4)

    def _produce_batch(
        self,
        topic: str,
        messages: list[dict[str, Any]],
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        """Hand a batch's messages to librdkafka in one call; retry those the full queue refused.

        ``produce_batch`` partitions by key like ``produce`` but cannot carry headers (the DLQ
        uses :meth:`_produce`). Refused messages get an ``_error`` and no delivery callback; with
        a full queue they are a suffix of the list, so their order is kept.
        """
        while self._producer.produce_batch(topic, messages, on_delivery=on_delivery) < len(
            messages
        ):
            refused = [m for m in messages if "_error" in m]
            for message in refused:
                error = message.pop("_error")
                if error.code() != KafkaError._QUEUE_FULL:
                    raise KafkaException(error)
            messages = refused
            self._wait_for_queue_space()

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        on_delivery: Callable[[KafkaError | None, Message], None],
        headers: list[tuple[str, str | bytes | None]] | None,
        producer: Producer | None = None,
    ) -> None:
        producer = producer or self._producer
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery, headers=headers)
                return
            except BufferError:
                self._wait_for_queue_space(producer)

    def _wait_for_queue_space(self, producer: Producer | None = None) -> None:
        """The local queue is full: serve callbacks (commits follow) so the caller can retry.

        After stop(), the batch in hand may wait for queue space for a quarter of the shutdown
        budget; longer means the broker is not taking records: give up on it.
        """
        if self._stopping.is_set() and time.monotonic() > (
            self._stop_asked_at + self.config.shutdown_timeout_s * STOP_PRODUCE_SHARE
        ):
            raise _ShutdownDuringProduce() from None
        self.progress.loop_turned()  # waiting on the broker, not stuck
        (producer or self._producer).poll(0.05)
        if self._transactions is None:
            self._tracker.commit_ready()

    def _dead_letter(
        self,
        messages: list[Message],
        poisons: list[tuple[int, PoisonMessage]],
        pending: PendingBatch,
    ) -> None:
        now_ms = int(time.time() * 1000)
        for position, poison in poisons:
            msg = messages[position]
            headers = dlq_headers(
                poison,
                topic=msg.topic() or "",
                partition=msg.partition() or 0,
                offset=msg.offset() or 0,
                scorer_id=self.config.scorer_id,
                failed_at_ms=now_ms,
                original=msg.headers(),
            )
            log.warning(
                "poison message %s[%d]@%d -> DLQ: %s",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                poison,
            )
            # A tombstone stays a tombstone (null value), not a zero-length one.
            self._produce(
                self.config.topics.dlq, msg.value(), msg.key(), pending.on_delivery, headers
            )
            self._metrics.dlq.labels(poison.kind).inc()

    def _out_of_time(self) -> bool:
        """After stop(), once the shutdown budget is spent: stop retrying transaction calls."""
        return self._stopping.is_set() and (
            time.monotonic() > self._stop_asked_at + self.config.shutdown_timeout_s
        )

    def _abandon_transaction(self) -> None:
        """After a failure: abort the open transaction if the producer still can (bounded)."""
        if self._transactions is None or not len(self._transactions):
            return
        try:
            self._transactions.abort(self.config.shutdown_timeout_s / 4, rewind=False)
        except SentinelError as exc:  # fenced, or the coordinator unreachable: it times out
            log.warning("open transaction not aborted (the coordinator aborts it): %s", exc)

    def _count_outcomes(
        self,
        pending: PendingBatch,
        variant: np.ndarray,
        versions: list[str],
        outcome: np.ndarray,
    ) -> None:
        n_outcomes = len(DECISION_OUTCOMES)
        combined = variant.astype(np.int64) * n_outcomes + outcome
        counts = np.bincount(combined, minlength=len(VARIANTS) * n_outcomes)
        pending.outcome_counts = {
            (VARIANTS[v], versions[v], DECISION_OUTCOMES[o]): int(counts[v * n_outcomes + o])
            for v in range(len(versions))
            for o in range(n_outcomes)
            if counts[v * n_outcomes + o]
        }

    def _on_batch_acked(self, batch: PendingBatch) -> None:
        self.progress.decided()
        for key, count in batch.outcome_counts.items():
            self.decision_counts[key] += count
            self._metrics.decisions.labels(*key).inc(count)
        if batch.event_time_ms.size:
            self._metrics.end_to_end_latency.observe_many(
                batch.acked_at - batch.event_time_ms.astype(np.float64) / 1000.0
            )

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self._tracker.on_commit(error, partitions)

    def _on_stats(self, stats_json: str) -> None:
        """librdkafka statistics: did any real broker (not the bootstrap entry) answer lately?

        ``rxidle`` (µs since the last bytes received) rather than the connection state: a frozen
        broker keeps its TCP connections "UP" for a minute while answering nothing; a live one
        answers the consumer's fetches at least every ``fetch.wait.max.ms``.
        """
        try:
            brokers = json.loads(stats_json).get("brokers", {}).values()
        except (ValueError, AttributeError) as exc:
            log.warning("unreadable librdkafka statistics: %s", exc)
            return
        self.progress.broker_up = any(
            b.get("state") == "UP"
            and b.get("nodeid", -1) >= 0
            and 0 <= b.get("rxidle", -1) < BROKER_SILENT_US
            for b in brokers
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:  # owned again: re-read from its committed offset, commits resume
            self._lost_uncommitted.pop((tp.topic, tp.partition), None)
        log.info(
            "%s assigned partitions %s", self.config.scorer_id, [p.partition for p in partitions]
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before giving partitions up: wait for every ack and commit what we own.

        After a failure (DLQ limit, refused record) nothing more is committed: the partitions'
        next owner starts from the last offset that is known to be fully acknowledged.
        """
        if self._failed:
            return
        log.info(
            "%s revoking partitions %s", self.config.scorer_id, [p.partition for p in partitions]
        )
        if self._transactions is not None:
            # The open transaction holds these partitions' offsets: commit it (or abort and
            # leave them to the next owner) before they are given up.
            if not self._closing:
                self._transactions.commit()
        elif not self._closing:  # on shutdown the bounded path has already committed
            self._tracker.drain()
        self._tracker.forget(partitions)
        for tp in partitions:
            self._metrics.consumer_lag.remove(str(tp.partition))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group moved on without us (session expired, fenced): forget, rejoin, resume.

        Committing for these partitions can only fail (or rewind their new owner), so the
        tracker forgets them; their acked-but-uncommitted records are re-read by the new owner.
        librdkafka rejoins by itself after this callback.
        """
        log.warning(
            "%s lost partitions %s (member expired or fenced): forgetting them, rejoining",
            self.config.scorer_id,
            [p.partition for p in partitions],
        )
        lost = {(tp.topic, tp.partition) for tp in partitions}
        for key, offset in self._tracker.uncommitted().items():
            if key in lost:
                self._lost_uncommitted[key] = offset
        self._tracker.forget(partitions)
        if self._transactions is not None:
            self._transactions.forget(partitions)
        for tp in partitions:
            self._metrics.consumer_lag.remove(str(tp.partition))

    def _housekeeping(self) -> None:
        # Stop loudly rather than score on with a frozen state once the control plane is gone.
        self._serving.check()
        if self._transactions is not None:
            self._telemetry.poll(0)  # drift delivery reports (exactly-once: a plain producer)
        now = time.monotonic()
        self._publish_drift(final=False)
        if now < self._next_lag_check:
            return
        self._next_lag_check = now + self.config.lag_interval_s
        self.progress.unacked = self._tracker.in_flight()
        if self._transactions is not None:
            self.progress.unacked += self._transactions.in_flight()
        assignment = self._consumer.assignment()
        if not assignment:
            self.progress.lag = 0
            return
        total = 0
        for tp in self._consumer.position(assignment):
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                self._metrics.consumer_lag.labels(str(tp.partition)).set(high - tp.offset)
                total += high - tp.offset
        self.progress.lag = total

    def _observe_drift(self, state: Serving, features: np.ndarray, scored: ScoredBatch) -> None:
        """Feed each variant's rows to the monitor of the model that scored them.

        A's rows are compared with A's baseline and B's with B's; a monitor whose model is no
        longer served for its variant publishes its last window and is replaced.
        """
        if self.config.drift is None or features.shape[0] == 0:
            return
        served = {"A": state.a} if state.b is None else {"A": state.a, "B": state.b}
        for name in [v for v in self._drift if v not in served]:
            self._publish_drift(final=True, variant=name)
            del self._drift[name]
        for v, (name, model) in enumerate(served.items()):
            monitor = self._drift.get(name)
            if monitor is None or monitor.model_version != model.version:
                self._publish_drift(final=True, variant=name)
                monitor = self._drift[name] = DriftMonitor(
                    model.manifest.drift_baseline,
                    self.config.drift,
                    scorer_id=self.config.scorer_id,
                    model_version=model.version,
                    # The drift gauges describe the champion; B's drift is in its snapshots.
                    metrics=self._metrics if name == "A" else None,
                    variant=name,
                    block_threshold=model.block_threshold,
                )
            rows = scored.variant == v
            if len(served) == 1:
                monitor.observe(features, scored.probability)
            elif rows.any():
                monitor.observe(features[rows], scored.probability[rows])

    def _publish_drift(self, final: bool, variant: str | None = None) -> None:
        """Publish due windows (every variant's, or one variant's last one when ``final``).

        Goes through :meth:`_produce`, so a full local queue is served and retried, never raised.
        """
        names = list(self._drift) if variant is None else [variant]
        now = time.monotonic()
        for name in names:
            monitor = self._drift.get(name)
            if monitor is None or not (final or monitor.due(now)):
                continue
            snapshot = monitor.snapshot(int(time.time() * 1000))
            if snapshot.count:
                self._produce(
                    self.config.topics.drift,
                    encode_snapshot(snapshot, self._output_ids.drift if self._output_ids else None),
                    self.config.scorer_id.encode(),
                    _log_drift_delivery,
                    None,
                    self._telemetry,
                )


def read_consumed(
    messages: list[Message],
) -> tuple[list[Message], list[bytes | None], npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """A consumed batch's records with their values, partitions and offsets (one C pass).

    Messages carrying a transport error instead of a record are logged and dropped (a fatal one
    raises KafkaException); the scorer and the bench's relay read their batches through this."""
    partitions = np.empty(len(messages), np.int32)
    offsets = np.empty(len(messages), np.int64)
    values = _messages.read_batch(messages, partitions, offsets)
    if values is None:  # some carry a transport error instead of a record
        kept = []
        for m in messages:
            err = m.error()
            if err is None:
                kept.append(m)
            elif err.fatal():
                raise KafkaException(err)
            else:
                log.warning("consumer error on %s[%s]: %s", m.topic(), m.partition(), err)
        messages, partitions, offsets = kept, partitions[: len(kept)], offsets[: len(kept)]
        values = _messages.read_batch(messages, partitions, offsets)
        assert values is not None
    return messages, values, partitions, offsets


def register_outputs(registry: SchemaRegistry, topics: TopicNames) -> OutputSchemaIds:
    """Register decision.avsc and drift_snapshot.avsc under their topics' ``-value`` subjects."""
    return OutputSchemaIds(
        decision=registry.register(subject_of(topics.decisions), load_schema("decision")),
        drift=registry.register(subject_of(topics.drift), load_schema("drift_snapshot")),
    )


def _log_drift_delivery(error: KafkaError | None, message: Message) -> None:
    """A drift snapshot is telemetry: a failed delivery is logged, never retried or fatal."""
    if error is not None:
        log.warning("drift snapshot not delivered to %s: %s", message.topic(), error)
