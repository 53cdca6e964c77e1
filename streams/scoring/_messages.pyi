# Types of the C module streams/scoring/_messages.c (the scoring loop's per-message plumbing).
from typing import Any

def read_batch(messages: list[Any], partitions: Any, offsets: Any, /) -> list[bytes | None] | None:
    """Values of ``messages``, their partitions (int32) and offsets (int64) written into the two
    arrays; None, with the arrays partly written, if any message carries an error."""

def produce_dicts(
    values: list[bytes] | list[bytes | None], keys: list[bytes] | list[bytes | None], /
) -> list[dict[str, Any]]:
    """``[{"value": v, "key": k} for v, k in zip(values, keys)]``; ValueError if lengths differ."""

def offset_bounds(
    topic: str, partitions: Any, offsets: Any, /
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """Per partition of a batch ((topic, partition) keys): its lowest offset, its highest + 1.
    ``partitions`` int32 and ``offsets`` int64, as many of each; ValueError otherwise."""
