"""The control plane's Kafka side: follow the control log, swap the serving state, report back.

Every scorer instance runs one :class:`ControlPlane`. It reads the whole ``control`` topic
(partition 0, from the beginning, by assignment: never as a member of a consumer group, so it
neither rebalances nor commits), applies each command with
:func:`streams.control.commands.apply`, and answers on ``control-events`` (key = scorer id)
with an ack carrying the resulting state. It publishes a heartbeat with the state and the
scorer's statistics every few seconds, and a ``stopped`` event on close.

Model loads and checks happen on the plane's own thread; the scorer only ever reads
:attr:`ControlPlane.state`, an immutable object swapped in one assignment, once per batch. So
scoring never pauses for a load and a batch never sees half a command.

The serving state is the fold of the log (``streams.control.state.ControlLog``), nothing else.
``models/current`` only seeds a brand-new log: an instance that finds no ``reload`` in the log at
all publishes one (``genesis``) naming the version ``models/current`` points at and its model
sha256, then folds the log including it, like every other instance will. An instance that cannot
reproduce the log's state (a bundle with other content on its disk) refuses the command, says so
in its ack, and keeps serving what it had; ``sentinel control status`` shows the divergence.

No record can stop the control thread: every failure of one record is a refusal. Should the
thread die anyway (a bug), :attr:`ControlPlane.state` raises :class:`ControlPlaneFailed` from then
on, so the scorer stops loudly instead of scoring on with a frozen state, and a ``stopped`` event
with the reason is published.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
)

from schemas.errors import BrokerError, ConfigError, ModelLoadError, SentinelError
from streams.config import ConfigValue, KafkaSettings, TopicNames
from streams.control.commands import COMMAND_NAMES, DEFAULT_KEY_ID, new_command
from streams.control.state import BundleLoader, ControlLog, Outcome, ServingState
from streams.log_reader import read_to_end
from streams.metrics import ScorerMetrics

if TYPE_CHECKING:
    from streams.model.loader import ModelBundle

log = logging.getLogger(__name__)

CONTROL_PARTITION = 0
POLL_TIMEOUT_S = 0.2
# Replay gives up when the broker delivers nothing for this long before the watermark is reached.
REPLAY_STALL_S = 60.0
METADATA_TIMEOUT_S = 15.0


class ControlPlaneFailed(SentinelError):
    """The control thread died: the instance must stop instead of serving a frozen state."""


class ModelsDirLoader:
    """:class:`~streams.control.commands.BundleLoader` over a ``models/`` directory."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir

    def current_version(self) -> str:
        """The version ``models/current`` points at; raises ModelLoadError if unreadable."""
        from schemas.models_dir import current_version

        return current_version(self.models_dir)

    def load(self, version: str) -> ModelBundle:
        """Load and verify ``models/<version>``; raises ModelLoadError naming the failed check."""
        from streams.model.loader import load_bundle

        return load_bundle(self.models_dir, version)


def utc_now_iso() -> str:
    """Now, as ISO-8601 UTC with milliseconds and a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ControlPlane:
    """One instance's follower of the control log; see the module docstring.

    ``loader`` replaces the ``models_dir`` loader (tests); ``stats`` is called on the plane's
    thread for each heartbeat and must be thread-safe and quick. ``keys`` (key id -> secret)
    makes signatures mandatory; the instance signs what it publishes itself (the genesis reload)
    with ``sign_with`` (default: ``"default"`` if present, else the first key).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topics: TopicNames,
        scorer_id: str,
        models_dir: Path,
        metrics: ScorerMetrics,
        keys: Mapping[str, bytes] | None = None,
        heartbeat_interval_s: float = 3.0,
        stats: Callable[[], Mapping[str, object]] = lambda: {},
        loader: BundleLoader | None = None,
        sign_with: str | None = None,
    ) -> None:
        if not scorer_id:
            raise ConfigError("scorer id must not be empty")
        if not heartbeat_interval_s > 0:
            raise ConfigError(f"heartbeat interval must be > 0 s, got {heartbeat_interval_s}")
        self.scorer_id = scorer_id
        self._settings = settings
        self._topics = topics
        self._metrics = metrics
        self._keys = dict(keys or {})
        if sign_with is not None and sign_with not in self._keys:
            raise ConfigError(f"signing key id {sign_with!r} is not among the configured keys")
        self._sign_with = sign_with or (
            DEFAULT_KEY_ID if DEFAULT_KEY_ID in self._keys else next(iter(self._keys), None)
        )
        self._heartbeat_interval_s = heartbeat_interval_s
        self._stats = stats
        self._models = ModelsDirLoader(models_dir)
        self._loader: BundleLoader = loader or self._models
        self._log = ControlLog()
        self._next_offset = 0
        self._failure: BaseException | None = None
        self._served_labels: set[tuple[str, str, str]] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    @property
    def state(self) -> ServingState:
        """The current serving state (one atomic read; never blocks). Only after :meth:`start`.

        Raises ControlPlaneFailed once the control thread has died.
        """
        self.check()
        state = self._log.serving
        if state is None:
            raise RuntimeError("ControlPlane.state read before start()")
        return state

    def check(self) -> None:
        """Raise ControlPlaneFailed once the control thread has died (never blocks)."""
        if self._failure is not None:
            raise ControlPlaneFailed(f"control thread died: {self._failure!r}")

    @property
    def alive(self) -> bool:
        """Whether the control thread is following the log (False before start and after a
        failure or close)."""
        thread = self._thread
        return self._failure is None and thread is not None and thread.is_alive()

    def start(self) -> ServingState:
        """Replay the control log (publishing the genesis reload if the log has none), then
        follow it on a thread.

        Blocks until every command up to the log's current end is applied (acks of replayed
        commands carry ``"replayed": true``). Raises ModelLoadError if there is no model to serve
        (the genesis bundle cannot be loaded, or the log's reloads were all refused here),
        ConfigError if the control topic does not exist, BrokerError if the broker stops
        answering during the replay.
        """
        if self._thread is not None or self._consumer is not None:
            raise RuntimeError("ControlPlane.start() called twice")
        producer_config: dict[str, ConfigValue] = {
            "client.id": f"{self.scorer_id}-control",
            "acks": "all",
            "linger.ms": 0,
        }
        consumer_config: dict[str, ConfigValue] = {
            # librdkafka insists on a group id; assign() never joins it and nothing commits.
            "group.id": f"sentinel-control-{self.scorer_id}-{uuid.uuid4().hex[:8]}",
            "client.id": f"{self.scorer_id}-control",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
        self._producer = Producer(self._settings.client_config(**producer_config))
        self._consumer = Consumer(self._settings.client_config(**consumer_config))
        try:
            self._replay(self._consumer)
            if self._log.serving is None:
                self._serve_genesis(self._consumer)
        except BaseException:
            self._consumer.close()
            self._producer.flush(5)
            self._consumer = self._producer = None
            raise
        self._thread = threading.Thread(
            target=self._follow, name=f"control-{self.scorer_id}", daemon=True
        )
        self._thread.start()
        return self.state

    def close(self) -> None:
        """Stop following, publish a ``stopped`` event, flush and close. Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._producer is not None:
            if self._log.serving is not None and self._failure is None:
                self._publish(self._event("stopped", stats=self._safe_stats()))
            self._producer.flush(10)
            self._producer = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _replay(self, consumer: Consumer, replayed: bool = True) -> None:
        topic = self._topics.control
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or CONTROL_PARTITION not in info.partitions:
            raise ConfigError(
                f"control topic {topic!r} does not exist: create it with 'sentinel topics create'"
            )
        records = read_to_end(
            consumer,
            topic,
            lambda message: self._handle(message, replayed=replayed),
            start={CONTROL_PARTITION: max(self._next_offset, 0) or OFFSET_BEGINNING},
            idle_timeout_s=REPLAY_STALL_S,
        )
        log.info("%s read %d control records", self.scorer_id, records)

    def _serve_genesis(self, consumer: Consumer) -> None:
        """No model after the replay: seed a brand-new log from ``models/current``, or refuse."""
        if self._log.reloads:
            raise ModelLoadError(
                f"no model to serve: this instance refused every reload in the control log "
                f"({self._log.reloads}; see its acks on {self._topics.control_events!r}): its "
                "bundles differ from the fleet's"
            )
        version = self._models.current_version()
        bundle = self._loader.load(version)
        key = self._keys.get(self._sign_with) if self._sign_with else None
        command = new_command(
            "reload",
            {"version": version, "model_sha256": bundle.sha256},
            issuer=f"{self.scorer_id} (genesis: models/current)",
            signing_key=key,
            key_id=self._sign_with if key is not None else None,
        )
        delivered: list[KafkaError | None] = []
        assert self._producer is not None
        self._producer.produce(
            self._topics.control,
            command.encode(),
            on_delivery=lambda error, _message: delivered.append(error),
        )
        self._producer.flush(METADATA_TIMEOUT_S)
        if not delivered or delivered[0] is not None:
            raise BrokerError(f"cannot publish the genesis reload: {delivered or 'timed out'}")
        log.info("%s: empty control log, published genesis reload of %s", self.scorer_id, version)
        self._replay(consumer, replayed=False)  # its own genesis is news, not a replay
        if self._log.serving is None:
            raise ModelLoadError("no model to serve: the genesis reload was refused here")

    def _follow(self) -> None:
        try:
            self._follow_log()
        except BaseException as exc:  # a bug: stop the instance loudly (see the module doc)
            self._failure = exc
            log.critical("%s: control thread died", self.scorer_id, exc_info=True)
            if self._producer is not None:
                self._publish(self._event("stopped", reason=f"control thread died: {exc!r}"))
                self._producer.flush(5)

    def _follow_log(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        next_heartbeat = 0.0
        while not self._stopping.is_set():
            message = consumer.poll(POLL_TIMEOUT_S)
            if message is not None:
                if message.error() is None:
                    self._handle(message, replayed=False)
                elif not _is_eof(message):
                    log.warning("control topic %s: %s", self._topics.control, message.error())
            now = time.monotonic()
            if now >= next_heartbeat:
                self._publish(self._event("heartbeat", stats=self._safe_stats()))
                next_heartbeat = now + self._heartbeat_interval_s
            if self._producer is not None:
                self._producer.poll(0)

    def _handle(self, message: Message, replayed: bool) -> None:
        """Fold one control-log record and ack it; refusals leave the state unchanged."""
        offset = _offset(message)
        self._next_offset = offset + 1
        before = self._log.serving
        self._log, outcome = self._log.step(message.value(), offset, self._loader, self._keys)
        if self._log.serving is not before and self._log.serving is not None:
            self._set_state(self._log.serving)
        name = outcome.command
        label = name if name in COMMAND_NAMES else "invalid"
        self._metrics.control_commands.labels(command=label, result=outcome.result).inc()
        if outcome.result == "refused":
            log.warning("control offset %d (%s) refused: %s", offset, name, outcome.reason)
        self._publish(self._ack(outcome, replayed))

    def _ack(self, outcome: Outcome, replayed: bool) -> dict[str, object]:
        command = outcome.parsed
        return self._event(
            "ack",
            command_id=outcome.command_id,
            command=outcome.command,
            offset=outcome.offset,
            result=outcome.result,
            reason=outcome.reason,
            replayed=replayed,
            issuer=None if command is None else command.issuer,
            issued_at=None if command is None else command.issued_at,
        )

    def _set_state(self, state: ServingState) -> None:
        labels = {("A", state.a.version, state.a.sha256)}
        if state.b is not None:
            labels.add(("B", state.b.version, state.b.sha256))
        for gone in self._served_labels - labels:
            self._metrics.model_info.remove(*gone)
        for variant, version, sha in labels:
            self._metrics.model_info.labels(variant=variant, version=version, sha256=sha).set(1)
        self._served_labels = labels
        self._metrics.ab_split_percent.set(state.split_percent)
        self._metrics.control_applied_offset.set(state.applied_offset)

    def _event(self, kind: str, **fields: object) -> dict[str, object]:
        serving = self._log.serving
        return {
            "type": kind,
            "scorer_id": self.scorer_id,
            "time": utc_now_iso(),
            **fields,
            "state": None if serving is None else serving.summary(),
        }

    def _publish(self, event: Mapping[str, object]) -> None:
        producer = self._producer
        if producer is None:
            return
        value = json.dumps(event, separators=(",", ":")).encode()
        while True:
            try:
                producer.produce(
                    self._topics.control_events,
                    key=self.scorer_id.encode(),
                    value=value,
                    on_delivery=_log_failed_delivery,
                )
                return
            except BufferError:  # local queue full (broker away): wait for room, never raise
                producer.poll(0.1)
                if self._stopping.is_set():
                    return

    def _safe_stats(self) -> Mapping[str, object]:
        try:
            return dict(self._stats())
        except Exception as exc:  # the scorer's callback must not stop heartbeats
            log.exception("stats callback failed; heartbeat sent without stats")
            return {"error": repr(exc)}


def _offset(message: Message) -> int:
    offset = message.offset()
    assert offset is not None  # always set on a consumed message without an error
    return offset


def _is_eof(message: Message) -> bool:
    error = message.error()
    return error is not None and error.code() == KafkaError._PARTITION_EOF


def _log_failed_delivery(error: KafkaError | None, message: Message) -> None:
    if error is not None:
        log.error("control event to %s not delivered: %s", message.topic(), error)
