"""Argument-parsing helpers shared by every command group.

Every flag that an environment variable can set is declared with :func:`env_flag`, so ``--help``
names the variable and the default, and the variable is read in exactly one place.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any


class SentinelArgumentParser(argparse.ArgumentParser):
    """argparse with sub-parsers of the same class (so errors print the same one-line way)."""


def env_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    env: str,
    default: Any,
    help: str,
    type: Callable[[str], Any] = str,
    **kwargs: Any,
) -> None:
    """Add ``flag`` whose default comes from environment variable ``env`` if set.

    A malformed environment value is reported like a malformed flag.
    """
    raw = os.environ.get(env)
    value = default
    if raw is not None and raw != "":
        try:
            value = type(raw)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            parser.error(f"environment variable {env}={raw!r} is invalid: {exc}")
    shown = "none" if default is None else default
    parser.add_argument(
        flag, default=value, type=type, help=f"{help} [env {env}; default {shown}]", **kwargs
    )


BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


def external_bootstrap() -> str | None:
    """The user's Kafka cluster from ``KAFKA_BOOTSTRAP_SERVERS``, or None (then tools may start
    the local dev broker). The one place that reads the variable outside argparse defaults."""
    return os.environ.get(BOOTSTRAP_ENV) or None


def add_bootstrap_flag(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap-servers``: the Kafka cluster to use (empty means the local dev broker)."""
    env_flag(
        parser,
        "--bootstrap-servers",
        BOOTSTRAP_ENV,
        None,
        "Kafka bootstrap servers; unset means the local dev broker started by 'sentinel broker "
        "start'",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def default_issuer(prefix: str = "") -> str:
    """Who issues a control command when no ``--issuer`` is given: ``[prefix]user@host``."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{prefix}{user}@{socket.gethostname()}"


def add_models_dir_flag(parser: argparse.ArgumentParser, help: str = "model bundles") -> None:
    """``--models-dir``: where the versioned bundles and the ``current`` pointer live."""
    env_flag(parser, "--models-dir", "SENTINEL_MODELS_DIR", "models", help)


def control_keys() -> tuple[dict[str, bytes], str | None]:
    """The control-plane signing keys (key id -> secret) and the key id to sign with.

    ``SENTINEL_CONTROL_KEYS`` holds ``id=secret`` pairs, comma-separated (several during a key
    rotation); ``SENTINEL_CONTROL_KEY`` is one secret with key id ``default``;
    ``SENTINEL_CONTROL_KEY_ID`` picks the key to sign with (default: ``default`` if present,
    else the first listed). No keys: commands are unsigned and unsigned commands accepted.
    Raises ConfigError naming a malformed pair or an unknown signing key id, never a secret.
    """
    from schemas.errors import ConfigError

    keys: dict[str, bytes] = {}
    for pair in os.environ.get("SENTINEL_CONTROL_KEYS", "").split(","):
        if not pair.strip():
            continue
        key_id, sep, secret = pair.strip().partition("=")
        if not sep or not key_id or not secret:
            raise ConfigError(f"SENTINEL_CONTROL_KEYS: entry {len(keys) + 1} is not KEY_ID=SECRET")
        keys[key_id] = secret.encode()
    single = os.environ.get("SENTINEL_CONTROL_KEY")
    if single:
        keys["default"] = single.encode()
    chosen = os.environ.get("SENTINEL_CONTROL_KEY_ID") or None
    if chosen is not None and chosen not in keys:
        raise ConfigError(f"SENTINEL_CONTROL_KEY_ID={chosen!r} names no configured key")
    if chosen is None and keys:
        chosen = "default" if "default" in keys else next(iter(keys))
    return keys, chosen


def add_broker_dir_flag(parser: argparse.ArgumentParser) -> None:
    """``--broker-dir``: where the local dev broker keeps its data, logs and ``broker.json``."""
    env_flag(
        parser,
        "--broker-dir",
        "SENTINEL_BROKER_DIR",
        ".sentinel/broker",
        "state directory of the local dev broker",
    )


def resolve_bootstrap(args: argparse.Namespace) -> str:
    """The bootstrap address: the flag/env if given, else the running local dev broker.

    Raises ConfigError with what to do when neither exists.
    """
    from pathlib import Path

    from ops.kafka_broker import LocalBroker
    from schemas.errors import ConfigError

    if args.bootstrap_servers:
        return str(args.bootstrap_servers)
    info = LocalBroker(Path(args.broker_dir)).status()
    if info is None:
        raise ConfigError(
            "no Kafka cluster: set KAFKA_BOOTSTRAP_SERVERS (or --bootstrap-servers), "
            "or start the local dev broker with 'sentinel broker start'"
        )
    return info.bootstrap


def add_kafka_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every command that talks to Kafka takes (use :func:`kafka_settings` to read)."""
    add_bootstrap_flag(parser)
    add_broker_dir_flag(parser)
    parser.add_argument(
        "--kafka-config",
        action="append",
        metavar="KEY=VALUE",
        help="raw librdkafka setting passed through (repeatable), e.g. security.protocol=SSL "
        "[env SENTINEL_KAFKA_CONFIG, comma-separated]",
    )


def topic_env(role: str) -> str:
    """The environment variable that names the topic of ``role``."""
    return f"SENTINEL_TOPIC_{role.upper()}"


def topic_flag(role: str) -> str:
    """The flag that names the topic of ``role`` (``--topic-control-events``)."""
    return f"--topic-{role.replace('_', '-')}"


def add_topic_flags(parser: argparse.ArgumentParser) -> None:
    """``--topic-<role>`` for every product topic (defaults from :class:`TopicNames`)."""
    from streams.config import TOPIC_ROLES, TopicNames

    defaults = TopicNames()
    for role in TOPIC_ROLES:
        env_flag(
            parser,
            topic_flag(role),
            topic_env(role),
            defaults.name(role),
            f"name of the {role.replace('_', '-')} topic",
        )


def topic_names(args: argparse.Namespace) -> Any:
    """The :class:`TopicNames` given by the topic flags."""
    from streams.config import TOPIC_ROLES, TopicNames

    return TopicNames(**{role: getattr(args, f"topic_{role}") for role in TOPIC_ROLES})


def kafka_settings(args: argparse.Namespace) -> Any:
    """The :class:`KafkaSettings` given by the Kafka flags (bootstrap + pass-through settings)."""
    from streams.config import KafkaSettings, parse_kafka_settings

    env_pairs = [p for p in os.environ.get("SENTINEL_KAFKA_CONFIG", "").split(",") if p.strip()]
    extra = parse_kafka_settings(env_pairs + list(args.kafka_config or []))
    return KafkaSettings(bootstrap_servers=resolve_bootstrap(args), extra=extra)


def add_registry_flags(parser: argparse.ArgumentParser) -> None:
    """``--schema-registry-url`` and pass-through client settings (:func:`registry_settings`)."""
    env_flag(
        parser,
        "--schema-registry-url",
        "SENTINEL_SCHEMA_REGISTRY_URL",
        None,
        "Confluent-API schema registry (e.g. http://host:8081, Apicurio: .../apis/ccompat/v7); "
        "set: Confluent-framed Avro (00 + schema id) is decoded",
    )
    parser.add_argument(
        "--schema-registry-config",
        action="append",
        metavar="KEY=VALUE",
        help="raw SchemaRegistryClient setting passed through (repeatable), e.g. "
        "basic.auth.user.info=USER:SECRET, ssl.ca.location=PATH "
        "[env SENTINEL_SCHEMA_REGISTRY_CONFIG, comma-separated]",
    )


def registry_settings(args: argparse.Namespace) -> Any:
    """The :class:`RegistrySettings` given by the registry flags, or None without a URL."""
    from streams.config import parse_kafka_settings
    from streams.registry import RegistrySettings

    env = os.environ.get("SENTINEL_SCHEMA_REGISTRY_CONFIG", "")
    pairs = [p for p in env.split(",") if p.strip()] + list(args.schema_registry_config or [])
    if not args.schema_registry_url:
        if pairs:
            from schemas.errors import ConfigError

            raise ConfigError("schema registry settings given without --schema-registry-url")
        return None
    return RegistrySettings(
        args.schema_registry_url, parse_kafka_settings(pairs, "schema registry")
    )
