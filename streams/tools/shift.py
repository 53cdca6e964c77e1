"""Deliberate feature shifts for a replayed stream: ``sentinel produce --drift V14=+1.5sd``.

A spec is ``FEATURE=SHIFT[,FEATURE=SHIFT...]``; feature names match :data:`FEATURE_NAMES` case-
insensitively, each feature at most once. Three shifts exist, and additive ones need an explicit
sign so ``V3=2`` cannot be misread as "set to 2":

* ``+1.5sd`` / ``-0.5sd``: add that many *baseline* standard deviations (the model bundle's
  ``drift_baseline``, or the replayed data's own stds when no bundle exists);
* ``x3`` (or ``*3``): multiply by a positive factor;
* ``+2`` / ``-2``: add an absolute amount.

:func:`apply_shifts` applies them to a whole ``(n, 29)`` matrix at once (one multiply-add). Shifted
rows are not re-validated: an ``Amount=-500`` shift makes negative amounts, which the scorer routes
to the dead-letter topic like any other invalid input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from schemas.drift_baseline import DriftBaseline
from schemas.errors import ConfigError
from schemas.features import FEATURE_NAMES

ShiftKind = Literal["sd", "scale", "add"]

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"
_SHIFT: Final = re.compile(
    rf"^(?:(?P<scale>[x*])(?P<factor>{_NUMBER})|(?P<offset>[+-]{_NUMBER})(?P<sd>sd)?)$",
    re.IGNORECASE,
)
_BY_LOWER_NAME: Final = {name.lower(): name for name in FEATURE_NAMES}
SPEC_HELP: Final = "FEATURE=SHIFT[,...] with SHIFT +Nsd / -Nsd, xN, or +N / -N (e.g. V14=+1.5sd)"


@dataclass(frozen=True)
class FeatureShift:
    """One feature's shift: add ``amount`` baseline stds (``sd``), scale by it, or add it."""

    feature: str
    kind: ShiftKind
    amount: float

    def __str__(self) -> str:
        if self.kind == "scale":
            return f"{self.feature}=x{self.amount:g}"
        unit = "sd" if self.kind == "sd" else ""
        return f"{self.feature}={self.amount:+g}{unit}"


def parse_shift_spec(spec: str) -> tuple[FeatureShift, ...]:
    """Parse ``FEATURE=SHIFT[,...]``; ConfigError names the offending part and what is expected."""
    shifts: list[FeatureShift] = []
    parts = [part.strip() for part in spec.split(",")]
    if not spec.strip():
        raise ConfigError(f"--drift is empty; expected {SPEC_HELP}")
    for part in parts:
        name, sep, shift_text = (p.strip() for p in part.partition("="))
        if not part or not sep:
            raise ConfigError(f"--drift part {part!r} is not FEATURE=SHIFT; expected {SPEC_HELP}")
        feature = _BY_LOWER_NAME.get(name.lower())
        if feature is None:
            raise ConfigError(
                f"--drift part {part!r}: unknown feature {name!r} (expected V1..V28 or Amount)"
            )
        if any(s.feature == feature for s in shifts):
            raise ConfigError(f"--drift part {part!r}: {feature} is shifted twice")
        shifts.append(FeatureShift(feature, *_parse_shift(part, shift_text)))
    return tuple(shifts)


def _parse_shift(part: str, text: str) -> tuple[ShiftKind, float]:
    match = _SHIFT.match(text)
    if match is None:
        hint = " (write +N to add or xN to multiply)" if re.fullmatch(_NUMBER, text) else ""
        raise ConfigError(
            f"--drift part {part!r}: shift {text!r} is not +Nsd, -Nsd, xN, +N or -N{hint}"
        )
    if match["scale"]:
        factor = float(match["factor"])
        if not math.isfinite(factor) or factor <= 0:
            raise ConfigError(f"--drift part {part!r}: scale factor must be a positive number")
        return "scale", factor
    amount = float(match["offset"])
    if not math.isfinite(amount):
        raise ConfigError(f"--drift part {part!r}: shift {text!r} is not a finite number")
    return ("sd" if match["sd"] else "add"), amount


def stds_from_baseline(baseline: DriftBaseline) -> dict[str, float]:
    """Per-feature standard deviations of a bundle's drift baseline."""
    return {name: float(std) for name, std in zip(FEATURE_NAMES, baseline.stds, strict=False)}


def apply_shifts(
    matrix: npt.NDArray[np.floating],
    shifts: Sequence[FeatureShift],
    stds: npt.ArrayLike | Mapping[str, float] | None = None,
) -> npt.NDArray[np.floating]:
    """A shifted copy of ``matrix`` (n, 29) in FEATURE_NAMES order; the input is not modified.

    ``stds`` are the baseline standard deviations, 29 values in FEATURE_NAMES order or a mapping
    from feature name; only ``sd`` shifts need them. ConfigError if one is needed but missing or
    not positive; ValueError if the matrix or ``stds`` has the wrong shape.
    """
    if matrix.ndim != 2 or matrix.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"expected a (n, {len(FEATURE_NAMES)}) matrix, got {matrix.shape}")
    scale = np.ones(len(FEATURE_NAMES))
    offset = np.zeros(len(FEATURE_NAMES))
    for shift in shifts:
        column = FEATURE_NAMES.index(shift.feature)
        if shift.kind == "scale":
            scale[column] = shift.amount
        elif shift.kind == "add":
            offset[column] = shift.amount
        else:
            if stds is None:
                raise ConfigError(
                    f"--drift {shift}: sd shifts need baseline standard deviations "
                    "(no model bundle with a drift baseline was found)"
                )
            if isinstance(stds, Mapping):
                std = float(stds.get(shift.feature, math.nan))
            else:
                std_row = np.asarray(stds, dtype=np.float64)
                if std_row.shape != (len(FEATURE_NAMES),):
                    raise ValueError(f"expected {len(FEATURE_NAMES)} stds, got {std_row.shape}")
                std = float(std_row[column])
            if not math.isfinite(std) or std <= 0:
                raise ConfigError(f"--drift {shift}: baseline std of {shift.feature} is {std}")
            offset[column] = shift.amount * std
    shifted: npt.NDArray[np.floating] = (matrix * scale + offset).astype(matrix.dtype, copy=False)
    return shifted
