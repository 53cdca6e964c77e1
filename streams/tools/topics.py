"""The product's topics: one spec per role, idempotent creation, and a description with lag.

Specs follow the brief: ``control`` has one partition and is kept forever (it is the log every
scorer replays at start), the DLQ keeps messages long and accepts a record bigger than any
transaction (original bytes plus error headers). Creating is idempotent: an existing topic is
reported, never altered; a partition count or config that differs from the spec is reported so an
operator can act on it (Kafka can add partitions but that breaks key ordering, so we never do it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

# confluent_kafka.admin re-exports these without __all__, which strict mypy reads as private.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    OffsetSpec,
)

from schemas.errors import BrokerError, ConfigError
from streams.config import (
    DLQ_MAX_MESSAGE_BYTES,
    TRANSACTIONS_MAX_MESSAGE_BYTES,
    KafkaSettings,
    TopicNames,
    TopicRole,
)

DAY_MS = 24 * 60 * 60 * 1000
DEFAULT_PARTITIONS = 6  # transactions and decisions: enough for a few instances on a small host
SHOWN_CONFIGS = ("retention.ms", "retention.bytes", "cleanup.policy", "max.message.bytes")

NOT_YET_SERVED = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.LEADER_NOT_AVAILABLE})
K = TypeVar("K")

Outcome = Literal["created", "exists", "differs"]


@dataclass(frozen=True)
class TopicSpec:
    """What one topic of the product should look like."""

    role: TopicRole
    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


def topic_specs(names: TopicNames, partitions: int | None = None) -> list[TopicSpec]:
    """The six topic specs, in a stable order.

    ``partitions`` overrides the count of ``transactions`` and ``decisions`` (the two topics whose
    partition count sets the scorer's parallelism); the others keep theirs because their meaning
    depends on it (``control`` must stay one totally ordered log). Raises ConfigError if
    ``partitions`` is not positive.
    """
    if partitions is not None and partitions <= 0:
        raise ConfigError(f"--partitions must be a positive integer, got {partitions}")
    scaled = partitions or DEFAULT_PARTITIONS
    delete = {"cleanup.policy": "delete"}
    return [
        TopicSpec(
            "transactions",
            names.transactions,
            scaled,
            {
                **delete,
                "retention.ms": str(7 * DAY_MS),
                "max.message.bytes": str(TRANSACTIONS_MAX_MESSAGE_BYTES),
            },
        ),
        TopicSpec(
            "decisions", names.decisions, scaled, {**delete, "retention.ms": str(7 * DAY_MS)}
        ),
        TopicSpec("drift", names.drift, 1, {**delete, "retention.ms": str(30 * DAY_MS)}),
        TopicSpec(
            "control",
            names.control,
            1,
            {**delete, "retention.ms": "-1", "retention.bytes": "-1"},
        ),
        TopicSpec(
            "control_events", names.control_events, 1, {**delete, "retention.ms": str(7 * DAY_MS)}
        ),
        TopicSpec(
            "dlq",
            names.dlq,
            3,
            {
                **delete,
                "retention.ms": str(30 * DAY_MS),
                "max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES),
            },
        ),
    ]


@dataclass(frozen=True)
class TopicReport:
    """The outcome of ensuring one topic: created, already as specified, or differing from spec."""

    spec: TopicSpec
    outcome: Outcome
    partitions: int
    differences: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartitionOffsets:
    """One partition's end offset and, when a group was asked about, its committed offset/lag.

    ``committed`` is None when no group was asked about, -1 when the group never committed on
    this partition.
    """

    partition: int
    high_watermark: int
    committed: int | None = None

    @property
    def lag(self) -> int | None:
        """Messages not yet committed by the group (all of them if it never committed)."""
        if self.committed is None:
            return None
        return max(self.high_watermark - max(self.committed, 0), 0)


@dataclass(frozen=True)
class TopicDescription:
    """A topic as the cluster has it: partitions, the configs we care about, offsets."""

    role: TopicRole
    name: str
    exists: bool
    config: Mapping[str, str] = field(default_factory=dict)
    partitions: tuple[PartitionOffsets, ...] = ()


class TopicAdmin:
    """Topic administration against one cluster, through ``confluent_kafka.admin``.

    Every call blocks for at most about ``timeout_s`` per request. Raises ConfigError for settings
    librdkafka refuses, BrokerError when the cluster cannot be reached or refuses a request (with
    the topic and Kafka's reason).
    """

    def __init__(self, settings: KafkaSettings, timeout_s: float = 15.0) -> None:
        self.timeout_s = timeout_s
        try:
            self._admin = AdminClient(settings.client_config())
        except KafkaException as exc:
            raise ConfigError(f"invalid Kafka settings: {_reason(exc)}") from exc
        self._bootstrap = settings.bootstrap_servers
        self._settings = settings

    def partition_counts(
        self, names: Collection[str], wait_for_all: bool = False
    ) -> dict[str, int]:
        """Partition count of each named topic that exists (absent names are left out).

        A topic created a moment ago may be listed with no partitions yet (leaders still being
        elected), or, with ``wait_for_all``, not be listed yet at all: such names are asked about
        again until ``timeout_s`` has passed, then BrokerError.
        """
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                metadata = self._admin.list_topics(timeout=self.timeout_s)
            except KafkaException as exc:
                raise BrokerError(
                    f"cannot reach Kafka at {self._bootstrap}: {_reason(exc)}"
                ) from exc
            listed = {name: metadata.topics[name] for name in names if name in metadata.topics}
            settling = [
                name
                for name, topic in listed.items()
                if not topic.partitions
                or (topic.error is not None and topic.error.code() in NOT_YET_SERVED)
            ]
            if wait_for_all:
                settling += [name for name in names if name not in listed]
            if not settling:
                return {name: len(topic.partitions) for name, topic in listed.items()}
            if time.monotonic() >= deadline:
                raise BrokerError(f"topics not served yet: {', '.join(sorted(settling))}")
            time.sleep(0.2)

    def topic_configs(self, names: Sequence[str]) -> dict[str, dict[str, str]]:
        """The current value of every config of each named (existing) topic."""
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
        results = self._gather(
            lambda keys: self._admin.describe_configs(keys, request_timeout=self.timeout_s),
            resources,
            lambda resource: f"the config of topic {resource.name}",
        )
        return {
            resource.name: {key: str(entry.value) for key, entry in entries.items()}
            for resource, entries in results.items()
        }

    def ensure(self, specs: Sequence[TopicSpec], replication_factor: int = -1) -> list[TopicReport]:
        """Create the missing topics; report existing ones and how they differ from their spec.

        ``replication_factor`` -1 means the broker's ``default.replication.factor``. A topic
        created concurrently by someone else counts as existing. Nothing existing is altered.
        """
        names = [s.name for s in specs]
        existing = self.partition_counts(names)
        missing = [s for s in specs if s.name not in existing]
        created: set[str] = set()
        if missing:
            new_topics = [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=replication_factor,
                    config=dict(s.config),
                )
                for s in missing
            ]
            futures = self._admin.create_topics(new_topics, request_timeout=self.timeout_s)
            for name, future in futures.items():
                try:
                    future.result(timeout=self.timeout_s)
                    created.add(name)
                except KafkaException as exc:
                    if _code(exc) != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise BrokerError(f"cannot create topic {name}: {_reason(exc)}") from exc
            # A topic someone created just before us may not be in our metadata yet: wait for it.
            existing = self.partition_counts(names, wait_for_all=True)
        configs = self.topic_configs([s.name for s in specs if s.name not in created])
        reports = []
        for spec in specs:
            if spec.name in created:
                reports.append(TopicReport(spec, "created", spec.partitions))
                continue
            actual = existing[spec.name]
            differences = _differences(spec, actual, configs.get(spec.name, {}))
            outcome: Outcome = "differs" if differences else "exists"
            reports.append(TopicReport(spec, outcome, actual, differences))
        return reports

    def describe(
        self, specs: Sequence[TopicSpec], group: str | None = None
    ) -> list[TopicDescription]:
        """Partitions, retention and end offsets of each topic; committed offsets of ``group``."""
        existing = self.partition_counts([s.name for s in specs])
        present = [s for s in specs if s.name in existing]
        configs = self.topic_configs([s.name for s in present])
        partitions = [TopicPartition(s.name, p) for s in present for p in range(existing[s.name])]
        ends = self._end_offsets(partitions)
        committed = self._committed(group, partitions) if group else {}
        described = []
        for spec in specs:
            if spec.name not in existing:
                described.append(TopicDescription(spec.role, spec.name, exists=False))
                continue
            shown = {k: v for k, v in configs[spec.name].items() if k in SHOWN_CONFIGS}
            offsets = tuple(
                PartitionOffsets(
                    p,
                    ends[(spec.name, p)],
                    committed.get((spec.name, p), -1) if group else None,
                )
                for p in range(existing[spec.name])
            )
            described.append(TopicDescription(spec.role, spec.name, True, shown, offsets))
        return described

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Each partition's end offset (high watermark) of ``topic``; BrokerError if absent."""
        partitions = self._partitions_of(topic)
        return {p: end for (_, p), end in self._end_offsets(partitions).items()}

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """``group``'s committed offset per partition of ``topic`` (-1001: never committed)."""
        partitions = self._partitions_of(topic)
        return {p: offset for (_, p), offset in self._committed(group, partitions).items()}

    def _partitions_of(self, topic: str) -> list[TopicPartition]:
        count = self.partition_counts([topic]).get(topic)
        if count is None:
            raise BrokerError(f"topic {topic!r} does not exist")
        return [TopicPartition(topic, p) for p in range(count)]

    def _end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[tuple[str, int], int]:
        def request(keys: list[TopicPartition]) -> dict[TopicPartition, Future[Any]]:
            latest = {tp: OffsetSpec.latest() for tp in keys}  # type: ignore[no-untyped-call]
            futures: dict[TopicPartition, Future[Any]] = self._admin.list_offsets(
                latest, request_timeout=self.timeout_s
            )
            return futures

        results = self._gather(
            request, list(partitions), lambda tp: f"the end offset of {tp.topic}[{tp.partition}]"
        )
        return {(tp.topic, tp.partition): int(info.offset) for tp, info in results.items()}

    def _gather(
        self,
        request: Callable[[list[K]], Mapping[K, Future[Any]]],
        keys: list[K],
        what: Callable[[K], str],
    ) -> dict[K, Any]:
        """Run a per-key admin request, asking again for keys the cluster does not serve yet.

        A topic created a moment ago is listed before every broker serves it (metadata
        propagation), so "unknown topic" and "leader not available" are retried until
        ``timeout_s`` has passed; any other error, or the deadline, raises BrokerError.
        """
        deadline = time.monotonic() + self.timeout_s
        results: dict[K, Any] = {}
        pending = keys
        while pending:
            retry: list[K] = []
            for key, future in request(pending).items():
                try:
                    results[key] = future.result(timeout=self.timeout_s)
                except KafkaException as exc:
                    if _code(exc) in NOT_YET_SERVED and time.monotonic() < deadline:
                        retry.append(key)
                        continue
                    raise BrokerError(f"cannot read {what(key)}: {_reason(exc)}") from exc
            pending = retry
            if pending:
                time.sleep(0.2)
        return results

    def _committed(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[tuple[str, int], int]:
        """Committed offsets of ``group`` (-1001 where it never committed).

        Read through a consumer that never joins the group (no subscribe, no assign), not the
        admin ListConsumerGroupOffsets call: librdkafka 2.16 can crash the process on that call
        while the group coordinator is still loading (librdkafka's admin OffsetFetch handler
        has no consumer group to re-route NOT_COORDINATOR to).
        """
        if not partitions:
            return {}
        never_commit: dict[str, str | bool] = {
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
        config = self._settings.client_config(**never_commit)
        consumer = Consumer(config)
        try:
            offsets = consumer.committed(list(partitions), timeout=self.timeout_s)
        except KafkaException as exc:
            raise BrokerError(
                f"cannot read committed offsets of group {group}: {_reason(exc)}"
            ) from exc
        finally:
            consumer.close()
        for tp in offsets:
            if tp.error is not None:
                raise BrokerError(
                    f"cannot read the committed offset of group {group} on "
                    f"{tp.topic}[{tp.partition}]: {tp.error.str()}"
                )
        return {(tp.topic, tp.partition): int(tp.offset) for tp in offsets}


def _differences(spec: TopicSpec, partitions: int, config: Mapping[str, str]) -> tuple[str, ...]:
    found = []
    if partitions != spec.partitions:
        found.append(f"{partitions} partitions (spec {spec.partitions})")
    for key, wanted in spec.config.items():
        actual = config.get(key)
        if actual is not None and actual != wanted:
            found.append(f"{key}={actual} (spec {wanted})")
    return tuple(found)


def _code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return int(error.code()) if isinstance(error, KafkaError) else None


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        return str(error.str())
    return str(exc)
