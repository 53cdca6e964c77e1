"""The synthetic data generator: layout, prevalence, determinism, and the shape of the classes."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from schemas.errors import DataError
from schemas.features import CSV_COLUMNS
from streams.cli import main
from training.synth import PREVALENCE, fraud_count, generate, to_csv_bytes


def test_columns_prevalence_and_ranges() -> None:
    frame = generate(rows=20_000, seed=3)
    assert tuple(frame.columns) == CSV_COLUMNS
    assert len(frame) == 20_000
    assert int(frame["Class"].sum()) == round(20_000 * PREVALENCE) == 35
    assert set(frame["Class"].unique()) == {0, 1}
    assert frame["Time"].is_monotonic_increasing
    assert frame["Time"].min() >= 0 and frame["Time"].max() < 172_800
    assert (frame["Amount"] >= 0).all()
    assert np.isfinite(frame.drop(columns="Class").to_numpy()).all()


@pytest.mark.parametrize(("rows", "expected"), [(100, 2), (1_000, 2), (4_000, 7), (284_807, 492)])
def test_fraud_count_is_rounded_prevalence_with_at_least_two(rows: int, expected: int) -> None:
    assert fraud_count(rows) == expected
    if rows <= 4_000:
        assert int(generate(rows=rows, seed=1)["Class"].sum()) == expected


def test_custom_prevalence_for_small_balanced_sets() -> None:
    frame = generate(rows=3_000, seed=5, prevalence=0.1)
    assert int(frame["Class"].sum()) == 300


def test_same_seed_same_bytes_other_seed_other_data() -> None:
    first = to_csv_bytes(generate(rows=3_000, seed=11))
    again = to_csv_bytes(generate(rows=3_000, seed=11))
    other = to_csv_bytes(generate(rows=3_000, seed=12))
    assert hashlib.sha256(first).digest() == hashlib.sha256(again).digest()
    assert first != other


def test_frauds_separate_on_a_few_components_and_overlap_elsewhere() -> None:
    frame = generate(rows=40_000, seed=2, prevalence=0.05)
    by_class = frame.groupby("Class")
    gap = (by_class.mean().loc[1] - by_class.mean().loc[0]) / by_class.std().loc[0]
    # As in the real data: V14, V12, V10, V17 shift by several legit SDs; V13, V15, V22-V28 do not.
    for strong in ("V10", "V12", "V14", "V17"):
        assert gap[strong] < -2.5
    for weak in ("V13", "V15", "V22", "V25", "V26"):
        assert abs(gap[weak]) < 0.3


def test_csv_round_trips_exactly() -> None:
    frame = generate(rows=500, seed=4)
    back = pd.read_csv(io.BytesIO(to_csv_bytes(frame)))
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


def test_too_few_rows_is_refused() -> None:
    with pytest.raises(DataError, match="at least 4 rows"):
        generate(rows=3)


def test_cli_writes_the_same_bytes_as_the_generator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nested" / "synthetic.csv"
    assert main(["data", "synth", "--out", str(out), "--rows", "2000", "--seed", "9"]) == 0
    payload = out.read_bytes()
    assert payload == to_csv_bytes(generate(rows=2_000, seed=9))
    printed = capsys.readouterr().out
    assert "2,000 rows" in printed and hashlib.sha256(payload).hexdigest() in printed


def test_cli_unwritable_destination_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["data", "synth", "--out", str(blocker / "x.csv"), "--rows", "100"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("sentinel: error: cannot write") and "\n" not in error
