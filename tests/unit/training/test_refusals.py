"""Bad training input: one clear line naming what is wrong and where, exit 1, no bundle left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from streams.cli import main
from training.synth import generate, to_csv_bytes

Corrupt = Callable[[pd.DataFrame], pd.DataFrame]


def _with(column: str, row: int, value: object) -> Corrupt:
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({column: object})
        frame.loc[row, column] = value
        return frame

    return corrupt


@pytest.fixture(scope="module")
def good_frame() -> pd.DataFrame:
    return generate(rows=400, seed=3, prevalence=0.1)


def _train(csv: Path, models: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["train", "--data", str(csv), "--models-dir", str(models), "--activate"])
    return code, capsys.readouterr().err


def _assert_refused(code: int, err: str, models: Path, *fragments: str) -> None:
    assert code == 1
    line = err.strip()
    assert "\n" not in line, f"expected one line, got {err!r}"
    assert line.startswith("sentinel: error: ")
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    leftovers = list(models.iterdir()) if models.exists() else []
    assert leftovers == [], f"partial output left behind: {leftovers}"


@pytest.mark.parametrize(
    ("corrupt", "fragments"),
    [
        (lambda f: f.drop(columns=["V3", "Amount"]), ["missing column(s) V3, Amount"]),
        (lambda f: f.assign(Merchant=1), ["unexpected column(s) Merchant"]),
        (_with("V7", 41, "abc"), ["line 43", "column V7", "non-numeric", "'abc'"]),
        (_with("Class", 9, 2), ["line 11", "Class is 2", "must be 0 or 1"]),
        (_with("Amount", 5, float("nan")), ["line 7", "Amount is nan (not finite)"]),
        (_with("V2", 17, 5e6), ["line 19", "V2=5e+06 beyond"]),
        (lambda f: f.assign(Class=0), ["no fraud rows", "needs both classes"]),
        (lambda f: f.iloc[:0], ["header but no data rows"]),
    ],
    ids=[
        "missing-columns",
        "extra-column",
        "non-numeric",
        "class-not-binary",
        "nan",
        "absurd-value",
        "single-class",
        "header-only",
    ],
)
def test_bad_csv_is_refused_with_one_line(
    corrupt: Corrupt,
    fragments: list[str],
    good_frame: pd.DataFrame,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_bytes(to_csv_bytes(corrupt(good_frame.copy())))
    models = tmp_path / "models"
    code, err = _train(csv, models, capsys)
    _assert_refused(code, err, models, str(csv), *fragments)


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "empty.csv"
    csv.write_bytes(b"")
    models = tmp_path / "models"
    code, err = _train(csv, models, capsys)
    _assert_refused(code, err, models, f"data file {csv} is empty")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    code, err = _train(tmp_path / "nope.csv", models, capsys)
    _assert_refused(code, err, models, "nope.csv does not exist")


def test_too_few_frauds(
    good_frame: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = good_frame.drop(good_frame.index[good_frame["Class"] == 1][19:])
    csv = tmp_path / "few.csv"
    csv.write_bytes(to_csv_bytes(frame))
    models = tmp_path / "models"
    code, err = _train(csv, models, capsys)
    _assert_refused(code, err, models, "only 19 fraud row(s)", "at least 20 of each class")


def test_unwritable_models_dir(
    good_frame: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "good.csv"
    csv.write_bytes(to_csv_bytes(good_frame))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, err = _train(csv, blocker / "models", capsys)
    _assert_refused(code, err, blocker / "models", "models directory", "is not writable")


def test_rows_cannot_be_combined_with_a_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    code = main(["train", "--data", "x.csv", "--rows", "100", "--models-dir", str(models)])
    _assert_refused(code, capsys.readouterr().err, models, "--rows")
