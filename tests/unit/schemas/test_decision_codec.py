"""The C Decision encode is byte-equal to stock fastavro and decodes back to its rows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.decision_codec import DECISION_OUTCOMES, VARIANTS, decode_decision, encode_decisions
from schemas.errors import PoisonMessage, SchemaError

from .strategies import ANY_DOUBLE, INTS, LONGS, TEXT, fastavro_encode


@st.composite
def decision_batches(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments of one encode_decisions call with 0-25 random rows."""
    rows = draw(st.integers(0, 25))

    def column(strategy: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(strategy, min_size=rows, max_size=rows))

    versions = draw(st.lists(TEXT, min_size=1, max_size=3))
    scored_at = draw(st.one_of(LONGS, st.just(None)))
    return {
        "transaction_ids": [text.encode() for text in column(TEXT)],
        "card_ids": [text.encode() for text in column(TEXT)],
        "fraud_probability": np.array(column(ANY_DOUBLE), dtype=np.float64),
        "predicted_fraud": np.array(column(st.booleans()), dtype=bool),
        "decision": np.array(column(st.integers(0, 2)), dtype=np.int8),
        "block_threshold": np.array(column(ANY_DOUBLE), dtype=np.float64),
        "review_threshold": np.array(column(ANY_DOUBLE), dtype=np.float64),
        "model_version": np.array(column(st.integers(0, len(versions) - 1)), dtype=np.int64),
        "model_versions": versions,
        "variant": np.array(column(st.integers(0, 1)), dtype=np.int8),
        "cache_hit": np.array(column(st.booleans()), dtype=bool),
        "batch_size": draw(INTS),
        "event_time_ms": np.array(column(LONGS), dtype=np.int64),
        "scored_at_us": (
            np.array(column(LONGS), dtype=np.int64) if scored_at is None else scored_at
        ),
        "latency_ms": np.array(column(ANY_DOUBLE), dtype=np.float64),
        "scorer_id": draw(TEXT),
        "source_topic": draw(TEXT),
        "source_partition": np.array(column(INTS), dtype=np.int32),
        "source_offset": np.array(column(LONGS), dtype=np.int64),
    }


def records(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The Decision records the batch describes, as fastavro takes them."""
    scored_at = batch["scored_at_us"]
    return [
        {
            "transaction_id": batch["transaction_ids"][i].decode(),
            "card_id": batch["card_ids"][i].decode(),
            "fraud_probability": float(batch["fraud_probability"][i]),
            "predicted_fraud": bool(batch["predicted_fraud"][i]),
            "decision": DECISION_OUTCOMES[batch["decision"][i]],
            "block_threshold": float(batch["block_threshold"][i]),
            "review_threshold": float(batch["review_threshold"][i]),
            "model_version": batch["model_versions"][batch["model_version"][i]],
            "variant": VARIANTS[batch["variant"][i]],
            "cache_hit": bool(batch["cache_hit"][i]),
            "batch_size": batch["batch_size"],
            "event_time": int(batch["event_time_ms"][i]),
            "scored_at": int(scored_at if isinstance(scored_at, int) else scored_at[i]),
            "latency_ms": float(batch["latency_ms"][i]),
            "scorer_id": batch["scorer_id"],
            "source_topic": batch["source_topic"],
            "source_partition": int(batch["source_partition"][i]),
            "source_offset": int(batch["source_offset"][i]),
        }
        for i in range(len(batch["transaction_ids"]))
    ]


def same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (a decoded NaN probability is still the same value)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


@settings(deadline=None, max_examples=200)
@given(batch=decision_batches())
def test_encode_decisions_is_byte_equal_to_fastavro_and_decodes_back(batch: dict[str, Any]) -> None:
    messages = encode_decisions(**batch)
    expected = records(batch)
    assert messages == [fastavro_encode("decision", record) for record in expected]
    for message, record in zip(messages, expected, strict=True):
        decoded = decode_decision(message)
        assert decoded.keys() == record.keys()
        assert all(same(decoded[name], record[name]) for name in record), (decoded, record)


def _one_row(**change: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "transaction_ids": [b"tx-1"],
        "card_ids": [b"card-1"],
        "fraud_probability": np.array([0.93]),
        "predicted_fraud": np.array([True]),
        "decision": np.array([2], dtype=np.int8),
        "block_threshold": np.array([0.8]),
        "review_threshold": np.array([0.4]),
        "model_version": np.array([0]),
        "model_versions": ["v3"],
        "variant": np.array([1], dtype=np.int8),
        "cache_hit": np.array([False]),
        "batch_size": 500,
        "event_time_ms": np.array([1_700_000_000_000], dtype=np.int64),
        "scored_at_us": 1_700_000_000_004_000,
        "latency_ms": np.array([4.0]),
        "scorer_id": "scorer-a",
        "source_topic": "transactions",
        "source_partition": np.array([3], dtype=np.int32),
        "source_offset": np.array([123_456], dtype=np.int64),
    }
    return {**row, **change}


def test_a_decision_reads_back_as_the_user_sees_it_in_tail() -> None:
    (message,) = encode_decisions(**_one_row())
    decision = decode_decision(message)
    assert decision["decision"] == "BLOCK" and decision["variant"] == "B"
    assert decision["model_version"] == "v3" and decision["predicted_fraud"] is True
    assert decision["event_time"] == 1_700_000_000_000  # integers, not datetime
    assert decision["scored_at"] == 1_700_000_000_004_000
    assert (decision["source_partition"], decision["source_offset"]) == (3, 123_456)


def test_scalars_are_repeated_on_every_row() -> None:
    rows = _one_row(
        transaction_ids=[b"a", b"b"],
        card_ids=[b"c", b"d"],
        block_threshold=0.8,
        review_threshold=0.4,
        fraud_probability=np.array([0.1, 0.9]),
        predicted_fraud=np.array([False, True]),
        decision=np.array([0, 2]),
        model_version=0,
        variant=0,
        cache_hit=True,
        event_time_ms=np.array([1, 2]),
        latency_ms=np.array([1.0, 2.0]),
        source_partition=0,
        source_offset=np.array([10, 11]),
    )
    decoded = [decode_decision(message) for message in encode_decisions(**rows)]
    assert [d["block_threshold"] for d in decoded] == [0.8, 0.8]
    assert [d["decision"] for d in decoded] == ["ALLOW", "BLOCK"]
    assert [d["source_offset"] for d in decoded] == [10, 11]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"decision": np.array([3])}, "decision"),
        ({"variant": np.array([-1])}, "variant"),
        ({"model_version": np.array([1])}, "model_version"),
        ({"source_partition": np.array([2**31])}, "source_partition"),
        ({"batch_size": 2**31}, "batch_size"),
        ({"card_ids": [b"a", b"b"]}, "disagree"),
        ({"latency_ms": np.array([1.0, 2.0])}, "latency_ms"),
        ({"fraud_probability": np.array(["high"])}, "fraud_probability"),
    ],
)
def test_columns_the_schema_cannot_hold_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        encode_decisions(**_one_row(**change))


def test_an_empty_batch_encodes_to_nothing() -> None:
    empty: dict[str, Any] = {
        name: (value[:0] if isinstance(value, list | np.ndarray) else value)
        for name, value in _one_row().items()
    }
    empty["model_versions"] = ["v3"]
    assert encode_decisions(**empty) == []


@pytest.mark.parametrize("value", [b"", b"garbage", b"\xc3\x01" + bytes(8)])
def test_decode_decision_turns_bad_bytes_into_poison(value: bytes) -> None:
    with pytest.raises(PoisonMessage):
        decode_decision(value)
