"""Decision codecs: the scorer's batch encode, and a general decode for tail and tests.

:func:`encode_decisions` checks and broadcasts a micro-batch's columns here, then writes one
message per row in one C pass (``schemas/_wire.c``): the single-object header (or the Confluent
one) and the body, byte-equal to fastavro's ``schemaless_writer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from schemas import _wire
from schemas.avro import record_codec, zigzag_varint
from schemas.confluent import WriterLookup, confluent_header
from schemas.errors import SchemaError

I64 = npt.NDArray[np.int64]

DECISION_OUTCOMES: Final[tuple[str, ...]] = ("ALLOW", "REVIEW", "BLOCK")
VARIANTS: Final[tuple[str, ...]] = ("A", "B")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _column(name: str, values: Any, dtype: type[np.generic], rows: int) -> npt.NDArray[Any]:
    """``values`` as a ``(rows,)`` array of ``dtype``; a scalar is repeated on every row."""
    try:
        column = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"decision column {name}: {exc}") from exc
    if column.shape == (rows,):
        return np.ascontiguousarray(column)  # the C encoder reads it as one buffer
    if column.ndim == 0:
        return np.full(rows, column)
    raise SchemaError(f"decision column {name} has shape {column.shape}, expected ({rows},)")


def _check_range(name: str, values: npt.NDArray[Any], low: int, high: int) -> None:
    if values.size and (int(values.min()) < low or int(values.max()) > high):
        raise SchemaError(f"decision column {name} has values outside [{low}, {high}]")


@cache  # a handful of distinct values: scorer id + topic, model versions
def _string_block(*texts: str) -> bytes:
    """Avro encoding of consecutive string fields whose values are the same on every row."""
    return b"".join(zigzag_varint(len(raw)) + raw for raw in (t.encode("utf-8") for t in texts))


def encode_decisions(
    *,
    transaction_ids: Sequence[bytes],
    card_ids: Sequence[bytes],
    fraud_probability: npt.ArrayLike,
    predicted_fraud: npt.ArrayLike,
    decision: npt.ArrayLike,
    block_threshold: npt.ArrayLike,
    review_threshold: npt.ArrayLike,
    model_version: npt.ArrayLike,
    model_versions: Sequence[str],
    variant: npt.ArrayLike,
    cache_hit: npt.ArrayLike,
    batch_size: int,
    event_time_ms: npt.ArrayLike,
    scored_at_us: int | npt.ArrayLike,
    latency_ms: npt.ArrayLike,
    scorer_id: str,
    source_topic: str,
    source_partition: npt.ArrayLike,
    source_offset: npt.ArrayLike,
    schema_id: int | None = None,
) -> list[bytes]:
    """One single-object Avro ``Decision`` per row, byte-equal to fastavro's encoding.

    With ``schema_id`` (the registry's id of ``decision.avsc``) each row is Confluent-framed
    instead: ``00``, the id, then the same body (~0.1 µs more per row).

    Ids are UTF-8 bytes; ``decision`` indexes DECISION_OUTCOMES, ``variant`` indexes VARIANTS and
    ``model_version`` indexes ``model_versions``. Array arguments have one value per row (scalars
    are broadcast); ``scored_at_us`` may be one int for the whole batch. Raises SchemaError when
    a column has the wrong length or a value the schema cannot hold (an enum index out of range,
    an int beyond 32 bits). ~0.1 µs per row at N=2,000, ~30 µs per batch of 10 (fastavro: ~10 µs
    per row).
    """
    k = len(transaction_ids)
    if len(card_ids) != k:
        raise SchemaError(f"decision columns disagree: {k} transaction ids, {len(card_ids)} cards")
    outcome = _column("decision", decision, np.int64, k)
    arm = _column("variant", variant, np.int64, k)
    version = _column("model_version", model_version, np.int64, k)
    partition = _column("source_partition", source_partition, np.int64, k)
    _check_range("decision", outcome, 0, len(DECISION_OUTCOMES) - 1)
    _check_range("variant", arm, 0, len(VARIANTS) - 1)
    _check_range("model_version", version, 0, len(model_versions) - 1)
    _check_range("source_partition", partition, _INT32_MIN, _INT32_MAX)
    if not _INT32_MIN <= batch_size <= _INT32_MAX:
        raise SchemaError(f"decision batch_size={batch_size} does not fit an int")
    try:
        return _wire.encode_decisions(
            record_codec("decision").header if schema_id is None else confluent_header(schema_id),
            tuple(_string_block(name) for name in model_versions),
            zigzag_varint(batch_size),
            _string_block(scorer_id, source_topic),
            transaction_ids if isinstance(transaction_ids, list) else list(transaction_ids),
            card_ids if isinstance(card_ids, list) else list(card_ids),
            _column("fraud_probability", fraud_probability, np.float64, k),
            _column("block_threshold", block_threshold, np.float64, k),
            _column("review_threshold", review_threshold, np.float64, k),
            _column("latency_ms", latency_ms, np.float64, k),
            outcome,
            version,
            arm,
            _column("event_time_ms", event_time_ms, np.int64, k),
            _column("scored_at_us", scored_at_us, np.int64, k),
            partition,
            _column("source_offset", source_offset, np.int64, k),
            _column("predicted_fraud", predicted_fraud, np.bool_, k),
            _column("cache_hit", cache_hit, np.bool_, k),
        )
    except ValueError as exc:  # an id that is not bytes
        raise SchemaError(f"decision does not fit: {exc}") from exc


def decode_decision(value: bytes, registry: WriterLookup | None = None) -> dict[str, Any]:
    """Decode one ``Decision`` message (any known writer version) with stock fastavro.

    Single-object or, with a ``registry``, Confluent-framed (``--output-format confluent``).
    Enums come back as their symbols ("ALLOW", "A"), timestamps as integers (event_time in epoch
    ms, scored_at in epoch µs). Raises PoisonMessage (undecodable, unknown_schema) on bad bytes,
    SchemaRegistryUnavailable when the registry cannot answer. Not for the hot path (~10 µs per
    message).
    """
    return record_codec("decision").decode(value, registry)
