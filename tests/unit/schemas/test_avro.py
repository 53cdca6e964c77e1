"""Schema files, fingerprints, single-object framing, the history registry, schema evolution."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fastavro.utils import generate_many
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.avro import (
    HISTORY_DIR,
    MAGIC,
    SingleObjectCodec,
    crc64_avro,
    fingerprint,
    load_history,
    load_schema,
    parsing_canonical_form,
    record_codec,
    single_object_header,
    strip_logical_types,
    zigzag_varint,
)
from schemas.errors import PoisonMessage, SchemaError
from schemas.features import N_PCA_FEATURES
from schemas.transaction_codec import fast_layout_fingerprint

from .strategies import LONGS, fastavro_header

RECORDS = ("transaction", "decision")


def test_crc64_avro_matches_the_avro_spec_test_vectors() -> None:
    # apache/avro share/test/data/schema-tests.txt (signed Java longs)
    assert crc64_avro(b'"int"') == 8247732601305521295
    assert crc64_avro(b'"null"') == 7195948357588979594
    assert crc64_avro(b'"string"') == -8142146995180207161 % 2**64
    foo = {"fields": [], "type": "record", "name": "foo"}
    assert parsing_canonical_form(foo) == '{"name":"foo","type":"record","fields":[]}'
    assert fingerprint(foo) == -4824392279771201922 % 2**64


def test_single_object_header_is_magic_then_little_endian_fingerprint() -> None:
    # The Ruby implementation's test of the same header for the schema "int".
    header = single_object_header(fingerprint("int"))
    assert header.hex() == "c3018f5c393f1ad57572"


@pytest.mark.parametrize("name", RECORDS)
def test_our_fingerprints_agree_with_fastavro(name: str) -> None:
    assert record_codec(name).header == fastavro_header(name)


def test_canonical_form_ignores_docs_and_logical_types() -> None:
    schema = load_schema("transaction")
    bare = strip_logical_types(copy.deepcopy(schema))
    bare.pop("doc")
    for field in bare["fields"]:
        field.pop("doc", None)
    assert fingerprint(bare) == fingerprint(schema)


def test_transaction_layout_matches_the_feature_contract() -> None:
    schema = load_schema("transaction")
    names = [field["name"] for field in schema["fields"]]
    assert names == ["transaction_id", "card_id", "event_time", "amount", "features"]
    assert schema["namespace"] == "sentinel"
    assert all(field.get("doc") for field in schema["fields"])
    assert str(N_PCA_FEATURES) in schema["fields"][-1]["doc"]


def test_the_c_path_walks_the_v1_layout_it_was_written_for() -> None:
    v1 = dict(load_history("transaction"))[1]
    assert parsing_canonical_form(v1) == (
        '{"name":"sentinel.Transaction","type":"record","fields":['
        '{"name":"transaction_id","type":"string"},{"name":"card_id","type":"string"},'
        '{"name":"event_time","type":"long"},{"name":"amount","type":"double"},'
        '{"name":"features","type":{"type":"array","items":"double"}}]}'
    )
    assert fast_layout_fingerprint() == fingerprint(v1)


def test_decision_fields_are_in_the_contract_order() -> None:
    schema = load_schema("decision")
    assert [field["name"] for field in schema["fields"]] == [
        "transaction_id", "card_id", "fraud_probability", "predicted_fraud", "decision",
        "block_threshold", "review_threshold", "model_version", "variant", "cache_hit",
        "batch_size", "event_time", "scored_at", "latency_ms", "scorer_id", "source_topic",
        "source_partition", "source_offset",
    ]  # fmt: skip
    types = {field["name"]: field["type"] for field in schema["fields"]}
    assert types["decision"]["symbols"] == ["ALLOW", "REVIEW", "BLOCK"]
    assert types["variant"]["symbols"] == ["A", "B"]
    assert types["scored_at"]["logicalType"] == "timestamp-micros"
    assert all(field.get("doc") for field in schema["fields"])


@pytest.mark.parametrize("name", RECORDS)
def test_the_current_schema_is_the_latest_released_version(name: str) -> None:
    history = load_history(name)
    assert history, f"schemas/history has no {name}.v<N>.avsc"
    assert [version for version, _ in history] == list(range(1, len(history) + 1))
    assert fingerprint(history[-1][1]) == fingerprint(load_schema(name)), (
        f"schemas/{name}.avsc changed: copy it to schemas/history/{name}.v{len(history) + 1}.avsc"
    )


@pytest.mark.parametrize("name", RECORDS)
def test_messages_of_every_released_version_decode_into_the_current_schema(name: str) -> None:
    codec = record_codec(name)
    current_fields = {field["name"] for field in load_schema(name)["fields"]}
    for version, schema in load_history(name):
        writer = SingleObjectCodec(schema)
        for record in generate_many(strip_logical_types(schema), 5):
            decoded = codec.decode(writer.encode(record))
            shared = current_fields & set(record)
            assert {k: decoded[k] for k in shared} == {k: record[k] for k in shared}, version


def test_history_files_must_be_named_by_version(tmp_path: Any) -> None:
    (tmp_path / "transaction.latest.avsc").write_text(json.dumps(load_schema("transaction")))
    with pytest.raises(SchemaError, match="not named"):
        load_history("transaction", tmp_path)
    (tmp_path / "transaction.latest.avsc").rename(tmp_path / "transaction.v1.avsc")
    assert [version for version, _ in load_history("transaction", tmp_path)] == [1]
    assert load_history("decision", tmp_path) == []
    assert HISTORY_DIR.is_dir()


def _transaction_v2() -> dict[str, Any]:
    """A compatible v2 of Transaction, for the evolution test only: one optional field added."""
    schema = copy.deepcopy(load_schema("transaction"))
    schema["fields"].append(
        {"name": "merchant_category", "type": ["null", "string"], "default": None}
    )
    return schema


SAMPLE = {
    "transaction_id": "tx-1",
    "card_id": "card-7",
    "event_time": 1_700_000_000_123,
    "amount": 42.5,
    "features": [float(i) / 7 for i in range(N_PCA_FEATURES)],
}


def test_v1_messages_decode_under_a_v2_reader_with_the_default() -> None:
    v1, v2 = load_schema("transaction"), _transaction_v2()
    v2_reader = SingleObjectCodec(v2, [v1, v2])
    message = SingleObjectCodec(v1).encode(SAMPLE)
    assert v2_reader.decode(message) == {**SAMPLE, "merchant_category": None}


def test_v2_messages_decode_under_the_v1_reader_once_v2_is_known() -> None:
    v1, v2 = load_schema("transaction"), _transaction_v2()
    message = SingleObjectCodec(v2).encode({**SAMPLE, "merchant_category": "grocery"})
    assert message[2:10] != SingleObjectCodec(v1).header[2:10]
    assert SingleObjectCodec(v1, [v1, v2]).decode(message) == SAMPLE
    with pytest.raises(PoisonMessage) as unknown:
        record_codec("transaction").decode(message)  # the deployed registry has no v2 yet
    assert unknown.value.kind == "unknown_schema"


def test_an_incompatible_writer_is_undecodable_not_a_crash() -> None:
    v1 = load_schema("transaction")
    incompatible = copy.deepcopy(v1)
    incompatible["fields"][2]["type"] = "string"  # event_time: long -> string cannot resolve
    record = {**SAMPLE, "event_time": "yesterday"}
    message = SingleObjectCodec(incompatible).encode(record)
    with pytest.raises(PoisonMessage) as caught:
        SingleObjectCodec(v1, [incompatible]).decode(message)
    assert caught.value.kind == "undecodable"


@pytest.mark.parametrize(
    ("value", "kind", "reason"),
    [
        (b"", "undecodable", "no C3 01 header"),
        (b"\xc3\x01\x00", "undecodable", "no C3 01 header"),
        (b'{"transaction_id": 1}', "undecodable", "no C3 01 header"),
        (b"\xc3\x01" + bytes(8) + b"\x02a", "unknown_schema", "0000000000000000"),
        (b"\x00\x00\x01", "undecodable", "truncated Confluent"),
        (b"\x00\x00\x00\x00\x07\x02a", "undecodable", "(schema id 7) but no schema registry"),
    ],
)
def test_framing_errors_are_poison(value: bytes, kind: str, reason: str) -> None:
    with pytest.raises(PoisonMessage) as caught:
        record_codec("transaction").decode(value)
    assert (caught.value.kind, reason in caught.value.reason) == (kind, True)


def test_truncated_and_padded_bodies_are_undecodable() -> None:
    codec = record_codec("transaction")
    message = codec.encode(SAMPLE)
    for broken, reason in ((message[:-5], "truncated"), (message + b"\x00", "1 trailing byte")):
        with pytest.raises(PoisonMessage, match=reason) as caught:
            codec.decode(broken)
        assert caught.value.kind == "undecodable"


@settings(deadline=None, max_examples=300)
@given(body=st.binary(max_size=400))
def test_any_body_after_a_known_header_decodes_or_is_poison(body: bytes) -> None:
    codec = record_codec("transaction")
    try:
        record = codec.decode(codec.header + body)
    except PoisonMessage as poison:
        assert poison.kind == "undecodable"
    else:
        assert set(record) == {"transaction_id", "card_id", "event_time", "amount", "features"}


def test_encode_refuses_records_that_do_not_fit() -> None:
    with pytest.raises(SchemaError, match=r"sentinel\.Transaction"):
        record_codec("transaction").encode({**SAMPLE, "amount": "a lot"})
    with pytest.raises(SchemaError):
        record_codec("transaction").encode({"transaction_id": "only this"})


@given(value=LONGS)
def test_zigzag_varint_is_the_avro_long_encoding(value: int) -> None:
    import io

    import fastavro

    out = io.BytesIO()
    fastavro.schemaless_writer(out, "long", value)
    assert zigzag_varint(value) == out.getvalue()
    assert MAGIC == b"\xc3\x01"
