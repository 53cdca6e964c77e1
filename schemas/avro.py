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

The scorer's per-batch codecs (Transaction v1 decode, Decision encode) are in C,
``schemas/_wire.c``, wrapped by ``transaction_codec`` and ``decision_codec``.
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
    with the reader schema. Cost: ~10 µs per message each way; the hot path uses the C codecs
    (``schemas/_wire.c``) and falls back to this one only for rows they cannot take.
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
