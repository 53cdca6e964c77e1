"""Configuration objects shared across the scorer: validated once, frozen, passed in.

Environment variables are read only in ``streams.cli``; everything here receives values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Final, Literal, get_args

from schemas.errors import ConfigError

# librdkafka settings Sentinel sets itself and refuses from ``--kafka-config``: where the cluster
# is, the delivery guarantees (commit only after acks, read committed, idempotent acks=all, room
# for DLQ records), what the group flags set, and the statistics the health check reads.
# Everything else passes through untouched (security, tuning), and a user's value wins over the
# scorer's tuning defaults (pre-fetch, fetch sizes, linger, compression, batching).
OWNED_KAFKA_SETTINGS = frozenset(
    {
        "bootstrap.servers",
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "isolation.level",
        "transactional.id",
        "acks",
        "enable.idempotence",
        "message.max.bytes",
        "statistics.interval.ms",
        "group.protocol",
        "group.instance.id",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
    }
)
ConfigValue = str | int | float | bool

SECRET_MARKERS = ("password", "secret", "sasl.oauthbearer.config", "ssl.key")


# A DLQ record carries the original bytes untouched plus headers naming the error, source topic,
# partition and offset (and the original headers): twice the input limit leaves ample room.
# The scorer's DLQ producer must allow this size too (librdkafka ``message.max.bytes``).
TRANSACTIONS_MAX_MESSAGE_BYTES: Final[int] = 1_048_576  # Kafka's default record-batch limit
DLQ_MAX_MESSAGE_BYTES: Final[int] = 2 * TRANSACTIONS_MAX_MESSAGE_BYTES

# The six topic roles: the one list every flag, spec and prefix is derived from.
TopicRole = Literal["transactions", "decisions", "drift", "control", "control_events", "dlq"]
TOPIC_ROLES: Final[tuple[TopicRole, ...]] = get_args(TopicRole)


@dataclass(frozen=True)
class TopicNames:
    """The product's topics by role (defaults from the brief; every one configurable)."""

    transactions: str = "transactions"
    decisions: str = "decisions"
    drift: str = "drift"
    control: str = "control"
    control_events: str = "control-events"
    dlq: str = "transactions-dlq"

    def __post_init__(self) -> None:
        names = [getattr(self, f.name) for f in fields(self)]
        if any(not n for n in names):
            raise ConfigError("topic names must not be empty")
        if len(set(names)) != len(names):
            raise ConfigError(f"topic names must be distinct, got {names}")
        if tuple(f.name for f in fields(self)) != TOPIC_ROLES:
            raise ConfigError("internal error: TopicNames fields differ from TOPIC_ROLES")

    def name(self, role: TopicRole) -> str:
        """The topic name of ``role``."""
        name: str = getattr(self, role)
        return name

    def prefixed(self, prefix: str) -> TopicNames:
        """Every topic name with ``prefix`` in front (the demo's per-run topics)."""
        return replace(self, **{role: prefix + self.name(role) for role in TOPIC_ROLES})


@dataclass(frozen=True)
class KafkaSettings:
    """Where the cluster is, plus raw librdkafka settings passed through (ssl.*, sasl.*, ...).

    ``repr`` hides secret values so settings can be logged.
    """

    bootstrap_servers: str
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = sorted(OWNED_KAFKA_SETTINGS & set(self.extra))
        if clash:
            raise ConfigError(f"these Kafka settings are managed by Sentinel, not passed: {clash}")

    def client_config(
        self,
        overrides: Mapping[str, ConfigValue] | None = None,
        defaults: Mapping[str, ConfigValue] | None = None,
        /,
        **keywords: ConfigValue,
    ) -> dict[str, ConfigValue]:
        """A confluent-kafka config dict: bootstrap + pass-through settings + overrides.

        ``overrides`` (a mapping with librdkafka's dotted names, or keywords with ``_`` for
        ``.``: ``enable_idempotence=True``) replace everything; ``defaults`` are tuning values
        the pass-through settings replace.
        """
        config: dict[str, ConfigValue] = {"bootstrap.servers": self.bootstrap_servers}
        config.update(defaults or {})
        config.update(self.extra)
        config.update(overrides or {})
        config.update({k.replace("_", "."): v for k, v in keywords.items()})
        return config

    def __repr__(self) -> str:
        shown = {
            k: ("***" if any(m in k for m in SECRET_MARKERS) else v) for k, v in self.extra.items()
        }
        return f"KafkaSettings(bootstrap_servers={self.bootstrap_servers!r}, extra={shown})"


def parse_kafka_settings(pairs: list[str], what: str = "Kafka") -> dict[str, str]:
    """Parse ``KEY=VALUE`` pass-through settings (librdkafka's, or the registry client's with
    ``what``); ConfigError names a malformed one."""
    settings: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} setting {pair!r} is not KEY=VALUE")
        settings[key.strip()] = value
    return settings
