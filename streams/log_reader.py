"""Reading a topic from given positions to the end it had when reading began.

Three parts of the product read a log "to its end": every scorer replays the control log before it
scores, ``sentinel drift report`` reads every snapshot, ``sentinel control`` reads recent
control-events. The end is the high watermark taken *before* reading, so records published
meanwhile are left for whoever follows the log live. Consumers here are assigned partitions,
never subscribed: no group is joined and nothing is committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

from schemas.errors import BrokerError

POLL_TIMEOUT_S = 0.2
WATERMARK_TIMEOUT_S = 15.0


def read_to_end(
    consumer: Consumer,
    topic: str,
    handle: Callable[[Message], object],
    *,
    start: Mapping[int, int] | None = None,
    idle_timeout_s: float = 30.0,
) -> int:
    """Read ``topic`` from ``start`` (partition -> offset, or OFFSET_BEGINNING / OFFSET_END;
    default: every partition from its first record) up to the high watermarks of now, calling
    ``handle`` for each record in partition order; return how many were read.

    Leaves ``consumer`` assigned and positioned at those ends, so the caller can go on following
    the log. Raises BrokerError when nothing arrives for ``idle_timeout_s`` before the end is
    reached or the broker reports an error other than end-of-partition; exceptions from
    ``handle`` propagate.
    """
    if start is None:
        metadata = consumer.list_topics(topic, timeout=WATERMARK_TIMEOUT_S).topics[topic]
        start = dict.fromkeys(metadata.partitions, OFFSET_BEGINNING)
    ends: dict[int, int] = {}
    for partition in start:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=WATERMARK_TIMEOUT_S
        )
        wanted = start[partition]
        if wanted == OFFSET_END:
            continue
        first = low if wanted == OFFSET_BEGINNING else max(wanted, low)
        if high > first:
            ends[partition] = high
    consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    read = 0
    last_progress = time.monotonic()
    while ends:
        message = consumer.poll(POLL_TIMEOUT_S)
        if message is None or message.error() is not None:
            error = None if message is None else message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise BrokerError(f"reading {topic!r}: {error}")
            if error is not None and message is not None:
                # At the end (consumers with enable.partition.eof): done even if the last
                # offsets below the watermark were transaction markers, not records.
                ends.pop(message.partition() or 0, None)
            if time.monotonic() - last_progress > idle_timeout_s:
                raise BrokerError(
                    f"reading {topic!r} stalled for {idle_timeout_s:g} s with partitions "
                    f"{sorted(ends)} not read to their end"
                )
            continue
        at_partition, at_offset = message.partition(), message.offset()
        if at_partition is None or at_offset is None or at_partition not in ends:
            continue
        handle(message)
        read += 1
        last_progress = time.monotonic()
        if at_offset + 1 >= ends[at_partition]:
            del ends[at_partition]
    return read
