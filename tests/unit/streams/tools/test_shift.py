"""``--drift FEATURE=SHIFT[,...]``: parsing (good and bad specs) and vectorised application."""

from __future__ import annotations

import re

import numpy as np
import pytest

from schemas.drift_baseline import build_baseline
from schemas.errors import ConfigError
from schemas.features import FEATURE_NAMES
from streams.tools.shift import (
    FeatureShift,
    apply_shifts,
    parse_shift_spec,
    stds_from_baseline,
)

V14 = FEATURE_NAMES.index("V14")
V3 = FEATURE_NAMES.index("V3")
AMOUNT = FEATURE_NAMES.index("Amount")


def test_parses_the_three_shift_kinds() -> None:
    assert parse_shift_spec("V14=+1.5sd, Amount=x3,V3=-2") == (
        FeatureShift("V14", "sd", 1.5),
        FeatureShift("Amount", "scale", 3.0),
        FeatureShift("V3", "add", -2.0),
    )


def test_feature_names_and_units_are_case_insensitive() -> None:
    assert parse_shift_spec("v14=-0.5SD,amount=X1.2e0") == (
        FeatureShift("V14", "sd", -0.5),
        FeatureShift("Amount", "scale", 1.2),
    )


def test_shift_prints_back_as_a_spec() -> None:
    shifts = parse_shift_spec("V14=+1.5sd,Amount=x3,V3=-2")
    assert ",".join(str(s) for s in shifts) == "V14=+1.5sd,Amount=x3,V3=-2"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "--drift is empty"),
        ("V14", "part 'V14' is not FEATURE=SHIFT"),
        ("V14=+1sd,,V3=+1", "part '' is not FEATURE=SHIFT"),
        ("V29=+1sd", "unknown feature 'V29'"),
        ("Time=+5", "unknown feature 'Time'"),
        ("V14=abc", "shift 'abc' is not +Nsd"),
        ("V3=2", "write +N to add or xN to multiply"),
        ("V14=+1.5 sd", "shift '+1.5 sd' is not"),
        ("Amount=x0", "scale factor must be a positive number"),
        ("Amount=x-2", "shift 'x-2' is not"),
        ("V14=+1sd,v14=x2", "V14 is shifted twice"),
        ("V14=+1e999", "not a finite number"),
    ],
)
def test_bad_specs_name_the_offending_part(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_shift_spec(spec)


def test_apply_shifts_moves_only_the_named_columns() -> None:
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(500, len(FEATURE_NAMES))).astype(np.float32)
    original = matrix.copy()
    stds = np.full(len(FEATURE_NAMES), 2.0)  # in FEATURE_NAMES order, as the replayer passes
    shifted = apply_shifts(matrix, parse_shift_spec("V14=+1.5sd,Amount=x3,V3=-2"), stds)

    assert shifted.dtype == np.float32
    np.testing.assert_array_equal(matrix, original)  # the input is untouched
    np.testing.assert_allclose(shifted[:, V14], original[:, V14] + 3.0, rtol=1e-6)
    np.testing.assert_allclose(shifted[:, AMOUNT], original[:, AMOUNT] * 3.0, rtol=1e-6)
    np.testing.assert_allclose(shifted[:, V3], original[:, V3] - 2.0, rtol=1e-6)
    untouched = [i for i in range(len(FEATURE_NAMES)) if i not in (V14, V3, AMOUNT)]
    np.testing.assert_array_equal(shifted[:, untouched], original[:, untouched])


def test_sd_shift_uses_the_baseline_std_of_that_feature() -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(1_000, len(FEATURE_NAMES)))
    rows[:, V14] *= 0.5
    rows[:, FEATURE_NAMES.index("V1")] *= 9.0
    baseline = build_baseline(rows, rng.random(100))
    stds = stds_from_baseline(baseline)
    assert stds["V14"] == pytest.approx(float(np.std(rows[:, V14])))
    matrix = np.zeros((3, len(FEATURE_NAMES)))
    shifted = apply_shifts(matrix, parse_shift_spec("V14=-2sd"), stds)
    expected = -2 * stds["V14"]
    assert shifted[:, V14].tolist() == [expected] * 3
    assert shifted[:, FEATURE_NAMES.index("V1")].tolist() == [0.0, 0.0, 0.0]


def test_sd_shift_without_baseline_stds_is_a_clear_error() -> None:
    matrix = np.zeros((2, len(FEATURE_NAMES)))
    with pytest.raises(ConfigError, match="no model bundle with a drift baseline"):
        apply_shifts(matrix, parse_shift_spec("V14=+1sd"))
    with pytest.raises(ConfigError, match="baseline std of V14 is nan"):
        apply_shifts(matrix, parse_shift_spec("V14=+1sd"), {"V1": 1.0})
    # Absolute and scale shifts need no baseline.
    assert apply_shifts(matrix, parse_shift_spec("V3=+1,Amount=x2"))[0, V3] == 1.0


def test_wrong_matrix_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="expected a"):
        apply_shifts(np.zeros((4, 28)), parse_shift_spec("V3=+1"))
