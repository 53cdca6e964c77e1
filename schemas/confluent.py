"""The Confluent Schema Registry wire format, beside Sentinel's own single-object framing.

Producers using a Confluent serializer (Java/Go ``KafkaAvroSerializer``, confluent-kafka's
``AvroSerializer``) write::

    0x00 | schema id (4 bytes, big-endian, assigned by the registry) | Avro binary body

The writer schema is not in the message: a reader asks the registry for it by id. The first byte
tells the framings apart: ``00`` Confluent, ``C3`` single-object, ``{`` (after spaces) JSON.

This module holds only the contract: the framing, the resolved schema, and the
:class:`WriterLookup` the codecs call. The registry client that implements it lives in
``streams.registry`` (``schemas`` imports nothing of ours and no network client).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Protocol

MAGIC_BYTE: Final[bytes] = b"\x00"
HEADER_SIZE: Final[int] = 5  # magic (1) + schema id (4)
MAX_SCHEMA_ID: Final[int] = 2**31 - 1  # Confluent ids are positive Java ints


def confluent_header(schema_id: int) -> bytes:
    """The 5-byte header of a value written with the registry's schema ``schema_id``."""
    if not 0 <= schema_id <= MAX_SCHEMA_ID:
        raise ValueError(f"schema id {schema_id} is outside 0..{MAX_SCHEMA_ID}")
    return MAGIC_BYTE + schema_id.to_bytes(4, "big")


def schema_id_of(value: bytes) -> int:
    """The schema id of a Confluent-framed ``value`` (at least 5 bytes, starting with 00)."""
    return int.from_bytes(value[1:HEADER_SIZE], "big")


@dataclass(frozen=True)
class RegisteredSchema:
    """A writer schema the registry holds under ``schema_id``, parsed once.

    ``fingerprint`` is the CRC-64-AVRO fingerprint of its Parsing Canonical Form: the codecs use
    it to tell whether the writer layout is one they decode natively.
    """

    schema_id: int
    fingerprint: int
    schema: dict[str, Any]


class WriterLookup(Protocol):
    """Where codecs find the writer schema of a Confluent-framed value."""

    def writer_schema(self, schema_id: int) -> RegisteredSchema:
        """The Avro schema registered under ``schema_id``.

        Raises :class:`~schemas.errors.PoisonMessage` ``unknown_schema`` when the registry has
        no such id (or it is not an Avro schema), and
        :class:`~schemas.errors.SchemaRegistryUnavailable` when the registry could not answer
        (down, slow, 5xx): that is not the message's fault. May block on the network for an id
        not seen before.
        """
        ...
