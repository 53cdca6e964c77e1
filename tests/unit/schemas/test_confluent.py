"""The Confluent wire format (00 + schema id + Avro body) beside single-object and JSON.

A dict plays the registry (``Registry``); the integration tests use a real one.
"""

from __future__ import annotations

import copy
import io
import time
from typing import Any

import fastavro
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import transaction_codec
from schemas.avro import fingerprint, load_schema, record_codec, strip_logical_types
from schemas.confluent import RegisteredSchema, confluent_header, schema_id_of
from schemas.decision_codec import decode_decision, encode_decisions
from schemas.drift_codec import (
    DriftSnapshot,
    FeatureDrift,
    PredictionDrift,
    decode_snapshot,
    encode_snapshot,
)
from schemas.errors import PoisonMessage, SchemaRegistryUnavailable
from schemas.transaction_codec import decode_transactions, encode_transaction_json

from .strategies import fastavro_encode, transactions
from .test_decision_codec import _one_row

NOW_MS = int(time.time() * 1000)
V1_ID, V2_ID, DECISION_ID = 7, 8, 21


def _v2() -> dict[str, Any]:
    """A later Transaction a producer might register: a field in front, with a default."""
    schema = copy.deepcopy(load_schema("transaction"))
    schema["fields"].insert(0, {"name": "channel", "type": "string", "default": "web"})
    return schema


class Registry:
    """A WriterLookup over a dict; ``down`` makes it answer like an unreachable registry."""

    def __init__(self) -> None:
        schemas = {
            V1_ID: load_schema("transaction"),
            V2_ID: _v2(),
            DECISION_ID: load_schema("decision"),
        }
        self.schemas = {i: RegisteredSchema(i, fingerprint(s), s) for i, s in schemas.items()}
        self.down = False
        self.lookups: list[int] = []

    def writer_schema(self, schema_id: int) -> RegisteredSchema:
        self.lookups.append(schema_id)
        if self.down:
            raise SchemaRegistryUnavailable("connection refused")
        if schema_id not in self.schemas:
            raise PoisonMessage("unknown_schema", f"no schema id {schema_id}")
        return self.schemas[schema_id]


def tx(i: int, **change: Any) -> dict[str, Any]:
    record = {
        "transaction_id": f"tx-{i}",
        "card_id": f"card-{i % 5}",
        "event_time": NOW_MS - i,
        "amount": 10.0 + i,
        "features": [0.01 * i + k for k in range(28)],
    }
    return {**record, **change}


def confluent(
    schema_id: int, record: dict[str, Any], schema: dict[str, Any] | None = None
) -> bytes:
    """What confluent-kafka's AvroSerializer writes: 00, the id, the fastavro body."""
    body = io.BytesIO()
    parsed = fastavro.parse_schema(strip_logical_types(schema or load_schema("transaction")))
    fastavro.schemaless_writer(body, parsed, record)
    return confluent_header(schema_id) + body.getvalue()


def rows(values: list[bytes], registry: Registry | None) -> tuple[Any, list[tuple[int, str]]]:
    batch, poisons = decode_transactions(values, registry=registry)
    return batch, [(position, poison.kind) for position, poison in poisons]


@settings(deadline=None, max_examples=100)
@given(records=st.lists(transactions(sane=True), min_size=1, max_size=30))
def test_confluent_framing_decodes_exactly_like_single_object(
    records: list[dict[str, Any]],
) -> None:
    single, single_poison = rows([fastavro_encode("transaction", r) for r in records], None)
    framed, framed_poison = rows([confluent(V1_ID, r) for r in records], Registry())
    assert framed_poison == single_poison
    assert framed.transaction_ids == single.transaction_ids
    assert framed.card_ids == single.card_ids
    assert np.array_equal(framed.event_time_ms, single.event_time_ms)
    assert np.array_equal(framed.features_f64, single.features_f64, equal_nan=True)


def test_the_current_layout_takes_the_c_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def general(*args: Any) -> Any:
        raise AssertionError("a v1 Confluent row left the C path")

    monkeypatch.setattr(transaction_codec, "_decode_general", general)
    registry = Registry()
    batch, poisons = rows([confluent(V1_ID, tx(i)) for i in range(50)], registry)
    assert len(batch) == 50 and not poisons
    assert registry.lookups == [V1_ID]  # one lookup per distinct id and batch


def test_another_writer_layout_is_resolved_into_the_current_schema() -> None:
    newer = confluent(V2_ID, {**tx(1), "channel": "pos"}, _v2())
    batch, poisons = rows([newer, confluent(V1_ID, tx(2))], Registry())
    assert not poisons
    assert batch.transaction_ids == [b"tx-1", b"tx-2"]
    assert batch.features_f64[0, -1] == 11.0  # amount, read through the resolution


def test_single_object_json_and_confluent_share_a_batch() -> None:
    values = [
        fastavro_encode("transaction", tx(0)),
        confluent(V1_ID, tx(1)),
        encode_transaction_json(tx(2)),
        confluent(99, tx(3)),  # an id the registry does not have
        confluent(V1_ID, tx(4))[:-3],  # truncated body
        confluent(V2_ID, {**tx(5), "channel": "pos"}, _v2()),
    ]
    batch, poisons = rows(values, Registry())
    assert batch.index.tolist() == [0, 1, 2, 5]
    assert batch.transaction_ids == [b"tx-0", b"tx-1", b"tx-2", b"tx-5"]
    assert poisons == [(3, "unknown_schema"), (4, "undecodable")]


def test_without_a_registry_confluent_rows_are_undecodable_and_say_why() -> None:
    batch, poisons = decode_transactions([confluent(V1_ID, tx(0))])
    assert len(batch) == 0
    ((_, poison),) = poisons
    assert poison.kind == "undecodable" and "no schema registry" in poison.reason


def test_an_unreachable_registry_raises_before_anything_is_decided() -> None:
    registry = Registry()
    registry.down = True
    values = [fastavro_encode("transaction", tx(0)), confluent(V1_ID, tx(1))]
    with pytest.raises(SchemaRegistryUnavailable):
        decode_transactions(values, registry=registry)
    # a batch without Confluent rows never asks the registry
    batch, poisons = decode_transactions(values[:1], registry=registry)
    assert len(batch) == 1 and not poisons and registry.lookups == [V1_ID]


def test_an_overlong_varint_in_a_confluent_body_is_refused_like_in_single_object() -> None:
    body = confluent(V1_ID, tx(0))[5:]
    # event_time follows the two strings; re-encode it as an 11-byte varint (> 10 allowed)
    codec_body = bytearray(body)
    start = 1 + len(b"tx-0") + 1 + len(b"card-0")
    end = start
    while codec_body[end] & 0x80:
        end += 1
    overlong = (
        bytes(codec_body[start:end]) + bytes([codec_body[end] | 0x80]) + b"\x80" * 9 + b"\x00"
    )
    value = confluent_header(V1_ID) + bytes(codec_body[:start]) + overlong + body[end + 1 :]
    _, poisons = rows([value], Registry())
    assert poisons == [(0, "undecodable")]


def test_decisions_and_drift_can_be_confluent_framed_and_read_back() -> None:
    (single,) = encode_decisions(**_one_row())
    (framed,) = encode_decisions(**_one_row(), schema_id=DECISION_ID)
    assert framed[:5] == b"\x00\x00\x00\x00\x15" and framed[5:] == single[10:]
    assert schema_id_of(framed) == DECISION_ID
    registry = Registry()
    assert decode_decision(framed, registry) == decode_decision(single)
    with pytest.raises(PoisonMessage, match="no schema registry"):
        decode_decision(framed)
    snapshot_schema = load_schema("drift_snapshot")
    registry.schemas[3] = RegisteredSchema(3, fingerprint(snapshot_schema), snapshot_schema)
    snapshot = _snapshot()
    framed_snapshot = encode_snapshot(snapshot, schema_id=3)
    assert framed_snapshot[5:] == encode_snapshot(snapshot)[10:]
    assert decode_snapshot(framed_snapshot, registry) == snapshot


def _snapshot() -> DriftSnapshot:
    feature = FeatureDrift("V1", 10, 0.5, 2.0, 0.4, 0.1, 1.0, 1.2, (4, 6), (0.5, 0.5), 0.02, False)
    prediction = PredictionDrift(10, 0.1, 0.2, 0.1, 0.8, 1, 0.1, (9, 1), (0.9, 0.1), 0.0, False)
    return DriftSnapshot(
        "scorer-1", "v1", "A", 1_000, 2_000, 10, 0.2, 3.0, 4.0, 100, (feature,), prediction,
        False, (),
    )  # fmt: skip


def test_a_registry_schema_that_is_not_avro_is_unknown_schema() -> None:
    broken = RegisteredSchema(5, 0, {"type": "record", "name": "X", "fields": [{"name": "a"}]})
    with pytest.raises(PoisonMessage) as caught:
        record_codec("transaction").registered(broken)
    assert caught.value.kind == "unknown_schema"
