"""The latency floor: a pass-through relay with the scorer's Kafka clients and delivery rules.

consume a micro-batch -> produce the raw bytes (one ``produce_batch``) -> commit once the broker
acknowledged them: the scorer's loop without decoding, scoring, encoding or drift, with the same
consumer and producer settings (:meth:`ScorerConfig.consumer_settings` / ``producer_settings``),
the same batch cap and wait, and the same :class:`~streams.scoring.delivery.CommitTracker`. What
it costs from event to "consumed downstream" is what Kafka itself costs on the machine through
two hops; ``bench/run_all.py`` reports the scorer's latency beside it.

    python -m bench.relay --bootstrap-servers HOST:PORT --source TOPIC --sink TOPIC --group G
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.config import KafkaSettings, TopicNames
from streams.scoring.delivery import CommitTracker, PendingBatch
from streams.scoring.loop import ScorerConfig

log = logging.getLogger("bench.relay")


def relay(config: ScorerConfig, stop: threading.Event) -> int:
    """Relay ``config.topics.transactions`` to ``config.topics.decisions`` until ``stop``."""
    consumer = Consumer(config.consumer_settings())
    producer = Producer(config.producer_settings())
    tracker = CommitTracker(consumer, producer)
    relayed = 0

    def assigned(_: Consumer, partitions: list[TopicPartition]) -> None:
        print(f"relay assigned partitions {[p.partition for p in partitions]}", flush=True)

    consumer.subscribe([config.topics.transactions], on_assign=assigned)
    sink, no_events = config.topics.decisions, np.empty(0, dtype=np.int64)
    while not stop.is_set():
        messages = consumer.consume(config.max_batch, timeout=config.max_wait_s)
        if messages:
            next_offsets: dict[tuple[str, int], int] = {}
            for m in messages:
                next_offsets[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
            pending = PendingBatch(next_offsets, no_events)
            pending.outstanding = len(messages)
            producer.produce_batch(
                sink,
                [{"value": m.value(), "key": m.key()} for m in messages],
                on_delivery=pending.on_delivery,
            )
            tracker.add(pending)
            relayed += len(messages)
        if len(tracker):
            tracker.commit_ready()
    tracker.drain()
    consumer.close()
    return relayed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args()
    config = ScorerConfig(
        kafka=KafkaSettings(args.bootstrap_servers),
        topics=TopicNames(transactions=args.source, decisions=args.sink),
        scorer_id="relay",
        group_id=args.group,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    relayed = relay(config, stop)
    print(f"relayed {relayed} messages", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
