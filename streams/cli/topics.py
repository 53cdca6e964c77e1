"""``sentinel topics create|describe``: the product's topics, created idempotently and inspected."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from streams.cli._args import (
    add_kafka_flags,
    add_topic_flags,
    env_flag,
    kafka_settings,
    positive_int,
    topic_names,
)
from streams.tools.topics import DEFAULT_PARTITIONS, TopicAdmin, TopicDescription, topic_specs


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "topics",
        help="create or describe the product's Kafka topics",
        description=(
            "Create the six topics (transactions, decisions, drift, control, control-events, "
            "transactions-dlq) with their partition counts and retention, or describe them. "
            "Creating is idempotent: existing topics are reported and never changed."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="create missing topics; report existing ones and any difference from the spec",
        description=(
            "Create missing topics. control: 1 partition, kept forever; control-events: 1, 7 days; "
            "drift: 1, 30 days; transactions-dlq: 3, 30 days, 2 MiB records; transactions and "
            "decisions: --partitions each, 7 days. A topic whose partition count or config differs "
            "from this is reported, not altered."
        ),
    )
    env_flag(
        create,
        "--partitions",
        "SENTINEL_TOPIC_PARTITIONS",
        DEFAULT_PARTITIONS,
        "partitions of the transactions and decisions topics (the scorer's parallelism)",
        type=positive_int,
    )
    create.add_argument(
        "--replication-factor",
        type=positive_int,
        default=None,
        help="replicas per partition [default: the broker's default.replication.factor]",
    )
    describe = actions.add_parser(
        "describe",
        help="print partitions, retention and end offsets; committed offsets and lag of --group",
        description=(
            "Print each topic's partitions, retention and end offsets; with --group, the group's "
            "committed offset and lag on each partition. Exits 1 if a topic is missing."
        ),
    )
    env_flag(
        describe,
        "--group",
        "SENTINEL_GROUP_ID",
        None,
        "consumer group whose committed offsets and lag to show",
    )
    for sub in (create, describe):
        add_kafka_flags(sub)
        add_topic_flags(sub)
    create.set_defaults(run=_create)
    describe.set_defaults(run=_describe)


def _create(args: argparse.Namespace) -> int:
    specs = topic_specs(topic_names(args), args.partitions)
    admin = TopicAdmin(kafka_settings(args))
    for report in admin.ensure(specs, replication_factor=args.replication_factor or -1):
        line = f"{report.outcome:<8} {report.spec.name:<24} {report.partitions} partitions"
        if report.outcome == "created":
            line += "  " + " ".join(f"{k}={v}" for k, v in sorted(report.spec.config.items()))
        if report.differences:
            line += "  differs from spec, not changed: " + "; ".join(report.differences)
        print(line)
    return 0


def _describe(args: argparse.Namespace) -> int:
    specs = topic_specs(topic_names(args))
    admin = TopicAdmin(kafka_settings(args))
    described = admin.describe(specs, group=args.group)
    for topic in described:
        _print_topic(topic, args.group)
    missing = [t.name for t in described if not t.exists]
    if missing:
        print(f"missing topics: {', '.join(missing)} (run 'sentinel topics create')")
        return 1
    return 0


def _print_topic(topic: TopicDescription, group: str | None) -> None:
    if not topic.exists:
        print(f"{topic.name}: missing")
        return
    retention = _retention(topic.config)
    print(f"{topic.name}: {len(topic.partitions)} partitions, retention {retention}")
    extra = {k: v for k, v in topic.config.items() if not k.startswith("retention.")}
    if extra:
        print("  " + " ".join(f"{k}={v}" for k, v in sorted(extra.items())))
    header = f"  {'partition':>9} {'end':>12}"
    if group:
        header += f" {'committed':>12} {'lag':>10}"
    print(header)
    total_lag = 0
    for offsets in topic.partitions:
        row = f"  {offsets.partition:>9} {offsets.high_watermark:>12}"
        if group:
            committed = (
                "-" if offsets.committed is None or offsets.committed < 0 else offsets.committed
            )
            lag = offsets.lag or 0
            total_lag += lag
            row += f" {committed!s:>12} {lag:>10}"
        print(row)
    if group:
        print(f"  group {group}: total lag {total_lag}")


def _retention(config: Mapping[str, str]) -> str:
    ms = int(config.get("retention.ms", "-1"))
    size = int(config.get("retention.bytes", "-1"))
    if ms < 0 and size < 0:
        return "forever"
    parts = []
    if ms >= 0:
        days = ms / 86_400_000
        parts.append(f"{days:g} days" if ms % 3_600_000 == 0 else f"{ms} ms")
    if size >= 0:
        parts.append(f"{size} bytes")
    return " or ".join(parts)
