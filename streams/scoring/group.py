"""How a scorer takes part in its consumer group: the failover settings, validated once.

Measured trade-off (docs/reliability.md): the classic protocol with cooperative-sticky
assignment and a 6 s session timeout moves a killed member's partitions in ~6-8 s on a broker
with default settings; KIP-848 keeps the session timeout on the broker (45 s by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.errors import ConfigError

GroupProtocol = Literal["classic", "consumer"]
# With KIP-848 (group.protocol=consumer) the broker owns these; librdkafka refuses them.
BROKER_OWNED_WITH_KIP848 = frozenset(
    {"session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy"}
)


@dataclass(frozen=True)
class GroupSettings:
    """How this member takes part in its consumer group (the failover trade-off, see
    docs/reliability.md).

    ``classic`` with a 6 s session timeout is the default: a killed member's partitions move
    after ~6-8 s on any broker with default settings. ``consumer`` (KIP-848) moves the session
    timeout to the broker (``group.consumer.session.timeout.ms``, 45 s by default, never below
    ``group.consumer.min.session.timeout.ms``). ``instance_id`` turns on static membership: a
    restarted instance gets its partitions back without a rebalance, but a stopped or killed
    one keeps them, undecided, for the whole session timeout.
    """

    protocol: GroupProtocol = "classic"
    session_timeout_ms: int = 6_000
    heartbeat_interval_ms: int = 1_500
    instance_id: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in ("classic", "consumer"):
            raise ConfigError(f"group protocol must be classic or consumer, got {self.protocol!r}")
        if not 1_000 <= self.session_timeout_ms <= 3_600_000:
            raise ConfigError(
                f"session timeout must be 1000..3600000 ms, got {self.session_timeout_ms}"
            )
        if not 0 < self.heartbeat_interval_ms < self.session_timeout_ms:
            raise ConfigError("heartbeat interval must be > 0 and below the session timeout")
        if self.instance_id == "":
            raise ConfigError("group instance id must not be empty (omit it to disable)")

    def client_config(self) -> dict[str, str | int]:
        """The librdkafka settings for this protocol (KIP-848: only what the client may set)."""
        config: dict[str, str | int] = {"group.protocol": self.protocol}
        if self.protocol == "classic":
            config.update(
                {
                    "partition.assignment.strategy": "cooperative-sticky",
                    "session.timeout.ms": self.session_timeout_ms,
                    "heartbeat.interval.ms": self.heartbeat_interval_ms,
                }
            )
        if self.instance_id:
            config["group.instance.id"] = self.instance_id
        return config
