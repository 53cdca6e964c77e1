"""Avro schemas of the Sentinel topics, their fingerprints, and single-object framing.

Every Avro value Sentinel writes uses the Avro *single-object encoding* (Avro spec, "Single-object
encoding")::

    0xC3 0x01 | CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form (8 bytes,
    little-endian) | Avro binary body

so a reader always knows which writer schema produced a message, without a registry service.

Schema files and evolution
--------------------------
``schemas/<name>.avsc`` is the *current* schema of a record (``transaction``, ``decision``): the one
writers use and readers resolve into. ``schemas/history/<name>.v<N>.avsc`` keeps every version that
was ever released, the current one included, so old messages stay decodable forever. To evolve a
schema:

1. edit ``schemas/<name>.avsc`` compatibly (add fields *with defaults*, never remove a field
   without a default, never change a type incompatibly);
2. copy it to ``schemas/history/<name>.v<N+1>.avsc``;
3. run ``tests/unit/schemas``: it fails if the current schema is missing from the history or if a
   message written with any historical version no longer decodes into the current one.

Doc-only edits do not change the Parsing Canonical Form, hence not the fingerprint, and need no new
version. Codecs here surface ``timestamp-millis``/``timestamp-micros`` fields as plain integers
(epoch milliseconds / microseconds, exactly the wire value): the logical types document the unit
for other consumers, they are not converted to ``datetime``.

The module also holds the Avro binary primitives the vectorised codecs share: zigzag varints
read and written for a whole column at once, at arbitrary byte offsets (``byte_strided_view``).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import fastavro
import numpy as np
import numpy.typing as npt
from fastavro.schema import to_parsing_canonical_form

from schemas import confluent
from schemas.avro_binary import check_varints
from schemas.confluent import RegisteredSchema, WriterLookup
from schemas.errors import PoisonMessage, SchemaError

Schema = dict[str, Any]

SCHEMA_DIR: Final[Path] = Path(__file__).resolve().parent
HISTORY_DIR: Final[Path] = SCHEMA_DIR / "history"
MAGIC: Final[bytes] = b"\xc3\x01"
HEADER_SIZE: Final[int] = 10  # magic (2) + fingerprint (8)

_HISTORY_FILE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.avsc$")
_CRC64_EMPTY: Final[int] = 0xC15D213AA4D7A795


def _crc64_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        fp = byte
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_TABLE: Final[tuple[int, ...]] = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Avro spec's 64-bit Rabin fingerprint (CRC-64-AVRO) of ``data``, as an unsigned int."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


def zigzag_varint(value: int) -> bytes:
    """Avro binary encoding of one int/long (zigzag, then base-128 varint, low group first)."""
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def parsing_canonical_form(schema: Schema | str) -> str:
    """The Parsing Canonical Form of a schema (docs, defaults, logical types stripped)."""
    return str(to_parsing_canonical_form(schema))


def fingerprint(schema: Schema | str) -> int:
    """CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form (unsigned 64-bit int)."""
    return crc64_avro(parsing_canonical_form(schema).encode("utf-8"))


def single_object_header(schema_fingerprint: int) -> bytes:
    """The 10-byte single-object header: ``C3 01`` then the fingerprint, little-endian."""
    return MAGIC + schema_fingerprint.to_bytes(8, "little")


def _read_schema_file(path: Path) -> Schema:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaError(f"cannot read Avro schema {path}: {exc}") from exc
    if not isinstance(schema, dict):
        raise SchemaError(f"Avro schema {path} is not a JSON object")
    return schema


def load_schema(name: str) -> Schema:
    """The current schema ``schemas/<name>.avsc`` as parsed JSON. Raises SchemaError if unusable."""
    return _read_schema_file(SCHEMA_DIR / f"{name}.avsc")


def load_history(name: str, directory: Path = HISTORY_DIR) -> list[tuple[int, Schema]]:
    """Every released version ``<directory>/<name>.v<N>.avsc`` as ``(N, schema)``, oldest first."""
    versions = []
    for path in directory.glob("*.avsc"):
        match = _HISTORY_FILE.match(path.name)
        if match is None:
            raise SchemaError(f"history file {path} is not named <record>.v<N>.avsc")
        if match["name"] == name:
            versions.append((int(match["version"]), _read_schema_file(path)))
    return sorted(versions, key=lambda version: version[0])


def byte_strided_view(buffer: Any, dtype: str, columns: int = 0) -> npt.NDArray[Any]:
    """A view of ``buffer`` whose element ``i`` is the ``dtype`` value starting at *byte* ``i``.

    The vectorised codecs read and write Avro fields at arbitrary (unaligned) byte offsets through
    it: ``view[positions]`` gathers one value per row in one numpy call. With ``columns`` the view
    is 2-D and row ``i`` holds ``columns`` consecutive values starting at byte ``i``. Writable when
    ``buffer`` is (a numpy uint8 array); read-only over ``bytes``.
    """
    itemsize = np.dtype(dtype).itemsize
    rows = max(len(buffer) - itemsize * max(columns, 1) + 1, 0)
    shape, strides = ((rows, columns), (1, itemsize)) if columns else ((rows,), (1,))
    return np.ndarray(shape=shape, dtype=dtype, buffer=buffer, strides=strides)


def strip_logical_types(schema: Any) -> Any:
    """A copy of ``schema`` without ``logicalType`` annotations (same canonical form).

    Decoding with it keeps timestamps as the integers on the wire instead of ``datetime``.
    """
    if isinstance(schema, dict):
        return {
            key: strip_logical_types(value) for key, value in schema.items() if key != "logicalType"
        }
    if isinstance(schema, list):
        return [strip_logical_types(item) for item in schema]
    return schema


@dataclass(frozen=True)
class WriterSchema:
    """One known writer schema: its fingerprint and its fastavro-parsed form."""

    fingerprint: int
    schema: Schema
    parsed: Any


class SingleObjectCodec:
    """The general (stock fastavro) codec of one record type in single-object framing.

    ``reader_schema`` is the shape decoded records take; ``writer_schemas`` are every schema a
    message may have been written with (the reader schema is always included). ``encode`` writes
    with the reader schema. Cost: ~10 µs per message each way; the hot path uses the vectorised
    codecs and falls back to this one only for rows they cannot take.
    """

    def __init__(self, reader_schema: Schema, writer_schemas: Iterable[Schema] = ()) -> None:
        self.name: str = _full_name(reader_schema)
        self.fingerprint: int = fingerprint(reader_schema)
        self.header: bytes = single_object_header(self.fingerprint)
        try:
            self._reader = fastavro.parse_schema(strip_logical_types(reader_schema))
            writers = {
                self.fingerprint: WriterSchema(self.fingerprint, reader_schema, self._reader)
            }
            for schema in writer_schemas:
                fp = fingerprint(schema)
                if fp not in writers:
                    parsed = fastavro.parse_schema(strip_logical_types(schema))
                    writers[fp] = WriterSchema(fp, schema, parsed)
        except (ValueError, TypeError, KeyError) as exc:  # fastavro's SchemaParseException is one
            raise SchemaError(f"invalid Avro schema for {self.name}: {exc}") from exc
        self.writers: Mapping[int, WriterSchema] = writers
        # writer schemas met through a registry (keyed by fingerprint, so by layout, not by id)
        self._registered: dict[int, WriterSchema] = {}

    @classmethod
    def for_record(cls, name: str) -> SingleObjectCodec:
        """Codec whose reader is ``schemas/<name>.avsc`` and writers are it plus its history."""
        return cls(load_schema(name), (schema for _, schema in load_history(name)))

    def encode(self, record: Mapping[str, Any], schema_id: int | None = None) -> bytes:
        """Encode ``record`` with the reader schema; SchemaError if it won't fit.

        Single-object framing, or the Confluent one when given the registry's ``schema_id`` of
        the reader schema.
        """
        body = io.BytesIO()
        body.write(self.header if schema_id is None else confluent.confluent_header(schema_id))
        try:
            fastavro.schemaless_writer(body, self._reader, dict(record), strict=True)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise SchemaError(f"record does not fit {self.name}: {exc}") from exc
        return body.getvalue()

    def decode(self, value: bytes, registry: WriterLookup | None = None) -> dict[str, Any]:
        """Decode one single-object or Confluent-framed message into the reader schema's shape.

        Raises PoisonMessage ``undecodable`` (neither framing, truncated, corrupt, trailing
        bytes; Confluent framing without a ``registry``) or ``unknown_schema`` (a fingerprint
        none of the known writer schemas has, or a schema id the registry does not know);
        SchemaRegistryUnavailable when the registry could not answer. For readers of
        Sentinel's own topics; input from outside goes through :meth:`decode_strict`.
        """
        writer, offset = self.writer_of(value, registry)
        return self._read(value, writer, offset)

    def decode_strict(self, value: bytes, registry: WriterLookup | None = None) -> dict[str, Any]:
        """:meth:`decode`, and also refuse a varint longer than its type or overflowing it.

        fastavro reads over-long varints and drops the bits beyond 64 (see avro_binary); the
        extra walk costs ~15 µs per message, so only the scorer's fallback for input it does not
        control pays it.
        """
        writer, offset = self.writer_of(value, registry)
        record = self._read(value, writer, offset)
        try:
            check_varints(writer.schema, value, offset)
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise PoisonMessage("undecodable", f"malformed {self.name} body: {exc}") from exc
        return record

    def writer_of(
        self, value: bytes, registry: WriterLookup | None = None
    ) -> tuple[WriterSchema, int]:
        """The writer schema of ``value`` and where its Avro body starts (same errors as decode)."""
        if value[:1] == confluent.MAGIC_BYTE:
            if len(value) < confluent.HEADER_SIZE:
                raise PoisonMessage("undecodable", f"truncated Confluent {self.name} header")
            schema_id = confluent.schema_id_of(value)
            if registry is None:
                raise PoisonMessage(
                    "undecodable",
                    f"Confluent wire format (schema id {schema_id}) but no schema registry is "
                    "configured",
                )
            return self.registered(registry.writer_schema(schema_id)), confluent.HEADER_SIZE
        if len(value) < HEADER_SIZE or value[:2] != MAGIC:
            raise PoisonMessage(
                "undecodable",
                f"not an Avro {self.name}: no C3 01 header (single-object), no 00 (Confluent)",
            )
        fp = int.from_bytes(value[2:HEADER_SIZE], "little")
        writer = self.writers.get(fp)
        if writer is None:
            raise PoisonMessage(
                "unknown_schema", f"writer schema fingerprint {fp:016x} is not a known {self.name}"
            )
        return writer, HEADER_SIZE

    def registered(self, registered: RegisteredSchema) -> WriterSchema:
        """The parsed writer of a registry schema (a known one, else parsed once and kept)."""
        writer = self.writers.get(registered.fingerprint) or self._registered.get(
            registered.fingerprint
        )
        if writer is not None:
            return writer
        try:
            parsed = fastavro.parse_schema(strip_logical_types(registered.schema))
        except Exception as exc:  # fastavro raises many types for a bad schema
            raise PoisonMessage(
                "unknown_schema",
                f"schema id {registered.schema_id} is not a valid Avro schema: {exc}",
            ) from exc
        writer = WriterSchema(registered.fingerprint, registered.schema, parsed)
        self._registered[registered.fingerprint] = writer
        return writer

    def _read(self, value: bytes, writer: WriterSchema, offset: int) -> dict[str, Any]:
        body = io.BytesIO(value)
        body.seek(offset)
        reader = None if writer.fingerprint == self.fingerprint else self._reader
        try:
            record = fastavro.schemaless_reader(body, writer.parsed, reader)
        except Exception as exc:
            # Corrupt input makes fastavro raise many types (EOFError, ValueError, IndexError,
            # UnicodeDecodeError, SchemaResolutionError...): each becomes a poison message routed
            # to the DLQ with its text, never a crash of the scorer.
            problem = "truncated" if isinstance(exc, EOFError) else f"{type(exc).__name__}: {exc}"
            raise PoisonMessage("undecodable", f"corrupt {self.name} body: {problem}") from exc
        trailing = len(value) - body.tell()
        if trailing:
            raise PoisonMessage(
                "undecodable", f"{trailing} trailing bytes after the {self.name} record"
            )
        if not isinstance(record, dict):
            raise PoisonMessage("undecodable", f"{self.name} body is not a record")
        return record


def _full_name(schema: Schema) -> str:
    name = schema.get("name")
    if not isinstance(name, str):
        raise SchemaError("a record schema needs a name")
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


@cache
def record_codec(name: str) -> SingleObjectCodec:
    """The process-wide general codec of ``schemas/<name>.avsc`` (loaded once, then shared)."""
    return SingleObjectCodec.for_record(name)


# Vectorised Avro varints: one value per row, read or written as little-endian 8-byte words at
# arbitrary byte offsets through byte_strided_view.
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]
_LOW7: Final[int] = 0x7F
_CONT_BITS: Final[np.uint64] = np.uint64(0x8080808080808080)
# Per varint size (index, in bytes): the size's bytes, their high bits, and the continuation bits
# a well-formed varint of that size has (all bytes but the last). Size 0 is impossible (1 never
# matches high bits); sizes 9-10 only exist beyond the first 8-byte word.
_BYTE_MASKS: Final[U64] = np.array([(1 << (8 * s)) - 1 for s in range(9)] + [0], dtype=np.uint64)
_STOP_BITS: Final[U64] = _BYTE_MASKS & _CONT_BITS
_VARINT_LIMITS: Final[U64] = np.array([1 << (7 * i) for i in range(1, 10)], dtype=np.uint64)
_CONTINUATION: Final[U64] = np.array(
    [1] + [sum(0x80 << (8 * b) for b in range(min(size - 1, 8))) for size in range(1, 11)],
    dtype=np.uint64,
)


def _zigzag_decode(zigzag: U64) -> I64:
    return (zigzag >> 1).view(np.int64) ^ -(zigzag & 1).view(np.int64)


def _compact7(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Join the low 7 bits of each byte of little-endian words: the payload of a varint."""
    x = (x & 0x007F007F007F007F) | ((x & 0x7F007F007F007F00) >> 1)
    x = (x & 0x00003FFF00003FFF) | ((x & 0x3FFF00003FFF0000) >> 2)
    return (x & 0x000000000FFFFFFF) | ((x & 0x0FFFFFFF00000000) >> 4)


def read_varints(words: U64, pos: I64) -> tuple[I64, I64 | int, Bools | None]:
    """Decode one zigzag varint (Avro int/long) at each byte position in ``pos``.

    ``words[p]`` is the little-endian 8-byte word at byte ``p``. Returns values, sizes in bytes
    and ``ok`` (None: all fine); ``ok`` is False for varints longer than 8 bytes, which the
    general path decodes.
    """
    x = words[pos]
    if not (x & 0x81).any():  # all one byte and non-negative: the usual case for string lengths
        return ((x & _LOW7) >> 1).view(np.int64), 1, None
    stop = ~x & _CONT_BITS  # bit 8i+7 set where byte i ends the varint
    first_stop = stop & (~stop + np.uint64(1))  # 0 when none of the 8 bytes ends it
    size = ((np.bitwise_count(first_stop - np.uint64(1)) >> 3) + 1).astype(np.int64)
    return _zigzag_decode(_compact7(x & _BYTE_MASKS[size])), size, size <= 8


def read_varints_of_size(words: U64, pos: I64, size: I64) -> tuple[I64, Bools]:
    """Decode varints known to occupy ``size`` bytes; ``ok`` False where they do not."""
    size = np.minimum(np.maximum(size, 0), 9)  # (np.clip costs 5x more per call)
    x = words[pos]
    ok = (x & _STOP_BITS[size]) == _CONTINUATION[size]
    return _zigzag_decode(_compact7(x & _BYTE_MASKS[size])), ok


@dataclass(frozen=True)
class EncodedVarints:
    """Zigzag varints of a column: the first 8 bytes of each as a little-endian word, their
    sizes, and bytes 8-9 of the few that need them (|value| >= 2**55) as words."""

    words: npt.NDArray[Any]
    sizes: I64 | int
    long_rows: I64
    long_words: npt.NDArray[Any]


def _spread7(value: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Spread the low 56 bits of each value into 7-bit groups, one per byte (little-endian)."""
    x = (value & 0x0FFFFFFF) | ((value & 0x00FFFFFFF0000000) << 4)
    x = (x & 0x00003FFF00003FFF) | ((x & 0x0FFFC0000FFFC000) << 2)
    return (x & 0x007F007F007F007F) | ((x & 0x3F803F803F803F80) << 1)


_NO_ROWS: Final[I64] = np.zeros(0, dtype=np.int64)


def encode_varints(values: I64) -> EncodedVarints:
    """Avro int/long encoding of every value of an int64 column, vectorised."""
    zigzag = ((values << 1) ^ (values >> 63)).view(np.uint64)
    top = int(zigzag.max()) if zigzag.size else 0
    if top <= 0x7F:  # all one byte: lengths, partitions
        return EncodedVarints(zigzag, 1, _NO_ROWS, _NO_ROWS)
    sizes = np.searchsorted(_VARINT_LIMITS, zigzag, side="right").astype(np.int64) + 1
    words = _spread7(zigzag) | _CONTINUATION[sizes]
    if top < 1 << 56:  # every varint fits its first word: the usual case
        return EncodedVarints(words, sizes, _NO_ROWS, _NO_ROWS)
    long_rows = np.flatnonzero(sizes > 8)
    high = zigzag[long_rows]
    long_words = ((high >> 56) & 0x7F) | ((high >> 63) << 8)
    long_words |= np.where(sizes[long_rows] == 10, 0x80, 0).astype(np.uint64)
    return EncodedVarints(words, sizes, long_rows, long_words)


def read_string_spans(words: U64, pos: I64, limit: I64) -> tuple[I64, I64, Bools]:
    """Start, end and validity of an Avro string at ``pos`` that must end before ``limit``."""
    length, size, ok = read_varints(words, pos)
    start = pos + size
    if ok is None:
        end = start + length
        ok = end < limit
    else:
        end = start + np.clip(length, 0, limit)  # the clip keeps corrupt lengths from overflowing
        ok &= (length >= 0) & (end < limit)
    return start, np.minimum(end, limit), ok


def utf8_strings(
    octets: npt.NDArray[np.uint8], starts: I64, ends: I64
) -> tuple[list[bytes], list[int]]:
    """The byte strings ``octets[starts[i]:ends[i]]``, and the positions of those that are not
    valid UTF-8 (an Avro string must be; fastavro refuses the others).

    The strings are gathered into one buffer separated by 0xFF, a byte valid UTF-8 never
    contains, and split in one C call: cheaper than slicing row by row.
    """
    if not len(starts):
        return [], []
    sizes = ends - starts + 1
    stops = np.cumsum(sizes)
    text = octets[np.repeat(starts - (stops - sizes), sizes) + np.arange(int(stops[-1]))]
    text[stops - 1] = 0
    if int(text.max()) < 0x80:  # all ASCII, hence valid UTF-8, and no 0xFF inside
        text[stops - 1] = 0xFF
        return text.tobytes().split(b"\xff")[:-1], []
    raw = octets.tobytes()
    strings = [raw[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    bad = []
    for position, value in enumerate(strings):
        if not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(position)
    return strings, bad
