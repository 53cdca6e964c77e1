"""Hypothesis strategies and a stock-fastavro reference shared by the schema tests."""

from __future__ import annotations

import io
from functools import cache
from typing import Any

import fastavro
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from hypothesis import strategies as st

from schemas.avro import load_schema, strip_logical_types

LONGS = st.integers(-(2**63), 2**63 - 1)
INTS = st.integers(-(2**31), 2**31 - 1)
# Any text (non-ASCII included; surrogates excluded, as UTF-8 cannot carry them); lengths beyond
# 63 characters need a two-byte length varint.
TEXT = st.text(max_size=90)
ANY_DOUBLE = st.floats(allow_nan=True, allow_infinity=True)
SANE_PCA = st.floats(-1000.0, 1000.0)
SANE_AMOUNT = st.floats(0.0, 1_000_000.0)


def transactions(sane: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    """Transaction records; ``sane`` ones pass validation, others hold any double at all."""
    pca, amount = (SANE_PCA, SANE_AMOUNT) if sane else (ANY_DOUBLE, ANY_DOUBLE)
    return st.fixed_dictionaries(
        {
            "transaction_id": TEXT,
            "card_id": TEXT,
            "event_time": LONGS,
            "amount": amount,
            "features": st.lists(pca, min_size=28, max_size=28),
        }
    )


@cache
def parsed(name: str) -> Any:
    """The current schema parsed by fastavro, timestamps left as integers."""
    return fastavro.parse_schema(strip_logical_types(load_schema(name)))


@cache
def fastavro_header(name: str) -> bytes:
    """Single-object header computed by fastavro's own fingerprint code (independent of ours)."""
    canonical = to_parsing_canonical_form(load_schema(name))
    return b"\xc3\x01" + bytes.fromhex(fastavro_fingerprint(canonical, "CRC-64-AVRO"))


def fastavro_encode(name: str, record: dict[str, Any]) -> bytes:
    """Stock fastavro schemaless_writer behind the single-object header."""
    out = io.BytesIO()
    out.write(fastavro_header(name))
    fastavro.schemaless_writer(out, parsed(name), record)
    return out.getvalue()
