"""Steering the fleet from outside: build a command, publish it, collect every instance's answer.

The one code path behind ``sentinel control`` and the operator console. Commands that name a model
(``reload``, ``ab_setup``) are resolved here, when they are *published*: the version
(``models/current`` unless given) and the model sha256 of that bundle go into the command, so
every instance applies the same content whenever it folds the record (``streams.control.state``).

:class:`Fleet` reads ``control-events`` by assignment (never joining a group): the live instances
are those with an event in the last :data:`LIVE_WINDOW_S` seconds whose latest event is not
``stopped``. :func:`divergence` compares what they serve.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from confluent_kafka import OFFSET_END, Consumer, KafkaError, Message, Producer, TopicPartition

from schemas.errors import BrokerError, ConfigError
from schemas.manifest import read_manifest
from schemas.models_dir import activate_version, current_version
from streams.config import ConfigValue, KafkaSettings, TopicNames
from streams.control.commands import ControlCommand
from streams.log_reader import read_to_end

LIVE_WINDOW_S: Final = 10.0
POLL_S: Final = 0.2
# What every instance must agree on; a difference between live instances is a divergence.
COMPARED: Final = ("a_version", "a_sha256", "b_version", "b_sha256", "split_percent")


def model_args(command: str, models_dir: Path, version: str | None = None) -> dict[str, str | int]:
    """The arguments of a model command, resolved now: the version (``models/current`` for a
    ``reload`` without one) and the model sha256 its bundle has on this machine.

    Raises ModelLoadError if the pointer or the bundle's manifest cannot be read.
    """
    chosen = version or current_version(models_dir)
    sha = read_manifest(models_dir, chosen).onnx.sha256
    key = "version" if command == "reload" else "candidate_version"
    return {key: chosen, "model_sha256": sha}


def divergence(states: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per field on which the given instances' states differ (empty: they agree).

    ``applied_offset`` is compared too: instances that folded different prefixes of the log
    differ in what they will do next even if they serve the same models now.
    """
    lines = []
    for name in (*COMPARED, "applied_offset"):
        values = {scorer: state.get(name) for scorer, state in states.items()}
        if len({json.dumps(v) for v in values.values()}) > 1:
            shown = ", ".join(f"{scorer}={value}" for scorer, value in sorted(values.items()))
            lines.append(f"{name} differs: {shown}")
    return lines


class Fleet:
    """The CLI's view of control-events: latest event per instance, acks of one command.

    Every call blocks for a bounded time; BrokerError/ConfigError say what went wrong.
    """

    def __init__(self, settings: KafkaSettings, topics: TopicNames) -> None:
        self.settings = settings
        self.topics = topics
        self.latest: dict[str, dict[str, Any]] = {}  # latest event of each instance
        self.stats: dict[str, Mapping[str, Any]] = {}  # from each instance's latest heartbeat
        consumer_config: dict[str, ConfigValue] = {
            "group.id": f"sentinel-control-{uuid.uuid4().hex[:12]}",  # assign() only: never joins
            "enable.auto.commit": False,
            "auto.offset.reset": "latest",
        }
        self._consumer = Consumer(settings.client_config(**consumer_config))

    def live_instances(self) -> list[str]:
        """Instances whose latest event in the last LIVE_WINDOW_S is not ``stopped``.

        Reads control-events from ``now - LIVE_WINDOW_S`` (offsets_for_times) to its end and
        stays positioned there, so acks published later are read next.
        """
        topic = self.topics.control_events
        consumer = self._consumer
        info = consumer.list_topics(topic, timeout=15).topics.get(topic)
        if info is None or info.error is not None:
            raise ConfigError(f"topic {topic!r} does not exist: run 'sentinel topics create'")
        since_ms = int((time.time() - LIVE_WINDOW_S) * 1000)
        wanted = [TopicPartition(topic, p, since_ms) for p in sorted(info.partitions)]
        starts = consumer.offsets_for_times(wanted, timeout=15)
        # A partition with nothing that recent starts at its end: nothing to read there.
        start = {tp.partition: tp.offset if tp.offset >= 0 else OFFSET_END for tp in starts}
        read_to_end(
            consumer, topic, lambda m: self._record(m.value()), start=start, idle_timeout_s=15
        )
        return sorted(s for s, event in self.latest.items() if event.get("type") != "stopped")

    def publish(self, value: bytes) -> int:
        """Publish one command on the control topic; the offset the broker gave it."""
        outcome: list[tuple[KafkaError | None, Message]] = []
        producer = Producer(self.settings.client_config(acks="all"))
        producer.produce(
            self.topics.control, value, on_delivery=lambda e, m: outcome.append((e, m))
        )
        producer.flush(15)
        if not outcome or outcome[0][0] is not None:
            reason = outcome[0][0] if outcome else "no acknowledgement within 15 s"
            raise BrokerError(f"could not publish to {self.topics.control!r}: {reason}")
        return _offset(outcome[0][1])

    def wait_for_acks(
        self, command_id: str, expected: set[str], timeout_s: float
    ) -> dict[str, dict[str, Any]]:
        """Acks of ``command_id`` by instance, until all of ``expected`` answered or timeout."""
        acks: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while not expected <= set(acks) and time.monotonic() < deadline:
            message = self._consumer.poll(POLL_S)
            if message is None or message.error() is not None:
                continue
            event = self._record(message.value())
            if event and event.get("type") == "ack" and event.get("command_id") == command_id:
                acks[str(event.get("scorer_id"))] = event
        return acks

    def close(self) -> None:
        """Close the consumer (never commits anything)."""
        self._consumer.close()

    def _record(self, value: bytes | None) -> dict[str, Any] | None:
        try:
            event = json.loads(value or b"")
        except ValueError:
            return None  # not ours: control-events carries only JSON events from scorers
        if not isinstance(event, dict) or not isinstance(event.get("scorer_id"), str):
            return None
        self.latest[event["scorer_id"]] = event
        if isinstance(event.get("stats"), dict):
            self.stats[event["scorer_id"]] = event["stats"]
        return event


@dataclass(frozen=True)
class CommandOutcome:
    """What became of one issued command (:func:`issue_command`).

    ``offset`` is None when nothing was published (no live instance). ``acks`` holds the ack of
    every instance that answered in time, ``latest`` the latest event of every instance seen,
    ``stats`` each one's latest heartbeat statistics, ``diverging`` one line per field on which
    the instances that answered differ, ``activated`` the version ``models/current`` was pointed
    at after a successful promote.
    """

    command: ControlCommand
    live: tuple[str, ...]
    offset: int | None
    acks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    latest: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    stats: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    diverging: tuple[str, ...] = ()
    activated: str | None = None

    @property
    def missing(self) -> list[str]:
        """Live instances that did not answer in time."""
        return sorted(set(self.live) - set(self.acks))

    @property
    def refused(self) -> list[str]:
        """Instances that answered with a refusal."""
        return sorted(s for s, ack in self.acks.items() if ack.get("result") != "ok")

    @property
    def applied_by_all(self) -> bool:
        """Published, applied by every live instance, and they all serve the same afterwards."""
        return self.offset is not None and not (self.missing or self.refused or self.diverging)


def issue_command(
    settings: KafkaSettings,
    topics: TopicNames,
    command: ControlCommand,
    timeout_s: float,
    models_dir: Path,
) -> CommandOutcome:
    """Publish ``command`` if any instance is live and wait up to ``timeout_s`` for every live
    instance's ack; after a promote every instance applied alike, point ``models/current`` at
    the promoted version (so a later ``reload`` keeps it).

    Blocks up to about ``timeout_s`` plus the broker's timeouts. Raises BrokerError if the command
    cannot be published, ConfigError if control-events does not exist.
    """
    fleet = Fleet(settings, topics)
    try:
        live = tuple(fleet.live_instances())
        if not live:
            return CommandOutcome(command, live, None, latest=dict(fleet.latest))
        offset = fleet.publish(command.encode())
        acks = fleet.wait_for_acks(command.command_id, set(live), timeout_s)
    finally:
        fleet.close()
    diverging = tuple(divergence({s: ack.get("state") or {} for s, ack in acks.items()}))
    outcome = CommandOutcome(
        command, live, offset, acks, dict(fleet.latest), dict(fleet.stats), diverging
    )
    if command.command == "promote" and acks and outcome.applied_by_all:
        promoted = str((next(iter(acks.values())).get("state") or {}).get("a_version"))
        activate_version(models_dir, promoted)
        outcome = replace(outcome, activated=promoted)
    return outcome


def _offset(message: Message) -> int:
    offset = message.offset()
    assert offset is not None  # set on every consumed or delivered message
    return offset


@dataclass(frozen=True)
class HistoryEntry:
    """One record of the control log and every instance's ack of it (by scorer id)."""

    offset: int
    command_id: str | None
    command: str | None
    args: Mapping[str, object] | None
    issuer: str | None
    issued_at: str | None
    acks: Mapping[str, Mapping[str, Any]]


def read_history(
    settings: KafkaSettings, topics: TopicNames, timeout_s: float
) -> list[HistoryEntry]:
    """Every record of the control log, oldest first, joined with the acks on control-events.

    An unreadable record is listed with what could be read of it. Acks are matched by offset, so
    a re-published command id shows its refusal at its own offset. Blocks up to ``timeout_s`` per
    topic; BrokerError if Kafka cannot be read.
    """
    from streams.control.commands import CommandRefused, decode_json_object

    records: list[HistoryEntry] = []
    acks: dict[int, dict[str, Mapping[str, Any]]] = {}

    def record(message: Message) -> None:
        try:
            fields: Mapping[str, Any] = decode_json_object(message.value())
        except CommandRefused:
            fields = {}
        args = fields.get("args")
        records.append(
            HistoryEntry(
                offset=_offset(message),
                command_id=_text(fields.get("command_id")),
                command=_text(fields.get("command")),
                args=args if isinstance(args, dict) else None,
                issuer=_text(fields.get("issuer")),
                issued_at=_text(fields.get("issued_at")),
                acks={},
            )
        )

    def ack(message: Message) -> None:
        try:
            event = json.loads(message.value() or b"")
        except (ValueError, RecursionError):
            return
        if isinstance(event, dict) and event.get("type") == "ack":
            offset, scorer = event.get("offset"), event.get("scorer_id")
            if isinstance(offset, int) and isinstance(scorer, str):
                acks.setdefault(offset, {})[scorer] = event

    for topic, handle in ((topics.control, record), (topics.control_events, ack)):
        consumer = Consumer(
            settings.client_config(
                {
                    "group.id": f"sentinel-history-{uuid.uuid4().hex[:12]}",
                    "enable.auto.commit": False,
                }
            )
        )
        try:
            if topic not in consumer.list_topics(timeout=15).topics:
                raise ConfigError(f"topic {topic!r} does not exist: run 'sentinel topics create'")
            read_to_end(consumer, topic, handle, idle_timeout_s=timeout_s)
        finally:
            consumer.close()
    return [replace(entry, acks=acks.get(entry.offset, {})) for entry in records]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
