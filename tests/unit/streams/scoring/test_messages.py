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
