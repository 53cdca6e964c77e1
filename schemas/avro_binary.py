"""Strict Avro varints: the check stock fastavro does not make.

The Avro spec encodes ``int`` and ``long`` as zigzag base-128 varints of at most 5 and 10 bytes.
fastavro reads any number of continuation bytes and silently drops the bits beyond 64: ``ff`` x11
``01`` and ``ff`` x9 ``7f`` both decode to -2**63, ``80`` x10 ``01`` to 32. A hostile or broken
producer could so smuggle a value the writer never meant past the decoder. Sentinel treats such a
varint as malformed input (DLQ ``undecodable``), as the Java reference decoder does for one longer
than 10 bytes and as the JSON path does for a number beyond int64.

:func:`check_varints` walks one Avro binary body along its writer schema and raises
:class:`MalformedVarint` at the first varint that is longer than its type allows or whose value
does not fit it (a 10th byte above 1 for a long; a value outside int32 for an int). Overlong but
fitting encodings (``80 00`` for 0) stay valid: the spec does not forbid them and fastavro and
Java read them. The walk only looks at varints: truncation, bad UTF-8 and the like are left to
the decoder, which runs first. Cost: ~15 µs per Transaction, so only
:meth:`schemas.avro.SingleObjectCodec.decode_strict` pays it: the scorer's fallback for rows the
C path (``schemas/_wire.c``, which makes the same check) refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

_LONG_BYTES: Final[int] = 10
_INT_BYTES: Final[int] = 5
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_FIXED_SIZES: Final[Mapping[str, int]] = {"null": 0, "boolean": 1, "float": 4, "double": 8}


class MalformedVarint(ValueError):
    """A varint longer than its type allows, or one whose value overflows it."""


def read_strict_varint(body: bytes, pos: int, max_bytes: int = _LONG_BYTES) -> tuple[int, int]:
    """Decode the zigzag varint at ``body[pos]``: ``(value, next position)``.

    Raises MalformedVarint when it runs over ``max_bytes`` or overflows 64 bits, IndexError when
    the body ends inside it.
    """
    result = shift = 0
    for size in range(1, max_bytes + 1):
        byte = body[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >> 64:
                raise MalformedVarint(f"varint of {size} bytes overflows 64 bits")
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
    raise MalformedVarint(f"varint longer than {max_bytes} bytes")


def check_varints(schema: Any, body: bytes, pos: int = 0) -> int:
    """Walk the Avro binary ``body`` from ``pos`` along ``schema``; return where it ends.

    ``schema`` is the writer schema as parsed JSON (named types referenced by name are resolved).
    Raises MalformedVarint at the first malformed varint, IndexError or ValueError on a body the
    decoder would refuse anyway.
    """
    return _Walker().walk(schema, body, pos, None)


class _Walker:
    def __init__(self) -> None:
        self.names: dict[str, Any] = {}

    def _long(self, body: bytes, pos: int) -> tuple[int, int]:
        return read_strict_varint(body, pos, _LONG_BYTES)

    def walk(self, schema: Any, body: bytes, pos: int, namespace: str | None) -> int:
        if isinstance(schema, list):  # a union: the branch index, then that branch
            branch, pos = self._long(body, pos)
            if not 0 <= branch < len(schema):
                raise ValueError(f"union branch {branch} out of range")
            return self.walk(schema[branch], body, pos, namespace)
        if isinstance(schema, str):
            if schema in _FIXED_SIZES:
                return pos + _FIXED_SIZES[schema]
            if schema == "long":
                return self._long(body, pos)[1]
            if schema == "int":
                value, pos = read_strict_varint(body, pos, _INT_BYTES)
                if not _INT_MIN <= value <= _INT_MAX:
                    raise MalformedVarint(f"int varint {value} overflows 32 bits")
                return pos
            if schema in ("string", "bytes"):
                length, pos = self._long(body, pos)
                if length < 0:
                    raise ValueError(f"negative length {length}")
                return pos + length
            named = self.names.get(schema) or self.names.get(f"{namespace}.{schema}")
            if named is None:
                raise ValueError(f"unknown type {schema!r}")
            return self.walk(named, body, pos, namespace)
        kind = schema["type"]
        if kind in ("record", "error", "enum", "fixed"):
            namespace = self._register(schema, namespace)
        if kind in ("record", "error"):
            for item in schema["fields"]:
                pos = self.walk(item["type"], body, pos, namespace)
            return pos
        if kind == "enum":
            return self._long(body, pos)[1]
        if kind == "fixed":
            return pos + int(schema["size"])
        if kind in ("array", "map"):
            return self._blocks(schema, body, pos, namespace)
        return self.walk(kind, body, pos, namespace)  # {"type": "long", "logicalType": ...}

    def _register(self, schema: Mapping[str, Any], namespace: str | None) -> str | None:
        name = str(schema["name"])
        if "." in name:
            namespace = name.rsplit(".", 1)[0]
        else:
            namespace = schema.get("namespace", namespace)
            self.names[name] = schema
        self.names[name if "." in name or not namespace else f"{namespace}.{name}"] = schema
        return namespace

    def _blocks(self, schema: Mapping[str, Any], body: bytes, pos: int, ns: str | None) -> int:
        items = schema["items"] if schema["type"] == "array" else schema["values"]
        width = _FIXED_SIZES.get(items) if isinstance(items, str) else None
        while True:
            count, pos = self._long(body, pos)
            if count == 0:
                return pos
            if count < 0:  # a negative count is followed by the block's size in bytes
                count = -count
                _, pos = self._long(body, pos)
            if width is not None and schema["type"] == "array":
                pos += count * width  # arrays of doubles: no varint inside, skip in one step
                continue
            for _ in range(count):
                if schema["type"] == "map":
                    pos = self.walk("string", body, pos, ns)
                pos = self.walk(items, body, pos, ns)
