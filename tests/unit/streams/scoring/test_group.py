"""Consumer-group settings: the failover defaults, and what KIP-848 leaves to the broker."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer

from schemas.errors import ConfigError
from streams.scoring.group import BROKER_OWNED_WITH_KIP848, GroupSettings


def test_the_default_is_classic_cooperative_with_a_6_s_session() -> None:
    config = GroupSettings().client_config()
    assert config["group.protocol"] == "classic"
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert config["session.timeout.ms"] == 6000
    assert "group.instance.id" not in config


def test_kip848_omits_what_librdkafka_would_refuse_and_librdkafka_accepts_it() -> None:
    config = GroupSettings(protocol="consumer", instance_id="scorer-a").client_config()
    assert not BROKER_OWNED_WITH_KIP848 & config.keys()
    assert config["group.instance.id"] == "scorer-a"
    # librdkafka validates these at construction (no network needed)
    Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "g", **config}).close()
    with pytest.raises(Exception, match="defined broker side"):
        Consumer(
            {
                "bootstrap.servers": "127.0.0.1:1",
                "group.id": "g",
                **config,
                "session.timeout.ms": 6000,
            }
        )


def test_bad_group_settings_are_refused_once() -> None:
    with pytest.raises(ConfigError, match="classic or consumer"):
        GroupSettings(protocol="eager")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="heartbeat"):
        GroupSettings(session_timeout_ms=6000, heartbeat_interval_ms=6000)
    with pytest.raises(ConfigError, match="instance id"):
        GroupSettings(instance_id="")
