# Types of the C module schemas/_wire.c (the scorer's per-batch Avro codecs).
from typing import Any

def decode_v1(
    values: list[bytes],
    header: bytes,
    confluent_ids: bytes,
    eligible: bytes | None,
    max_bytes: int,
    index: Any,
    event_time: Any,
    matrix: Any,
    /,
) -> tuple[int, list[bytes], list[bytes], list[int]]: ...
def encode_decisions(
    prefix: bytes,
    version_blocks: tuple[bytes, ...],
    batch_block: bytes,
    lineage_block: bytes,
    transaction_ids: list[bytes],
    card_ids: list[bytes],
    fraud_probability: Any,
    block_threshold: Any,
    review_threshold: Any,
    latency_ms: Any,
    decision: Any,
    model_version: Any,
    variant: Any,
    event_time: Any,
    scored_at: Any,
    source_partition: Any,
    source_offset: Any,
    predicted_fraud: Any,
    cache_hit: Any,
    /,
) -> list[bytes]: ...
