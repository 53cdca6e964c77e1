"""The C Transaction decode agrees with stock fastavro, row for row, bit for bit."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any

import fastavro
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import transaction_codec
from schemas.avro import SingleObjectCodec, load_schema, zigzag_varint
from schemas.errors import PoisonMessage, SchemaError
from schemas.features import FEATURE_NAMES, invalid_rows
from schemas.transaction_codec import (
    TransactionBatch,
    decode_transactions,
    encode_transaction,
    encode_transaction_json,
)

from .strategies import fastavro_encode, fastavro_header, parsed, transactions

MAX_BYTES = 65_536
SAMPLE: dict[str, Any] = {
    "transaction_id": "tx-0001",
    "card_id": "card-000042",
    "event_time": 1_700_000_000_123,
    "amount": 149.62,
    "features": [round(0.1 * i - 1.3, 3) for i in range(28)],
}


def reference(value: bytes | None) -> tuple[bytes, bytes, int, list[float]] | str:
    """What stock fastavro makes of one Avro value: the row, or the poison kind."""
    if not value:
        return "empty"
    if len(value) > MAX_BYTES:
        return "oversize"
    if len(value) < 10 or value[:2] != b"\xc3\x01":
        return "undecodable"
    if value[:10] != fastavro_header("transaction"):
        return "unknown_schema"
    body = io.BytesIO(value[10:])
    try:
        record = fastavro.schemaless_reader(body, parsed("transaction"))
    except Exception:  # any fastavro failure on corrupt bytes is the poison "undecodable"
        return "undecodable"
    if body.tell() != len(value) - 10:
        return "undecodable"
    if _has_malformed_varint(value[10:]):  # fastavro reads these; Avro does not allow them
        return "undecodable"
    assert isinstance(record, dict)
    if len(record["features"]) != 28:
        return "feature_count"
    row = [*record["features"], record["amount"]]
    problems = invalid_rows(np.array([row], dtype=np.float64))
    if problems:
        return "not_finite" if not np.isfinite(row).all() else "absurd_value"
    ids = record["transaction_id"].encode(), record["card_id"].encode()
    if not all(ids):
        return "missing_field"
    return (*ids, record["event_time"], row)


def _has_malformed_varint(body: bytes) -> bool:
    """Whether a Transaction body fastavro read holds a varint over 10 bytes or 64 bits.

    Walks the Transaction layout on its own (strings, long, double, blocks of doubles), apart
    from the codec's schema walker, so the two can disagree.
    """
    pos = 0

    def varint() -> int | None:
        nonlocal pos
        n = 0
        for i in range(10):
            byte = body[pos]
            pos += 1
            n |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                return None if n >= 2**64 else (n >> 1) ^ -(n & 1)
        return None

    for _ in range(2):
        length = varint()
        if length is None:
            return True
        pos += length
    if varint() is None:
        return True
    pos += 8
    while True:
        count = varint()
        if count is None:
            return True
        if count == 0:
            return False
        if count < 0 and varint() is None:
            return True
        pos += 8 * abs(count)


def assert_matches_reference(values: list[bytes | None]) -> TransactionBatch:
    batch, poisons = decode_transactions(values, max_message_bytes=MAX_BYTES)
    expected = [reference(value) for value in values]
    good = [i for i, outcome in enumerate(expected) if not isinstance(outcome, str)]
    assert batch.index.tolist() == good
    assert [(i, poison.kind) for i, poison in poisons] == [
        (i, outcome) for i, outcome in enumerate(expected) if isinstance(outcome, str)
    ]
    rows = [expected[i] for i in good]
    assert batch.transaction_ids == [row[0] for row in rows]
    assert batch.card_ids == [row[1] for row in rows]
    assert batch.event_time_ms.tolist() == [row[2] for row in rows]
    want = np.array([row[3] for row in rows], dtype=np.float64).reshape(-1, 29)
    assert batch.features_f64.view(np.uint64).tolist() == want.view(np.uint64).tolist()
    assert batch.features.dtype == np.float32 and batch.event_time_ms.dtype == np.int64
    assert np.array_equal(batch.features, want.astype(np.float32))
    return batch


@settings(deadline=None, max_examples=150)
@given(records=st.lists(st.one_of(transactions(sane=True), transactions(sane=False)), max_size=40))
def test_batch_decode_equals_fastavro(records: list[dict[str, Any]]) -> None:
    values: list[bytes | None] = [fastavro_encode("transaction", record) for record in records]
    assert_matches_reference(values)


@settings(deadline=None, max_examples=300)
@given(
    records=st.lists(
        st.tuples(
            transactions(sane=True),
            st.integers(1, 400),  # where to corrupt (the first byte is kept: no JSON)
            st.integers(0, 255),  # the new byte
            st.sampled_from(["replace", "insert", "delete", "truncate"]),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_corrupted_messages_get_the_same_verdict_as_fastavro(
    records: list[tuple[dict[str, Any], int, int, str]],
) -> None:
    values: list[bytes | None] = []
    for record, where, byte, how in records:
        value = bytearray(fastavro_encode("transaction", record))
        where = min(where, len(value) - 1)
        if how == "replace":
            value[where] = byte
        elif how == "insert":
            value.insert(where, byte)
        elif how == "delete":
            del value[where]
        else:
            del value[where:]
        values.append(bytes(value))
    assert_matches_reference(values)


@settings(deadline=None, max_examples=100)
@given(values=st.lists(st.binary(max_size=300).filter(lambda v: v.strip()[:1] != b"{")))
def test_arbitrary_bytes_never_raise_and_every_row_is_accounted_for(values: list[bytes]) -> None:
    batch, poisons = decode_transactions(values)
    positions = sorted([*batch.index.tolist(), *(i for i, _ in poisons)])
    assert positions == list(range(len(values)))
    assert all(isinstance(poison, PoisonMessage) for _, poison in poisons)


@settings(deadline=None)
@given(record=transactions(sane=False))
def test_encode_transaction_is_byte_equal_to_fastavro(record: dict[str, Any]) -> None:
    assert encode_transaction(record) == fastavro_encode("transaction", record)


def test_every_poison_kind_is_reported_at_its_position_and_good_rows_survive() -> None:
    good = encode_transaction(SAMPLE)
    json_good = encode_transaction_json({**SAMPLE, "transaction_id": "tx-json"})
    cases: list[tuple[bytes | None, str | None]] = [
        (good, None),
        (None, "empty"),
        (b"", "empty"),
        (encode_transaction({**SAMPLE, "transaction_id": "x" * 70_000}), "oversize"),
        (b"\x00\xffnot a transaction", "undecodable"),
        (good[:-40], "undecodable"),
        (good + b"\x00", "undecodable"),
        (b"\xc3\x01" + bytes(8) + good[10:], "unknown_schema"),
        (b'{"transaction_id": "tx", ', "invalid_json"),
        (b'{"a":' * 3000 + b"1" + b"}" * 3000, "invalid_json"),  # nested beyond any parser
        (json.dumps({k: v for k, v in SAMPLE.items() if k != "amount"}).encode(), "missing_field"),
        (json.dumps({**SAMPLE, "amount": "twelve"}).encode(), "wrong_type"),
        (json.dumps({**SAMPLE, "event_time": 1.5}).encode(), "wrong_type"),
        (json.dumps({**SAMPLE, "card_id": 42}).encode(), "wrong_type"),
        (json.dumps({**SAMPLE, "features": "none"}).encode(), "wrong_type"),
        (json.dumps([1, 2]).encode(), "undecodable"),  # not an object: not sniffed as JSON
        (encode_transaction({**SAMPLE, "features": SAMPLE["features"][:20]}), "feature_count"),
        (json.dumps({**SAMPLE, "features": [*SAMPLE["features"], 1.0]}).encode(), "feature_count"),
        (encode_transaction({**SAMPLE, "amount": float("nan")}), "not_finite"),
        (encode_transaction_json({**SAMPLE, "features": [float("inf")] * 28}), "not_finite"),
        (encode_transaction({**SAMPLE, "amount": 5e12}), "absurd_value"),
        (encode_transaction({**SAMPLE, "features": [0.0] * 27 + [1e4]}), "absurd_value"),
        (json_good, None),
        (good, None),
    ]
    batch, poisons = decode_transactions([value for value, _ in cases])
    assert batch.index.tolist() == [i for i, (_, kind) in enumerate(cases) if kind is None]
    assert [(i, p.kind) for i, p in poisons] == [
        (i, kind) for i, (_, kind) in enumerate(cases) if kind is not None
    ]
    assert batch.transaction_ids == [b"tx-0001", b"tx-json", b"tx-0001"]
    assert all(p.reason for _, p in poisons)
    reasons = [p.reason for _, p in poisons]
    assert "Amount=5e+12 outside [0, 1e+06]" in reasons
    assert "V28=10000 beyond +-1000" in reasons
    assert "expected 28 features V1..V28, got 20" in reasons
    assert "missing field(s): amount" in reasons


def test_the_matrix_is_in_feature_names_order() -> None:
    batch, poisons = decode_transactions([encode_transaction(SAMPLE)])
    assert not poisons and len(batch) == 1
    row = dict(zip(FEATURE_NAMES, batch.features_f64[0].tolist(), strict=True))
    assert row["V1"] == SAMPLE["features"][0] and row["V28"] == SAMPLE["features"][27]
    assert row["Amount"] == SAMPLE["amount"]
    assert batch.event_time_ms.tolist() == [SAMPLE["event_time"]]


def _multi_block_array(tx: dict[str, Any]) -> bytes:
    """A valid Avro encoding fastavro accepts: features in two blocks, the second with a
    negative count and its byte size, then one overlong (two-byte) string length."""
    features = tx["features"]
    tid = tx["transaction_id"].encode()
    return b"".join([
        fastavro_header("transaction"),
        bytes([(len(tid) << 1) | 0x80, 0x00]), tid,  # overlong varint for the length
        zigzag_varint(len(tx["card_id"])), tx["card_id"].encode(),
        zigzag_varint(tx["event_time"]), struct.pack("<d", tx["amount"]),
        zigzag_varint(10), struct.pack("<10d", *features[:10]),
        zigzag_varint(-18), zigzag_varint(18 * 8), struct.pack("<18d", *features[10:]),
        b"\x00",
    ])  # fmt: skip


def test_valid_but_unusual_encodings_are_accepted_like_fastavro_does() -> None:
    values: list[bytes | None] = [encode_transaction(SAMPLE), _multi_block_array(SAMPLE)]
    batch = assert_matches_reference(values)
    assert len(batch) == 2
    assert batch.features_f64[0].tolist() == batch.features_f64[1].tolist()


def test_invalid_utf8_ids_are_undecodable_like_fastavro() -> None:
    good = encode_transaction({**SAMPLE, "transaction_id": "tx-é-01"})
    broken = good.replace("é".encode(), b"\xff\xfe")
    surrogate = good.replace("é".encode(), b"\xed\xa0")  # half a UTF-16 surrogate
    batch = assert_matches_reference([good, broken, surrogate, good])
    assert batch.transaction_ids == ["tx-é-01".encode()] * 2


def test_json_is_recognised_by_content_or_by_content_type() -> None:
    as_json = encode_transaction_json(SAMPLE)
    avro = encode_transaction(SAMPLE)
    values: list[bytes | None] = [b"\n  " + as_json, as_json, avro, avro, as_json]
    content_types = [None, "application/json", "avro/binary", b"application/json", "avro/binary"]
    batch, poisons = decode_transactions(values, content_types)
    assert batch.index.tolist() == [0, 1, 2]
    assert [(i, p.kind) for i, p in poisons] == [(3, "invalid_json"), (4, "undecodable")]
    assert np.array_equal(batch.features_f64[0], batch.features_f64[2])


@settings(deadline=None, max_examples=100)
@given(record=st.one_of(transactions(sane=True), transactions(sane=False)))
def test_json_and_avro_of_one_record_decode_alike(record: dict[str, Any]) -> None:
    values: list[bytes | None] = [encode_transaction(record), encode_transaction_json(record)]
    batch, poisons = decode_transactions(values)
    if len(batch) == 2:
        assert batch.transaction_ids[0] == batch.transaction_ids[1]
        assert batch.card_ids[0] == batch.card_ids[1]
        assert batch.event_time_ms[0] == batch.event_time_ms[1]
        assert batch.features_f64[0].tobytes() == batch.features_f64[1].tobytes()
    else:
        assert len(batch) == 0 and poisons[0][1].kind == poisons[1][1].kind


def test_json_round_trip_keeps_every_value() -> None:
    record = {**SAMPLE, "transaction_id": "tx-ünïcode", "event_time": -(2**63)}
    batch, poisons = decode_transactions([encode_transaction_json(record)])
    assert not poisons
    assert batch.transaction_ids == [record["transaction_id"].encode()]
    assert batch.event_time_ms.tolist() == [-(2**63)]
    assert batch.features_f64[0].tolist() == [*SAMPLE["features"], SAMPLE["amount"]]


def test_an_older_known_writer_is_resolved_into_the_current_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current = load_schema("transaction")
    v0 = json.loads(json.dumps(current))
    v0["fields"][3]["type"] = "float"  # a hypothetical v0 sent float amounts (promotable)
    registry = SingleObjectCodec(current, [v0, current])
    monkeypatch.setattr(transaction_codec, "record_codec", lambda name: registry)
    old = SingleObjectCodec(v0).encode({**SAMPLE, "amount": 0.5})
    batch, poisons = decode_transactions([encode_transaction(SAMPLE), old])
    assert not poisons and batch.index.tolist() == [0, 1]
    assert batch.features_f64[1, 28] == 0.5 and batch.transaction_ids[1] == b"tx-0001"


def test_an_empty_batch_is_empty() -> None:
    batch, poisons = decode_transactions([])
    assert (len(batch), poisons, batch.features.shape) == (0, [], (0, 29))


@pytest.mark.parametrize("encode", [encode_transaction, encode_transaction_json])
@pytest.mark.parametrize(
    "change",
    [
        {"card_id": 7},
        {"event_time": "now"},
        {"event_time": 2**63},
        {"amount": "x"},
        {"features": None},
    ],
)
def test_encoders_refuse_records_that_do_not_fit(
    encode: Callable[[dict[str, Any]], bytes], change: dict[str, Any]
) -> None:
    with pytest.raises(SchemaError, match="does not fit"):
        encode({**SAMPLE, **change})
