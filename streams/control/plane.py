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
    TopicPartition,
)

from schemas.errors import BrokerError, ConfigError
from streams.config import ConfigValue, KafkaSettings, TopicNames
from streams.control.commands import (
    COMMAND_NAMES,
    BundleLoader,
    CommandRefused,
    ServingState,
    apply,
    parse_command,
)
from streams.metrics import ScorerMetrics

if TYPE_CHECKING:
    from streams.model.loader import ModelBundle

log = logging.getLogger(__name__)

CONTROL_PARTITION = 0
POLL_TIMEOUT_S = 0.2
# Replay gives up when the broker delivers nothing for this long before the watermark is reached.
REPLAY_STALL_S = 60.0
METADATA_TIMEOUT_S = 15.0


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
    thread for each heartbeat and must be thread-safe and quick.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topics: TopicNames,
        scorer_id: str,
        models_dir: Path,
        metrics: ScorerMetrics,
        signing_key: bytes | None = None,
        heartbeat_interval_s: float = 3.0,
        stats: Callable[[], Mapping[str, object]] = lambda: {},
        loader: BundleLoader | None = None,
    ) -> None:
        if not scorer_id:
            raise ConfigError("scorer id must not be empty")
        if not heartbeat_interval_s > 0:
            raise ConfigError(f"heartbeat interval must be > 0 s, got {heartbeat_interval_s}")
        self.scorer_id = scorer_id
        self._settings = settings
        self._topics = topics
        self._metrics = metrics
        self._signing_key = signing_key
        self._heartbeat_interval_s = heartbeat_interval_s
        self._stats = stats
        self._loader: BundleLoader = loader or ModelsDirLoader(models_dir)
        self._state: ServingState | None = None
        self._served_labels: set[tuple[str, str, str]] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    @property
    def state(self) -> ServingState:
        """The current serving state (one atomic read; never blocks). Only after :meth:`start`."""
        state = self._state
        if state is None:
            raise RuntimeError("ControlPlane.state read before start()")
        return state

    def start(self) -> ServingState:
        """Load A from ``models/current``, replay the control log, then follow it on a thread.

        Blocks until every command up to the log's current end is applied (acks of replayed
        commands carry ``"replayed": true``). Raises ModelLoadError if the current model cannot
        be loaded, ConfigError if the control topic does not exist, BrokerError if the broker
        stops answering during the replay.
        """
        if self._state is not None:
            raise RuntimeError("ControlPlane.start() called twice")
        self._set_state(ServingState(a=self._loader.load(self._loader.current_version())))
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
            if self._state is not None:
                self._publish(self._event("stopped", stats=self._safe_stats()))
            self._producer.flush(10)
            self._producer = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _replay(self, consumer: Consumer) -> None:
        topic = self._topics.control
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or CONTROL_PARTITION not in info.partitions:
            raise ConfigError(
                f"control topic {topic!r} does not exist: create it with 'sentinel topics create'"
            )
        partition = TopicPartition(topic, CONTROL_PARTITION)
        _, high = consumer.get_watermark_offsets(partition, timeout=METADATA_TIMEOUT_S)
        consumer.assign([TopicPartition(topic, CONTROL_PARTITION, OFFSET_BEGINNING)])
        next_offset = 0
        last_progress = time.monotonic()
        while next_offset < high:
            message = consumer.poll(POLL_TIMEOUT_S)
            if message is None or message.error() is not None:
                if message is not None and not _is_eof(message):
                    log.warning("control topic %s: %s during replay", topic, message.error())
                if time.monotonic() - last_progress > REPLAY_STALL_S:
                    raise BrokerError(
                        f"control log replay stalled at offset {next_offset} of {high} "
                        f"on {topic!r} for {REPLAY_STALL_S:.0f} s"
                    )
                continue
            self._handle(message, replayed=True)
            next_offset = _offset(message) + 1
            last_progress = time.monotonic()
        log.info("%s replayed %d control offsets: %s", self.scorer_id, high, self.state.summary())

    def _follow(self) -> None:
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
        """Apply one control-log message and ack it; refusals leave the state unchanged."""
        offset = _offset(message)
        raw = message.value()
        before = self.state
        command_id, name = _identity(raw)
        try:
            command = parse_command(raw, self._signing_key)
            after = apply(before, command, self._loader, offset)
            result, reason = "ok", None
        except CommandRefused as exc:
            after, result, reason = before, "refused", exc.reason
        except Exception as exc:  # a bug in a loader must not kill the control thread
            log.exception("control offset %d: unexpected error applying %s", offset, name)
            after, result, reason = before, "refused", f"internal error: {exc!r}"
        self._set_state(after)
        label = name if name in COMMAND_NAMES else "invalid"
        self._metrics.control_commands.labels(command=label, result=result).inc()
        if result == "refused":
            log.warning("control offset %d (%s) refused: %s", offset, name, reason)
        ack = self._event(
            "ack",
            command_id=command_id,
            command=name,
            offset=offset,
            result=result,
            reason=reason,
            replayed=replayed,
        )
        self._publish(ack)

    def _set_state(self, state: ServingState) -> None:
        self._state = state  # one reference assignment: readers see the old or the new state
        labels = {("A", state.a.version, state.a.sha256)}
        if state.b is not None:
            labels.add(("B", state.b.version, state.b.sha256))
        for gone in self._served_labels - labels:
            self._metrics.model_info.remove(*gone)
        for variant, version, sha in labels:
            self._metrics.model_info.labels(variant=variant, version=version, sha256=sha).set(1)
        self._served_labels = labels
        self._metrics.ab_split_percent.set(state.split_percent)

    def _event(self, kind: str, **fields: object) -> dict[str, object]:
        return {
            "type": kind,
            "scorer_id": self.scorer_id,
            "time": utc_now_iso(),
            **fields,
            "state": self.state.summary(),
        }

    def _publish(self, event: Mapping[str, object]) -> None:
        producer = self._producer
        if producer is None:
            return
        producer.produce(
            self._topics.control_events,
            key=self.scorer_id.encode(),
            value=json.dumps(event, separators=(",", ":")).encode(),
            on_delivery=_log_failed_delivery,
        )

    def _safe_stats(self) -> Mapping[str, object]:
        try:
            return dict(self._stats())
        except Exception as exc:  # the scorer's callback must not stop heartbeats
            log.exception("stats callback failed; heartbeat sent without stats")
            return {"error": repr(exc)}


def _identity(raw: bytes | None) -> tuple[str | None, str | None]:
    """Best-effort command id and name of a message, so even a refused command's ack is findable."""
    try:
        fields = json.loads(raw or b"")
    except (UnicodeDecodeError, ValueError):
        return None, None
    if not isinstance(fields, dict):
        return None, None
    command_id, name = fields.get("command_id"), fields.get("command")
    return (
        command_id if isinstance(command_id, str) else None,
        name if isinstance(name, str) else None,
    )


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
