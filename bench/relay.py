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
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streams.config import KafkaSettings, TopicNames
from streams.scoring import _messages
from streams.scoring.delivery import CommitTracker, PendingBatch
from streams.scoring.loop import ScorerConfig, read_consumed

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
    while not stop.is_set():
        messages = consumer.consume(config.max_batch, timeout=config.max_wait_s)
        if messages:
            relayed += _forward(messages, config.topics, producer, tracker)
        if len(tracker):
            tracker.commit_ready()
    tracker.drain()
    consumer.close()
    return relayed


def _forward(
    messages: list[Message], topics: TopicNames, producer: Producer, tracker: CommitTracker
) -> int:
    """Produce a consumed batch's raw records to the sink; its offsets commit once acked.

    The scorer's own per-message plumbing (``read_consumed``, C ``offset_bounds`` and
    ``produce_dicts``), so the floor costs no more than it has to."""
    messages, values, partitions, offsets = read_consumed(messages)
    if not messages:
        return 0
    pending = PendingBatch(
        _messages.offset_bounds(topics.transactions, partitions, offsets)[1], np.empty(0, np.int64)
    )
    pending.outstanding = len(messages)
    keys = [m.key() for m in messages]  # the scorer's come from the decoded card ids
    producer.produce_batch(
        topics.decisions, _messages.produce_dicts(values, keys), on_delivery=pending.on_delivery
    )
    tracker.add(pending)
    return len(messages)


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
