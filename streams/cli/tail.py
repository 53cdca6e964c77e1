"""``sentinel tail decisions|drift|control-events|dlq``: print a topic's records readably."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Message, TopicPartition

from schemas.confluent import WriterLookup
from streams.cli._args import (
    add_kafka_flags,
    add_registry_flags,
    add_topic_flags,
    kafka_settings,
    registry_settings,
    topic_names,
)

TOPIC_ROLE = {
    "decisions": "decisions",
    "drift": "drift",
    "control-events": "control_events",
    "dlq": "dlq",
}


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "tail",
        help="print records of decisions, drift, control-events or the DLQ",
        description=(
            "Read a Sentinel topic without joining any consumer group and print it. Decisions "
            "and drift snapshots may be single-object or (with --schema-registry-url) "
            "Confluent-framed."
        ),
    )
    parser.add_argument("what", choices=sorted(TOPIC_ROLE), help="which topic")
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    parser.add_argument("-n", "--count", type=int, default=None, help="stop after N records")
    parser.add_argument(
        "--idle-timeout", type=float, default=None, help="stop after S seconds without a record"
    )
    add_kafka_flags(parser)
    add_topic_flags(parser)
    add_registry_flags(parser)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    topic = getattr(topic_names(args), TOPIC_ROLE[args.what])
    consumer = Consumer(
        kafka_settings(args).client_config(
            {
                "group.id": "sentinel-tail",
                "enable.auto.commit": False,
            }
        )
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    if metadata.error is not None:
        consumer.close()
        from schemas.errors import ConfigError

        raise ConfigError(f"topic {topic!r}: {metadata.error.str()}")
    start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in metadata.partitions])
    render = RENDERERS[args.what]
    settings = registry_settings(args)
    registry: WriterLookup | None = None
    if settings is not None:
        from streams.registry import SchemaRegistry

        registry = SchemaRegistry(settings)
    shown, last_seen = 0, time.monotonic()
    try:
        while args.count is None or shown < args.count:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                if args.idle_timeout and time.monotonic() - last_seen > args.idle_timeout:
                    break
                continue
            last_seen = time.monotonic()
            print(render(msg, registry), flush=True)
            shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def render_decision(msg: Message, registry: WriterLookup | None = None) -> str:
    from schemas.decision_codec import decode_decision

    d = decode_decision(msg.value() or b"", registry)
    return (
        f"{d['decision']:<6} p={d['fraud_probability']:.4f} card={d['card_id']} "
        f"tx={d['transaction_id']} model={d['model_version']}/{d['variant']} "
        f"cache={'hit' if d['cache_hit'] else 'miss'} latency={d['latency_ms']:.1f}ms "
        f"src={d['source_topic']}[{d['source_partition']}]@{d['source_offset']}"
    )


def render_dlq(msg: Message, registry: WriterLookup | None = None) -> str:
    headers = {
        k: v.decode(errors="replace") if isinstance(v, bytes) else str(v)
        for k, v in list(msg.headers() or [])
        if v is not None
    }
    value = msg.value() or b""
    h = headers.get
    return (
        f"{h('sentinel.error.kind', '?'):<16} {h('sentinel.error.reason', '')} | from "
        f"{h('sentinel.source.topic')}[{h('sentinel.source.partition')}]"
        f"@{h('sentinel.source.offset')} | {len(value)} bytes: {value[:48]!r}"
    )


def render_drift(msg: Message, registry: WriterLookup | None = None) -> str:
    from schemas.drift_codec import decode_snapshot

    s = decode_snapshot(msg.value() or b"", registry)
    drifted = ", ".join(s.drifted_features) or "none"
    return (
        f"{s.scorer_id} model={s.model_version} n={s.count:,} drifted={drifted} "
        f"prediction_psi={s.prediction.psi:.3f}"
    )


def render_event(msg: Message, registry: WriterLookup | None = None) -> str:
    return json.dumps(json.loads(msg.value() or b"{}"), separators=(",", ":"))


RENDERERS = {
    "decisions": render_decision,
    "dlq": render_dlq,
    "drift": render_drift,
    "control-events": render_event,
}
