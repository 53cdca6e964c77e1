"""Hostile input the decoder must refuse: malformed varints, absurd event times, empty ids.

The byte strings are those of issue 13, each scored on main before the fix.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from schemas.avro import record_codec, zigzag_varint
from schemas.avro_binary import MalformedVarint, read_strict_varint
from schemas.errors import ConfigError, PoisonMessage
from schemas.event_time import EventTimeWindow
from schemas.transaction_codec import (
    decode_transactions,
    encode_transaction,
    encode_transaction_json,
)

NOW_MS = 1_764_000_000_000  # a fixed scorer clock (2025-11-24)
SAMPLE: dict[str, Any] = {
    "transaction_id": "tx-0001",
    "card_id": "card-000042",
    "event_time": NOW_MS - 1_500,
    "amount": 149.62,
    "features": [round(0.1 * i - 1.3, 3) for i in range(28)],
}
# event_time varints from the issue: fastavro reads each as a long (the first two as -2**63,
# the third as 32) although none is valid Avro.
MALFORMED_EVENT_TIMES = {
    "ff x11 01 (12 bytes)": b"\xff" * 11 + b"\x01",
    "ff x9 7f (overflows 64 bits)": b"\xff" * 9 + b"\x7f",
    "80 x10 01 (11 bytes)": b"\x80" * 10 + b"\x01",
}


def with_event_time_bytes(varint: bytes) -> bytes:
    """SAMPLE encoded as Avro with its event_time varint replaced by ``varint``."""
    good = encode_transaction(SAMPLE)
    encoded = zigzag_varint(SAMPLE["event_time"])
    at = 10 + 1 + len(SAMPLE["transaction_id"]) + 1 + len(SAMPLE["card_id"])
    assert good[at : at + len(encoded)] == encoded
    return good[:at] + varint + good[at + len(encoded) :]


@pytest.mark.parametrize("varint", MALFORMED_EVENT_TIMES.values(), ids=MALFORMED_EVENT_TIMES)
def test_malformed_event_time_varints_are_undecodable_in_a_batch(varint: bytes) -> None:
    good = encode_transaction(SAMPLE)
    batch, poisons = decode_transactions([good, with_event_time_bytes(varint), good])
    assert batch.index.tolist() == [0, 2]
    assert [(i, p.kind) for i, p in poisons] == [(1, "undecodable")]
    assert "varint" in poisons[0][1].reason


@pytest.mark.parametrize("varint", MALFORMED_EVENT_TIMES.values(), ids=MALFORMED_EVENT_TIMES)
def test_malformed_event_time_varints_are_undecodable_in_the_strict_fastavro_path(
    varint: bytes,
) -> None:
    with pytest.raises(PoisonMessage) as refused:
        record_codec("transaction").decode_strict(with_event_time_bytes(varint))
    assert refused.value.kind == "undecodable"


def test_the_longest_valid_varints_still_decode() -> None:
    for value in (-(2**63), 2**63 - 1):
        varint = zigzag_varint(value)
        assert len(varint) == 10
        batch, poisons = decode_transactions([with_event_time_bytes(varint)])
        assert not poisons and batch.event_time_ms.tolist() == [value]
    # Overlong but fitting encodings are valid Avro (fastavro and Java read them).
    assert read_strict_varint(b"\x80\x00", 0) == (0, 2)
    assert read_strict_varint(b"\xff" * 9 + b"\x01", 0) == (-(2**63), 10)
    with pytest.raises(MalformedVarint):
        read_strict_varint(b"\xff" * 9 + b"\x03", 0)


def test_an_over_long_string_length_is_undecodable() -> None:
    good = encode_transaction(SAMPLE)
    length = bytes([len(SAMPLE["transaction_id"]) << 1 | 0x80]) + b"\x80" * 9 + b"\x00"
    value = good[:10] + length + good[11:]
    batch, poisons = decode_transactions([value])
    assert len(batch) == 0 and [p.kind for _, p in poisons] == ["undecodable"]


ABSURD_EVENT_TIMES = {
    "zero": 0,
    "minus one": -1,
    "year 10000": 253_402_300_800_000,
    "2**63 - 1": 2**63 - 1,
    "-2**63": -(2**63),
    "8 days old": NOW_MS - 8 * 24 * 3600 * 1000,
    "6 minutes ahead": NOW_MS + 6 * 60 * 1000,
}


@pytest.mark.parametrize("encode", [encode_transaction, encode_transaction_json])
@pytest.mark.parametrize("event_time", ABSURD_EVENT_TIMES.values(), ids=ABSURD_EVENT_TIMES)
def test_event_times_outside_the_window_are_absurd(encode: Any, event_time: int) -> None:
    values: list[bytes | None] = [encode(SAMPLE), encode({**SAMPLE, "event_time": event_time})]
    batch, poisons = decode_transactions(values, event_time_window=EventTimeWindow(), now_ms=NOW_MS)
    assert batch.index.tolist() == [0]
    assert [(i, p.kind) for i, p in poisons] == [(1, "absurd_value")]
    assert "event_time" in poisons[0][1].reason


def test_event_times_inside_the_window_are_scored_and_the_window_is_configurable() -> None:
    window = EventTimeWindow(max_age_ms=60_000, max_ahead_ms=1_000)
    times = [NOW_MS - 60_000, NOW_MS, NOW_MS + 1_000, NOW_MS - 60_001, NOW_MS + 1_001]
    values: list[bytes | None] = [encode_transaction({**SAMPLE, "event_time": t}) for t in times]
    batch, poisons = decode_transactions(values, event_time_window=window, now_ms=NOW_MS)
    assert batch.event_time_ms.tolist() == times[:3]
    assert [(i, p.kind) for i, p in poisons] == [(3, "absurd_value"), (4, "absurd_value")]
    latency = NOW_MS - batch.event_time_ms.astype(np.float64)
    assert np.isfinite(latency).all() and latency.min() >= -window.max_ahead_ms


@pytest.mark.parametrize("bound", [-1, 2**62])
def test_a_window_out_of_range_is_a_config_error(bound: int) -> None:
    with pytest.raises(ConfigError):
        EventTimeWindow(max_age_ms=bound)


@pytest.mark.parametrize("encode", [encode_transaction, encode_transaction_json])
@pytest.mark.parametrize("field", ["transaction_id", "card_id"])
def test_empty_ids_are_a_missing_field(encode: Any, field: str) -> None:
    values: list[bytes | None] = [encode({**SAMPLE, field: ""}), encode(SAMPLE)]
    batch, poisons = decode_transactions(values)
    assert batch.index.tolist() == [1]
    assert [(i, p.kind, p.reason) for i, p in poisons] == [
        (0, "missing_field", f"{field} is empty")
    ]


def test_a_json_transaction_with_empty_ids_next_to_avro_ones() -> None:
    empty = json.dumps({**SAMPLE, "card_id": ""}).encode()
    batch, poisons = decode_transactions([encode_transaction(SAMPLE), empty])
    assert batch.index.tolist() == [0] and poisons[0][1].kind == "missing_field"
