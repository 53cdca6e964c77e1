"""The replayer's pure parts: options, the CSV reader, card ids, poison the scorer refuses."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.errors import ConfigError
from schemas.features import CSV_COLUMNS, FEATURE_NAMES
from schemas.transaction_codec import decode_transactions, encode_transaction
from streams.tools.replayer import POISON_KINDS, ReplayOptions, card_ids, load_csv, poison_message

NAN = float("nan")


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, NAN])
@pytest.mark.parametrize("option", ["bad_fraction", "duplicate_fraction"])
def test_a_fraction_outside_0_to_1_is_refused(option: str, value: float) -> None:
    flag = option.replace("_", "-")
    with pytest.raises(ConfigError, match=f"{flag} must be in"):
        ReplayOptions(**{option: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [-1.0, NAN])
def test_a_negative_or_nan_rate_is_refused(rate: float) -> None:
    with pytest.raises(ConfigError, match="rate must be >= 0"):
        ReplayOptions(rate=rate)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"count": -1}, "count must be >= 0"), ({"n_cards": 0}, "cards must be >= 1")],
)
def test_a_negative_count_or_no_cards_is_refused(options: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReplayOptions(**options)  # type: ignore[arg-type]


def test_in_range_options_are_accepted() -> None:
    options = ReplayOptions(bad_fraction=0.0, duplicate_fraction=0.99, rate=0.0, count=0, n_cards=1)
    assert options.duplicate_fraction == 0.99


def write_csv(path: Path, columns: list[str], rows: list[list[str]], quote: bool = True) -> Path:
    header = ",".join(f'"{c}"' if quote else c for c in columns)
    path.write_text("\n".join([header, *(",".join(row) for row in rows)]) + "\n")
    return path


def kaggle_row(seed: int, label: int) -> list[str]:
    """A Kaggle-style line: Time, V1..V28, Amount unquoted; Class quoted as in the real file."""
    values = [str(float(seed))] + [f"{seed + i / 100:.2f}" for i in range(1, 29)]
    return [*values, f"{seed * 10 + 0.5}", f'"{label}"']


def test_load_csv_reads_features_in_model_order_and_the_labels(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "cc.csv", list(CSV_COLUMNS), [kaggle_row(1, 0), kaggle_row(2, 1)])

    features, labels = load_csv(path)

    assert features.shape == (2, len(FEATURE_NAMES))
    assert features[0, 0] == 1.01 and features[0, 27] == 1.28  # V1, V28
    assert features[:, -1].tolist() == [10.5, 20.5]  # Amount last, Time dropped
    assert labels is not None and labels.tolist() == [0, 1]


def test_load_csv_follows_the_header_not_the_column_position(tmp_path: Path) -> None:
    columns = ["Amount", *reversed(FEATURE_NAMES[:-1]), "Note"]
    row = ["42.0", *(str(float(28 - i)) for i in range(28)), "x"]
    features, labels = load_csv(write_csv(tmp_path / "cc.csv", columns, [row], quote=False))
    assert features[0].tolist() == [*(float(i) for i in range(1, 29)), 42.0]
    assert labels is None


def test_load_csv_names_the_missing_columns(tmp_path: Path) -> None:
    columns = [c for c in CSV_COLUMNS if c not in ("V7", "Amount")]
    path = write_csv(tmp_path / "cc.csv", columns, [["0"] * len(columns)])
    with pytest.raises(ConfigError, match=r"lacks column\(s\) V7, Amount"):
        load_csv(path)


def test_load_csv_refuses_a_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist.*sentinel data synth"):
        load_csv(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        load_csv(tmp_path / "empty.csv")


def test_load_csv_names_the_file_when_a_value_is_unreadable(tmp_path: Path) -> None:
    bad = kaggle_row(1, 0)
    bad[5] = "oops"
    path = write_csv(tmp_path / "cc.csv", list(CSV_COLUMNS), [kaggle_row(2, 0), bad])
    with pytest.raises(ConfigError, match=r"cc\.csv"):
        load_csv(path)


def test_card_ids_recur_and_the_top_card_is_busy() -> None:
    cards = card_ids(10_000, 20_000, np.random.default_rng(1))
    counts = Counter(cards)
    assert len(cards) == 10_000
    assert len(counts) < 5_000  # uniform over 20,000 cards would give about 7,900 distinct
    assert counts.most_common(1)[0][1] > 500  # uniform: about 3; rank^-1.1: about 1,400


def test_card_ids_are_reproducible_for_a_seed() -> None:
    first = card_ids(1_000, 500, np.random.default_rng(7))
    assert first == card_ids(1_000, 500, np.random.default_rng(7))
    assert first != card_ids(1_000, 500, np.random.default_rng(8))
    assert all(c.startswith(b"card-") and int(c[5:]) < 500 for c in first)


GOOD: dict[str, Any] = {
    "transaction_id": "tx-1",
    "card_id": "card-000001",
    "event_time": 1_700_000_000_000,
    "amount": 12.5,
    "features": [round(0.1 * i - 1.3, 3) for i in range(28)],
}
EXPECTED_KIND = {
    "garbage": "undecodable",
    "truncated": "undecodable",
    "json_missing_field": "missing_field",
    "json_wrong_type": "wrong_type",
    "feature_count": "feature_count",
    "not_finite": "not_finite",
    "absurd_value": "absurd_value",
    "oversize": "oversize",
}


def test_every_poison_kind_has_an_expected_rejection() -> None:
    assert set(EXPECTED_KIND) == set(POISON_KINDS)


@pytest.mark.parametrize("max_bytes", [1_000, 65_536])
@pytest.mark.parametrize("kind", POISON_KINDS)
def test_each_poison_kind_is_rejected_by_the_scorers_decoder(kind: str, max_bytes: int) -> None:
    poison = poison_message(kind, dict(GOOD), max_bytes)
    good = encode_transaction(GOOD)

    batch, rejected = decode_transactions([good, poison, good], max_message_bytes=max_bytes)

    assert batch.index.tolist() == [0, 2]  # the good copies around it still decode
    assert [(position, p.kind) for position, p in rejected] == [(1, EXPECTED_KIND[kind])]


def test_an_unknown_poison_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no_such_kind"):
        poison_message("no_such_kind", dict(GOOD), 1_000)
