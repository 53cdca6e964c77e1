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
        except (TypeError, ValueError) as exc:
            parser.error(f"environment variable {env}={raw!r} is invalid: {exc}")
    shown = "none" if default is None else default
    parser.add_argument(
        flag, default=value, type=type, help=f"{help} [env {env}; default {shown}]", **kwargs
    )


def add_bootstrap_flag(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap-servers``: the Kafka cluster to use (empty means the local dev broker)."""
    env_flag(
        parser,
        "--bootstrap-servers",
        "KAFKA_BOOTSTRAP_SERVERS",
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
    from streams.errors import ConfigError

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
    """The flags every command that talks to Kafka takes."""
    add_bootstrap_flag(parser)
    add_broker_dir_flag(parser)
