"""The loop's per-message plumbing in C, on confluent-kafka's own Message objects."""

from __future__ import annotations

import numpy as np
import pytest
from confluent_kafka import KafkaError, Message

from streams.scoring import _messages


def consumed(n: int) -> list[Message]:
    return [
        Message(topic="tx", partition=i % 3, offset=10_000_000_000 + i, value=bytes([i]) * i)
        for i in range(n)
    ]


def test_a_batch_reads_as_its_values_partitions_and_offsets_in_order() -> None:
    messages = consumed(50)
    messages.append(Message(topic="tx", partition=2, offset=7, value=None))  # a tombstone
    partitions = np.empty(len(messages), np.int32)
    offsets = np.empty(len(messages), np.int64)
    values = _messages.read_batch(messages, partitions, offsets)
    assert values == [m.value() for m in messages]
    assert partitions.tolist() == [m.partition() for m in messages]
    assert offsets.tolist() == [m.offset() for m in messages]


def test_a_batch_with_a_transport_error_anywhere_is_handed_back() -> None:
    messages = consumed(5)
    messages.insert(3, Message(topic="tx", partition=0, error=KafkaError(KafkaError._TRANSPORT)))
    assert _messages.read_batch(messages, np.empty(6, np.int32), np.empty(6, np.int64)) is None


def test_arrays_too_short_for_the_batch_are_refused() -> None:
    with pytest.raises(ValueError, match="offsets"):
        _messages.read_batch(consumed(4), np.empty(4, np.int32), np.empty(3, np.int64))
    with pytest.raises(ValueError, match="partitions"):
        _messages.read_batch(consumed(4), np.empty(4, np.int16), np.empty(4, np.int64))


def test_produce_dicts_pair_each_value_with_its_key() -> None:
    values, keys = [b"a", b"bb", b""], [b"card-1", b"card-2", b"card-1"]
    assert _messages.produce_dicts(values, keys) == [
        {"value": v, "key": k} for v, k in zip(values, keys, strict=True)
    ]
    with pytest.raises(ValueError, match="2 values but 3 keys"):
        _messages.produce_dicts(values[:2], keys)


def test_a_list_that_changes_while_it_is_read_is_refused() -> None:
    messages: list[object] = []

    class Shrinking:
        def error(self) -> None:
            messages.pop()

        def value(self) -> bytes:
            return b""

        def partition(self) -> int:
            return 0

        def offset(self) -> int:
            return 0

    messages.extend([Shrinking(), Shrinking()])
    with pytest.raises(RuntimeError, match="changed size"):
        _messages.read_batch(messages, np.empty(2, np.int32), np.empty(2, np.int64))


def test_offset_bounds_per_partition_of_an_interleaved_batch() -> None:
    # librdkafka hands a batch over fetch by fetch: partitions come in runs, each in offset order
    partitions = np.array([3, 0, 0, 3, 5, 0, 3, 0], dtype=np.int32)
    offsets = np.array([70, 10, 11, 71, 5, 12, 72, 2**40], dtype=np.int64)
    first, after = _messages.offset_bounds("tx", partitions, offsets)
    assert first == {("tx", 0): 10, ("tx", 3): 70, ("tx", 5): 5}
    assert after == {("tx", 0): 2**40 + 1, ("tx", 3): 73, ("tx", 5): 6}
    assert _messages.offset_bounds("tx", partitions[:0], offsets[:0]) == ({}, {})


def test_offset_bounds_refuses_arrays_of_another_type_or_length() -> None:
    with pytest.raises(ValueError, match="int32 partitions"):
        _messages.offset_bounds("tx", np.zeros(3, np.int64), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="as many"):
        _messages.offset_bounds("tx", np.zeros(3, np.int32), np.zeros(2, np.int64))
