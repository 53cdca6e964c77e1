# Types of the C module streams/scoring/_table.c (the decision cache's per-batch loops).
from typing import Any

def digest_rows(words: Any, column_keys: Any, out: Any, /) -> None: ...
def lookup(
    keys: Any,
    probabilities: Any,
    stored_at: Any,
    salt: int,
    shift: int,
    live_after: float,
    digests: Any,
    hit: Any,
    found: Any,
    /,
) -> None: ...
def store(
    keys: Any,
    probabilities: Any,
    stored_at: Any,
    written: Any,
    salt: int,
    shift: int,
    now: float,
    ttl_s: float,
    writes: int,
    digests: Any,
    fresh: Any,
    /,
) -> int: ...
