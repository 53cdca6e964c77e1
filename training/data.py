"""Training data: read and validate a Kaggle-layout CSV, or wrap a synthetic set, then split it.

Validation is strict because a model trained on silently mangled data is worse than no model:
missing or extra columns are named, the first bad value is reported with its CSV line number, and
feature values go through :func:`schemas.features.invalid_rows`, the same rule the scorer applies
to live transactions. Every problem raises :class:`~schemas.errors.DataError` with one line.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from schemas.errors import DataError
from schemas.features import CSV_COLUMNS, FEATURE_NAMES, invalid_rows
from training import synth

# Fewer frauds than this cannot be split into test, calibration and cross-validation folds that
# each hold a few of them (20 leaves 4 for test, 4 for calibration and 4 per fold of the 3-fold
# study).
MIN_ROWS_PER_CLASS: Final[int] = 20


@dataclass(frozen=True)
class TrainingData:
    """A validated transaction set with its provenance (recorded in the manifest's ``data``)."""

    frame: pd.DataFrame
    source: str  # "synthetic" or the CSV path as given
    sha256: str  # of the CSV bytes (for synthetic data: of the CSV `sentinel data synth` writes)
    seed: int | None  # generator seed for synthetic data, else None

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def frauds(self) -> int:
        return int(self.frame["Class"].sum())


@dataclass(frozen=True)
class Split:
    """One part of the stratified split: float32 features, 0/1 labels, float64 amounts."""

    features: np.ndarray
    labels: np.ndarray
    amounts: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.labels)

    @property
    def frauds(self) -> int:
        return int(self.labels.sum())

    def subset(self, rows: np.ndarray) -> Split:
        """The given rows, in their original order."""
        rows = np.sort(rows)
        return Split(self.features[rows], self.labels[rows], self.amounts[rows])


def _line(index: int) -> int:
    """CSV line number of data row ``index`` (line 1 is the header)."""
    return index + 2


def validate_frame(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Check columns, types, values and classes; return the frame in CSV_COLUMNS order.

    ``where`` names the source in error messages. Raises DataError naming the first problem.
    """
    columns = [str(c) for c in frame.columns]
    missing = [c for c in CSV_COLUMNS if c not in columns]
    extra = [c for c in columns if c not in CSV_COLUMNS]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected column(s) {', '.join(extra)}")
        raise DataError(f"{where}: {'; '.join(parts)} (expected {', '.join(CSV_COLUMNS)})")
    if len(frame) == 0:
        raise DataError(f"{where}: has a header but no data rows")
    frame = frame[list(CSV_COLUMNS)]
    for column in CSV_COLUMNS:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            numeric = pd.to_numeric(values, errors="coerce")
            bad = np.flatnonzero(numeric.isna().to_numpy() & values.notna().to_numpy())
            row = int(bad[0]) if len(bad) else 0
            raise DataError(
                f"{where} line {_line(row)}: column {column} has non-numeric value "
                f"{values.iloc[row]!r}"
            )
    labels = frame["Class"].to_numpy(dtype=np.float64)
    bad_labels = np.flatnonzero(~np.isin(labels, (0.0, 1.0)))
    if len(bad_labels):
        row = int(bad_labels[0])
        raise DataError(
            f"{where} line {_line(row)}: Class is {labels[row]:g}, must be 0 or 1 "
            f"({len(bad_labels)} such row(s))"
        )
    time = frame["Time"].to_numpy(dtype=np.float64)
    bad_time = np.flatnonzero(~np.isfinite(time))
    if len(bad_time):
        row = int(bad_time[0])
        raise DataError(f"{where} line {_line(row)}: Time is {time[row]} (not finite)")
    problems = invalid_rows(frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64))
    if problems:
        row, reason = problems[0]
        more = f" ({len(problems) - 1} more bad row(s))" if len(problems) > 1 else ""
        raise DataError(f"{where} line {_line(row)}: {reason}{more}")
    frauds = int(labels.sum())
    for name, count in (("legitimate (Class=0)", len(labels) - frauds), ("fraud", frauds)):
        if count == 0:
            raise DataError(f"{where}: holds no {name} rows; training needs both classes")
        if count < MIN_ROWS_PER_CLASS:
            raise DataError(
                f"{where}: only {count} {name} row(s); training needs at least "
                f"{MIN_ROWS_PER_CLASS} of each class"
            )
    return frame.astype({"Class": np.int64})


def load_csv(path: Path) -> TrainingData:
    """Read and validate a CSV with the Kaggle credit-card columns.

    Raises DataError for a missing, unreadable, empty or malformed file, and for any problem
    :func:`validate_frame` finds.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"data file {path} is a directory, not a CSV file") from None
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror}") from None
    if not raw.strip():
        raise DataError(f"data file {path} is empty")
    try:
        frame = pd.read_csv(io.BytesIO(raw), low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"data file {path} is not a readable CSV: {detail}") from None
    frame = validate_frame(frame, str(path))
    return TrainingData(frame, str(path), hashlib.sha256(raw).hexdigest(), None)


def synthetic(
    rows: int = synth.DEFAULT_ROWS,
    seed: int = synth.DEFAULT_SEED,
    prevalence: float = synth.PREVALENCE,
) -> TrainingData:
    """A synthetic set from :func:`training.synth.generate`, hashed as the CSV it would write."""
    frame = synth.generate(rows, seed, prevalence)
    digest = hashlib.sha256(synth.to_csv_bytes(frame)).hexdigest()
    return TrainingData(validate_frame(frame, "synthetic data"), "synthetic", digest, seed)


def from_frame(frame: pd.DataFrame, source: str = "dataframe") -> TrainingData:
    """Validate an in-memory frame (Kaggle columns); sha256 is of its CSV serialisation."""
    frame = validate_frame(frame, source)
    digest = hashlib.sha256(synth.to_csv_bytes(frame)).hexdigest()
    return TrainingData(frame, source, digest, None)


def development_and_test(
    data: TrainingData, seed: int, test_share: float = 0.2
) -> tuple[Split, Split]:
    """(development, test), stratified by class and reproducible by seed.

    The test split is held out from everything (study, tree count, thresholds); the development
    set is divided again by :func:`fit_and_calibration`.
    """
    from sklearn.model_selection import train_test_split

    whole = Split(
        data.frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float32),
        data.frame["Class"].to_numpy(dtype=np.int64),
        data.frame["Amount"].to_numpy(dtype=np.float64),
    )
    development, test = train_test_split(
        np.arange(whole.rows), test_size=test_share, stratify=whole.labels, random_state=seed
    )
    return whole.subset(development), whole.subset(test)


def fit_and_calibration(development: Split, seed: int, share: float) -> tuple[Split, Split]:
    """(fit, calibration): ``share`` of the development rows held out, stratified by class.

    The study and the final model see only the fit rows; the thresholds are chosen on the
    calibration rows scored by the final model, so they are chosen on the scores they will meet.
    """
    from sklearn.model_selection import train_test_split

    fit, calibration = train_test_split(
        np.arange(development.rows),
        test_size=share,
        stratify=development.labels,
        random_state=seed,
    )
    return development.subset(fit), development.subset(calibration)
