"""Replay a Kaggle-format CSV into the transactions topic, as a payment system would.

The Kaggle data has no card or transaction ids, so the replayer assigns them: card ids drawn from
a Zipf-like distribution (so cards recur, as real cards do), unique transaction ids, event time =
the moment of sending. Options mix in malformed messages (``bad_fraction``), redeliveries of
recent transactions (``duplicate_fraction``, what the decision cache is for) and feature shifts
(``shifts``, to demonstrate drift).
"""

from __future__ import annotations

import csv
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from confluent_kafka import Producer

from schemas.errors import ConfigError
from schemas.features import FEATURE_NAMES, N_PCA_FEATURES
from schemas.transaction_codec import encode_transaction, encode_transaction_json
from streams.config import KafkaSettings

POISON_KINDS = (
    "garbage",
    "truncated",
    "json_missing_field",
    "json_wrong_type",
    "feature_count",
    "not_finite",
    "absurd_value",
    "oversize",
)


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay: how many, how fast, in which format, with what mixed in.

    Raises ConfigError naming the first out-of-range option.
    """

    count: int | None = None  # None: every row once
    rate: float = 0.0  # transactions per second; 0 = as fast as possible
    fmt: Literal["avro", "json"] = "avro"
    bad_fraction: float = 0.0
    duplicate_fraction: float = 0.0
    n_cards: int = 20_000
    seed: int = 1
    max_message_bytes: int = 65_536
    shift: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]] | None = None

    def __post_init__(self) -> None:
        for name in ("bad_fraction", "duplicate_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be in [0, 1), got {value}")
        if not self.rate >= 0:  # `not >=` also refuses NaN
            raise ConfigError(f"rate must be >= 0, got {self.rate}")
        if self.count is not None and self.count < 0:
            raise ConfigError(f"count must be >= 0, got {self.count}")
        if self.n_cards < 1:
            raise ConfigError(f"cards must be >= 1, got {self.n_cards}")


@dataclass
class ReplayResult:
    """What was sent. ``labels`` maps transaction id -> Class for rows with a label."""

    sent: int = 0
    good: int = 0
    bad: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    labels: dict[bytes, int] = field(default_factory=dict)


def load_csv(path: Path) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8] | None]:
    """Read a Kaggle-format CSV: the (n, 29) feature matrix and the Class column if present.

    Raises ConfigError naming missing columns or the first unreadable line.
    """
    if not path.exists():
        raise ConfigError(
            f"{path} does not exist (make one with 'sentinel data synth --out {path}')"
        )
    with open(path, newline="") as fh:
        header = next(csv.reader(fh), None)
    if header is None:
        raise ConfigError(f"{path} is empty")
    header = [h.strip().strip('"') for h in header]
    missing = [c for c in FEATURE_NAMES if c not in header]
    if missing:
        raise ConfigError(f"{path} lacks column(s) {', '.join(missing)}")
    columns = [header.index(c) for c in FEATURE_NAMES]
    label_col = header.index("Class") if "Class" in header else None
    wanted = columns + ([label_col] if label_col is not None else [])
    try:
        table = np.loadtxt(
            path,
            delimiter=",",
            skiprows=1,
            usecols=wanted,
            ndmin=2,
            converters={label_col: lambda s: float(str(s).strip('"'))}
            if label_col is not None
            else None,
        )
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    features = table[:, : len(columns)]
    labels = table[:, -1].astype(np.int8) if label_col is not None else None
    return features, labels


def card_ids(n: int, n_cards: int, rng: np.random.Generator) -> list[bytes]:
    """``n`` card ids from a Zipf-like distribution over ``n_cards`` cards (rank^-1.1)."""
    weights = 1.0 / np.arange(1, n_cards + 1) ** 1.1
    ranks = rng.choice(n_cards, size=n, p=weights / weights.sum())
    return [b"card-%06d" % r for r in ranks.tolist()]


def poison_message(kind: str, good: dict[str, object], max_bytes: int) -> bytes:
    """One malformed transaction of the given kind, derived from a good one."""
    if kind == "garbage":
        return b"\x00\xffnot a transaction\x13\x37"
    if kind == "truncated":
        return encode_transaction(good)[:-40]
    if kind == "json_missing_field":
        return json.dumps({k: v for k, v in good.items() if k != "amount"}).encode()
    if kind == "json_wrong_type":
        return json.dumps({**good, "amount": "twelve"}).encode()
    if kind == "feature_count":
        return encode_transaction({**good, "features": list(good["features"])[:20]})  # type: ignore[call-overload]
    if kind == "not_finite":
        feats = list(good["features"])  # type: ignore[call-overload]
        feats[3] = float("nan")
        return encode_transaction({**good, "features": feats})
    if kind == "absurd_value":
        return encode_transaction({**good, "amount": 5e12})
    if kind == "oversize":
        return encode_transaction({**good, "transaction_id": "x" * (max_bytes + 1)})
    raise ValueError(kind)


def replay(
    settings: KafkaSettings,
    topic: str,
    features: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int8] | None,
    options: ReplayOptions,
    progress: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Produce transactions to ``topic``; blocks until every record is acknowledged.

    ``on_progress(sent, total)`` is called from this thread every 1,024 records and at the end
    (the console's load tester). Raises ConfigError on an empty source and KafkaException if the
    broker refuses records.
    """
    n_rows = features.shape[0]
    if n_rows == 0:
        raise ConfigError("nothing to replay: the source has no rows")
    total = options.count if options.count is not None else n_rows
    rng = np.random.default_rng(options.seed)
    if options.shift is not None:
        features = options.shift(features.copy())
    cards = card_ids(total, options.n_cards, rng)
    kinds = rng.random(total)
    bad_kind = rng.integers(0, len(POISON_KINDS), size=total)
    prefix = uuid.uuid4().hex[:12]
    encode = encode_transaction if options.fmt == "avro" else encode_transaction_json
    producer = Producer(
        settings.client_config(
            {
                "linger.ms": 5,
                "compression.type": "lz4",
                "acks": "all",
                "queue.buffering.max.messages": 1_000_000,
                "batch.num.messages": 10_000,
            }
        )
    )
    result = ReplayResult()
    recent: list[tuple[bytes, bytes]] = []
    began = time.monotonic()
    meter = _Progress(total) if progress else None
    # Each row becomes Python floats when it is sent (~1 us): a 2M-row source made into lists
    # up front held 58M objects, and the collector's full passes over them slowed the loop to
    # ~8k tx/s and delayed records already stamped (relay p50 356 ms at 1k tx/s).
    pca, amounts = features[:, :N_PCA_FEATURES], features[:, N_PCA_FEATURES]
    for i in range(total):
        row = i % n_rows
        if recent and kinds[i] < options.duplicate_fraction:
            key, value = recent[int(rng.integers(len(recent)))]
            result.duplicates += 1
        else:
            tx_id = f"tx-{prefix}-{i:09d}"
            tx = {
                "transaction_id": tx_id,
                "card_id": cards[i].decode(),
                "event_time": int(time.time() * 1000),
                "amount": float(amounts[row]),
                "features": pca[row].tolist(),
            }
            key = cards[i]
            if kinds[i] >= 1 - options.bad_fraction:
                value = poison_message(POISON_KINDS[bad_kind[i]], tx, options.max_message_bytes)
                result.bad += 1
            else:
                value = encode(tx)
                result.good += 1
                if labels is not None:
                    result.labels[tx_id.encode()] = int(labels[row])
                recent.append((key, value))
                if len(recent) > 1000:
                    recent = recent[-500:]
        _produce(producer, topic, value, key)
        result.sent += 1
        if options.rate:
            ahead = result.sent / options.rate - (time.monotonic() - began)
            if ahead > 0.001:
                time.sleep(ahead)
        if meter is not None and i % 2048 == 0:
            meter.update(result.sent)
        if on_progress is not None and i % 1024 == 0:
            on_progress(result.sent, total)
    remaining = producer.flush(60)
    if remaining:
        raise ConfigError(f"{remaining} transactions were not acknowledged by the broker")
    result.seconds = time.monotonic() - began
    if meter is not None:
        meter.update(result.sent, final=True)
    if on_progress is not None:
        on_progress(result.sent, total)
    return result


def _produce(producer: Producer, topic: str, value: bytes, key: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.05)


class _Progress:
    """A one-line progress meter on stderr (no dependency)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.began = time.monotonic()
        self.last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < 0.5:
            return
        self.last = now
        rate = done / max(now - self.began, 1e-9)
        bar = "#" * int(30 * done / self.total)
        sys.stderr.write(
            f"\rreplay [{bar:<30}] {done:,}/{self.total:,} ({rate:,.0f} tx/s)"
            + ("\n" if final else "")
        )
        sys.stderr.flush()
