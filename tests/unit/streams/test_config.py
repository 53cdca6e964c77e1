"""Configuration objects: refused at construction with a message naming the problem, secrets
never shown."""

from __future__ import annotations

import dataclasses

import pytest

from schemas.errors import ConfigError
from streams.config import (
    OWNED_KAFKA_SETTINGS,
    TOPIC_ROLES,
    KafkaSettings,
    TopicNames,
    parse_kafka_settings,
)


def test_default_topic_names_are_the_briefs() -> None:
    names = TopicNames()
    assert {role: names.name(role) for role in TOPIC_ROLES} == {
        "transactions": "transactions",
        "decisions": "decisions",
        "drift": "drift",
        "control": "control",
        "control_events": "control-events",
        "dlq": "transactions-dlq",
    }


@pytest.mark.parametrize("role", TOPIC_ROLES)
def test_an_empty_topic_name_is_refused(role: str) -> None:
    with pytest.raises(ConfigError, match="must not be empty"):
        TopicNames(**{role: ""})


def test_two_roles_on_one_topic_are_refused_naming_the_names() -> None:
    with pytest.raises(ConfigError, match=r"distinct.*'decisions'.*'decisions'"):
        TopicNames(drift="decisions")


def test_topic_names_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TopicNames().control = "other"  # type: ignore[misc]


def test_prefixed_puts_the_prefix_before_every_name_and_leaves_the_original_alone() -> None:
    names = TopicNames(dlq="dead")
    run = names.prefixed("demo-1-")
    assert [run.name(r) for r in TOPIC_ROLES] == [
        "demo-1-transactions",
        "demo-1-decisions",
        "demo-1-drift",
        "demo-1-control",
        "demo-1-control-events",
        "demo-1-dead",
    ]
    assert names.dlq == "dead" and names.transactions == "transactions"


@pytest.mark.parametrize("key", sorted(OWNED_KAFKA_SETTINGS))
def test_settings_the_scorer_owns_are_refused_naming_them(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"managed by Sentinel.*{key}"):
        KafkaSettings("localhost:9092", {key: "x", "ssl.ca.location": "/ca.pem"})


def test_owned_settings_cover_the_delivery_critical_ones() -> None:
    assert {
        "group.id",
        "enable.auto.commit",
        "bootstrap.servers",
        "acks",
        "enable.idempotence",
        "isolation.level",
    } <= OWNED_KAFKA_SETTINGS


def test_a_passed_through_setting_replaces_a_default_but_not_an_override() -> None:
    settings = KafkaSettings("broker:9092", {"linger.ms": "20", "compression.type": "zstd"})
    config = settings.client_config(
        {"compression.type": "lz4"}, {"linger.ms": 2, "batch.num.messages": 10_000}
    )
    assert config == {
        "bootstrap.servers": "broker:9092",
        "linger.ms": "20",
        "batch.num.messages": 10_000,
        "compression.type": "lz4",
    }


def test_client_config_passes_raw_settings_through_and_applies_overrides() -> None:
    settings = KafkaSettings(
        "broker:9092", {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}
    )
    config = settings.client_config({"group.id": "g"}, enable_idempotence=True, linger_ms=2)
    assert config == {
        "bootstrap.servers": "broker:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "group.id": "g",
        "enable.idempotence": True,
        "linger.ms": 2,
    }
    assert settings.client_config() == {
        "bootstrap.servers": "broker:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
    }


@pytest.mark.parametrize(
    "key",
    ["sasl.password", "ssl.key.password", "ssl.key.pem", "sasl.oauthbearer.config", "x.secret"],
)
def test_secret_values_never_appear_in_repr(key: str) -> None:
    settings = KafkaSettings("broker:9092", {key: "hunter2", "sasl.username": "alice"})
    shown = repr(settings)
    assert "hunter2" not in shown
    assert str(settings) == shown  # logging with %s goes through the same path
    assert "***" in shown and key in shown
    assert "alice" in shown and "broker:9092" in shown  # what is not secret stays visible


def test_parse_kafka_settings_splits_on_the_first_equals_sign() -> None:
    assert parse_kafka_settings(
        ["security.protocol=SSL", " sasl.jaas.config =a=b;c=d", "empty.value="]
    ) == {"security.protocol": "SSL", "sasl.jaas.config": "a=b;c=d", "empty.value": ""}
    assert parse_kafka_settings([]) == {}


@pytest.mark.parametrize("pair", ["security.protocol", "=SSL", "  =SSL", ""])
def test_parse_kafka_settings_names_a_malformed_pair(pair: str) -> None:
    with pytest.raises(ConfigError, match=rf"{pair!r} is not KEY=VALUE"):
        parse_kafka_settings(["acks=all", pair])
