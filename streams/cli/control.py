"""``sentinel control reload|ab-setup|ab-split|promote|abort|status``: steer the scorer fleet.

Publishes one command on the control topic (signed with ``SENTINEL_CONTROL_KEY`` when set), finds
the live instances from their heartbeats on control-events, waits a bounded time for each one's
ack of that command, and prints one row per instance. Exit 0 only if every live instance
applied it; 1 if any refused it or did not answer, or if no instance is live (then nothing is
published: a command nobody applies now would still be applied by every future instance).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, Message, Producer, TopicPartition

from schemas.errors import BrokerError, ConfigError
from streams.cli._args import (
    add_kafka_flags,
    add_topic_flags,
    env_flag,
    kafka_settings,
    positive_float,
    topic_names,
)
from streams.config import ConfigValue, KafkaSettings, TopicNames

LIVE_WINDOW_S = 10.0
POLL_S = 0.2

ACTIONS: dict[str, tuple[str, str]] = {
    "reload": ("reload", "every instance re-reads models/current as variant A (B is kept)"),
    "ab-setup": ("ab_setup", "load models/VERSION as candidate B, routing no cards to it yet"),
    "ab-split": ("ab_split", "route PERCENT percent of cards (sticky by card id) to B"),
    "promote": ("promote", "B becomes A; B cleared, split 0"),
    "abort": ("abort", "discard B; all traffic to A"),
    "status": ("status", "print each instance's state and per-variant decision counts"),
}


def percent_arg(text: str) -> int:
    """An integer 0..100 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer 0-100, got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be within 0-100, got {value}")
    return value


def register(commands: Any) -> None:
    """Add ``sentinel control ACTION`` (one sub-command per control command) to ``commands``."""
    parser = commands.add_parser(
        "control",
        help="steer every scorer instance: reload, A/B setup/split, promote, abort, status",
        description=(
            "Publish a command on the control topic (signed with SENTINEL_CONTROL_KEY when set), "
            "wait for the ack of every live scorer instance (known from heartbeats on "
            "control-events in the last 10 s) and print one row per instance. Exit 0 only if "
            "every live instance applied it; 1 if any refused or did not answer, or if no "
            "instance is live (then nothing is published)."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, (command, text) in ACTIONS.items():
        sub = actions.add_parser(
            action,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. The command is signed with the key in "
            "SENTINEL_CONTROL_KEY when that is set (required when the scorers have a key).",
        )
        if command == "ab_setup":
            sub.add_argument("version", metavar="VERSION", help="model version, e.g. v2")
        if command == "ab_split":
            sub.add_argument("percent", metavar="PERCENT", type=percent_arg, help="0-100")
        add_kafka_flags(sub)
        add_topic_flags(sub)
        env_flag(
            sub, "--timeout", "SENTINEL_CONTROL_TIMEOUT", 15.0,
            "seconds to wait for every live instance's ack", type=positive_float,
        )  # fmt: skip
        env_flag(
            sub, "--issuer", "SENTINEL_CONTROL_ISSUER", _default_issuer(),
            "who issues the command (recorded in the control log)",
        )  # fmt: skip
        sub.set_defaults(run=_run, command_name=command)


def _default_issuer() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _run(args: argparse.Namespace) -> int:
    from streams.control.commands import new_command

    name: str = args.command_name
    command_args: dict[str, str | int] = {}
    if name == "ab_setup":
        command_args["candidate_version"] = args.version
    elif name == "ab_split":
        command_args["percent"] = args.percent
    key = os.environ.get("SENTINEL_CONTROL_KEY")  # the secret is read here and never printed
    command = new_command(name, command_args, args.issuer, key.encode() if key else None)
    fleet = Fleet(kafka_settings(args), topic_names(args))
    try:
        live = fleet.live_instances()
        if not live:
            print(
                f"no live scorer instance: no heartbeat on {fleet.topics.control_events!r} in the "
                f"last {LIVE_WINDOW_S:.0f} s; nothing published"
            )
            return 1
        offset = fleet.publish(command.encode())
        print(f"{name} {command.command_id} published at control offset {offset}")
        acks = fleet.wait_for_acks(command.command_id, set(live), args.timeout)
    finally:
        fleet.close()
    _print_acks(live, acks, fleet.latest)
    if name == "status":
        _print_counts(fleet.stats)
    missing = sorted(set(live) - set(acks))
    refused = sorted(s for s, ack in acks.items() if ack.get("result") != "ok")
    if missing:
        print(f"no answer within {args.timeout:g} s from: {', '.join(missing)}")
    if refused:
        print(f"refused by: {', '.join(refused)}")
    return 1 if missing or refused else 0


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
            "group.id": f"sentinel-control-cli-{os.getpid()}",  # assign() only: never joins
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
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1]
                for p in info.partitions}  # fmt: skip
        positions = [
            TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
            for tp in starts
        ]
        consumer.assign(positions)
        next_offset = {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition]
                       for tp in starts}  # fmt: skip
        deadline = time.monotonic() + 15
        while any(next_offset[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            message = consumer.poll(POLL_S)
            if message is None or message.error() is not None:
                continue
            next_offset[_partition(message)] = _offset(message) + 1
            self._record(message.value())
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


def _print_acks(
    live: list[str], acks: Mapping[str, Mapping[str, Any]], latest: Mapping[str, Mapping[str, Any]]
) -> None:
    rows: list[tuple[str, ...]] = [("SCORER", "RESULT", "A", "B", "SPLIT", "APPLIED", "REASON")]
    for scorer in sorted(set(live) | set(acks)):
        ack = acks.get(scorer)
        state = (ack or latest.get(scorer) or {}).get("state") or {}
        result = str(ack.get("result")) if ack else "no answer"
        reason = str(ack.get("reason") or "-") if ack else "-"
        rows.append(
            (
                scorer,
                result,
                str(state.get("a_version", "?")),
                str(state.get("b_version") or "-"),
                f"{state.get('split_percent', '?')}%",
                str(state.get("applied_offset", "?")),
                reason,
            )
        )
    _print_table(rows)


def _print_counts(stats: Mapping[str, Mapping[str, Any]]) -> None:
    """Per-variant decision counts from each instance's latest heartbeat, and fleet totals.

    The scorer's stats are ``{"<variant>/<version>/<outcome>": count}``.
    """
    per_instance: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    for scorer, counters in sorted(stats.items()):
        for key, count in counters.items():
            parts = str(key).split("/")
            if len(parts) == 3 and isinstance(count, int):
                cell = per_instance[(scorer, parts[0], parts[1])]
                cell[parts[2]] = cell.get(parts[2], 0) + count
    if not per_instance:
        print("no decision counts in the latest heartbeats yet")
        return
    outcomes = ("ALLOW", "REVIEW", "BLOCK")
    rows: list[tuple[str, ...]] = [("SCORER", "VARIANT", "VERSION", *outcomes, "TOTAL")]
    totals: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for (scorer, variant, version), counts in sorted(per_instance.items()):
        rows.append((scorer, variant, version, *(str(counts.get(o, 0)) for o in outcomes),
                     str(sum(counts.values()))))  # fmt: skip
        for outcome, count in counts.items():
            totals[(variant, version)][outcome] = totals[(variant, version)].get(outcome, 0) + count
    for (variant, version), counts in sorted(totals.items()):
        rows.append(("(fleet)", variant, version, *(str(counts.get(o, 0)) for o in outcomes),
                     str(sum(counts.values()))))  # fmt: skip
    print()
    _print_table(rows)


def _offset(message: Message) -> int:
    offset = message.offset()
    assert offset is not None  # set on every consumed or delivered message
    return offset


def _partition(message: Message) -> int:
    partition = message.partition()
    assert partition is not None
    return partition


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
