"""Decision codecs: the scorer's vectorised batch encode, and a general decode for tail and tests.

:func:`encode_decisions` builds every ``Decision`` of a micro-batch in ONE uint8 buffer with a few
numpy writes per field, then slices it into one single-object message per row; its output is
byte-equal to fastavro's ``schemaless_writer`` behind the single-object header.

How the buffer is written: row sizes are computed first (varint sizes from the values, string
lengths), then each field is written for all rows at once, in field order, through byte-strided
views (8-byte words, doubles, single bytes). A word write may spill up to 7 bytes past its field;
that is harmless because every later field of the row is written afterwards, and the spill of a
row's last field lands in the next row's 10-byte header, which is written last of all.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from schemas.avro import (
    HEADER_SIZE,
    EncodedVarints,
    byte_strided_view,
    encode_varints,
    record_codec,
    zigzag_varint,
)
from schemas.confluent import WriterLookup, confluent_header
from schemas.errors import SchemaError

I64 = npt.NDArray[np.int64]

DECISION_OUTCOMES: Final[tuple[str, ...]] = ("ALLOW", "REVIEW", "BLOCK")
VARIANTS: Final[tuple[str, ...]] = ("A", "B")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_FIXED_SIZE: Final[int] = 8 + 1 + 1 + 8 + 8  # fraud_probability .. review_threshold


class _Rows:
    """The batch's output buffer and the byte-strided views fields are written through."""

    def __init__(self, total: int) -> None:
        self.octets = np.empty(total + 16, dtype=np.uint8)
        self.words = byte_strided_view(self.octets, "<u8")
        self.doubles = byte_strided_view(self.octets, "<f8")

    def varints(self, pos: I64, encoded: EncodedVarints) -> I64:
        """Write one varint per row at ``pos``; returns the positions after them."""
        self.words[pos] = encoded.words
        if encoded.long_rows.size:
            self.words[pos[encoded.long_rows] + 8] = encoded.long_words
        return pos + encoded.sizes

    def strings(self, pos: I64, strings: Sequence[bytes], lengths: I64) -> I64:
        """Copy each row's string 8 bytes at a time (the last word spills, see module doc)."""
        source = byte_strided_view(b"".join([*strings, bytes(8)]), "<u8")
        source_start = np.cumsum(lengths) - lengths
        n_words = (lengths + 7) >> 3
        if not len(n_words):
            return pos
        shortest = int(n_words.min())
        target = pos.copy()
        for word in range(int(n_words.max())):
            if word < shortest:
                self.words[target] = source[source_start]
            else:
                rows = np.flatnonzero(n_words > word)
                self.words[target[rows]] = source[source_start[rows]]
            target += 8
            source_start += 8
        return pos + lengths

    def block(self, pos: I64, block: bytes) -> I64:
        """Write the same bytes on every row at ``pos``; returns the positions after them."""
        padded = block + bytes(-len(block) % 8)
        for offset in range(0, len(block), 8):
            self.words[pos + offset] = int.from_bytes(padded[offset : offset + 8], "little")
        return pos + len(block)


def _column(name: str, values: Any, dtype: type[np.generic], rows: int) -> npt.NDArray[Any]:
    """``values`` as a ``(rows,)`` array of ``dtype``; a scalar is repeated on every row."""
    try:
        column = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"decision column {name}: {exc}") from exc
    if column.shape == (rows,):
        return column
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
    an int beyond 32 bits). Pure numpy: ~0.3 µs per row at N=1,000 (fastavro: ~10 µs).
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
    tx_lengths = np.fromiter(map(len, transaction_ids), dtype=np.int64, count=k)
    card_lengths = np.fromiter(map(len, card_ids), dtype=np.int64, count=k)
    tx_varints, card_varints = encode_varints(tx_lengths), encode_varints(card_lengths)
    version_blocks = [_string_block(name) for name in model_versions]
    event_varints = encode_varints(_column("event_time_ms", event_time_ms, np.int64, k))
    partition_varints = encode_varints(partition)
    offset_varints = encode_varints(_column("source_offset", source_offset, np.int64, k))
    batch_block = zigzag_varint(batch_size)
    lineage_block = _string_block(scorer_id, source_topic)
    scored_at: bytes | EncodedVarints
    if isinstance(scored_at_us, int | np.integer):
        scored_at = zigzag_varint(int(scored_at_us))
        scored_at_sizes: I64 | int = len(scored_at)
    else:
        scored_at = encode_varints(_column("scored_at_us", scored_at_us, np.int64, k))
        scored_at_sizes = scored_at.sizes
    constant_size = (
        HEADER_SIZE + _FIXED_SIZE + 2 + len(batch_block) + 8 + len(lineage_block)
        + (scored_at_sizes if isinstance(scored_at_sizes, int) else 0)
    )  # fmt: skip
    sizes = tx_lengths + card_lengths + constant_size
    for varying in (tx_varints, card_varints, event_varints, partition_varints, offset_varints):
        sizes += varying.sizes
    if not isinstance(scored_at_sizes, int):
        sizes += scored_at_sizes
    if len(version_blocks) > 1:
        sizes += np.array([len(block) for block in version_blocks], dtype=np.int64)[version]
    else:
        sizes += len(version_blocks[0])
    ends = np.cumsum(sizes)
    starts = ends - sizes
    total = int(ends[-1]) if k else 0
    out = _Rows(total)
    pos = out.varints(starts + HEADER_SIZE, tx_varints)
    pos = out.strings(pos, transaction_ids, tx_lengths)
    pos = out.varints(pos, card_varints)
    pos = out.strings(pos, card_ids, card_lengths)
    out.doubles[pos] = _column("fraud_probability", fraud_probability, np.float64, k)
    out.octets[pos + 8] = _column("predicted_fraud", predicted_fraud, np.bool_, k)
    out.octets[pos + 9] = outcome << 1  # zigzag of a small enum index, one byte
    out.doubles[pos + 10] = _column("block_threshold", block_threshold, np.float64, k)
    out.doubles[pos + 18] = _column("review_threshold", review_threshold, np.float64, k)
    pos = pos + _FIXED_SIZE
    if len(version_blocks) == 1:
        pos = out.block(pos, version_blocks[0])
    else:
        pos_after = pos.copy()
        for index, block in enumerate(version_blocks):
            rows = np.flatnonzero(version == index)
            pos_after[rows] = out.block(pos[rows], block)
        pos = pos_after
    out.octets[pos] = arm << 1
    out.octets[pos + 1] = _column("cache_hit", cache_hit, np.bool_, k)
    pos = out.block(pos + 2, batch_block)
    pos = out.varints(pos, event_varints)
    pos = out.block(pos, scored_at) if isinstance(scored_at, bytes) else out.varints(pos, scored_at)
    out.doubles[pos] = _column("latency_ms", latency_ms, np.float64, k)
    pos = out.block(pos + 8, lineage_block)
    pos = out.varints(pos, partition_varints)
    out.varints(pos, offset_varints)
    header = record_codec("decision").header  # last: it overwrites spills from the row before
    out.words[starts] = int.from_bytes(header[:8], "little")
    byte_strided_view(out.octets, "<u2")[starts + 8] = int.from_bytes(header[8:], "little")
    raw = out.octets[:total].tobytes()
    if schema_id is not None:
        # The body is written behind a 10-byte header whatever the framing (word writes of a
        # row's last field spill into the next row's header, see the module doc): reframe here.
        prefix = confluent_header(schema_id)
        bodies = (starts + HEADER_SIZE).tolist()
        return [prefix + raw[a:b] for a, b in zip(bodies, ends.tolist(), strict=True)]
    return [raw[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def decode_decision(value: bytes, registry: WriterLookup | None = None) -> dict[str, Any]:
    """Decode one ``Decision`` message (any known writer version) with stock fastavro.

    Single-object or, with a ``registry``, Confluent-framed (``--output-format confluent``).
    Enums come back as their symbols ("ALLOW", "A"), timestamps as integers (event_time in epoch
    ms, scored_at in epoch µs). Raises PoisonMessage (undecodable, unknown_schema) on bad bytes,
    SchemaRegistryUnavailable when the registry cannot answer. Not for the hot path (~10 µs per
    message).
    """
    return record_codec("decision").decode(value, registry)
