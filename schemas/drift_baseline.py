"""The training baseline of drift monitoring, and the statistics both sides compute on it.

Training calls :func:`build_baseline` to store per-feature and score distributions in the model
manifest (:class:`DriftBaseline`, parsed and checked whole when a manifest is read); the scorer's
``streams.drift.monitor.DriftMonitor`` bins live values with :func:`bin_counts` — the same code, so
a value lands in the same bin on both sides. Values are binned as float32 (the model's input type)
against the edges rounded *up* to float32, which is exactly ``x >= edge``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from schemas.errors import ModelLoadError
from schemas.features import FEATURE_NAMES

PSI_EPSILON: Final[float] = 1e-4
_CHUNK_ROWS: Final[int] = 8192  # bounds the (bins, features, rows) comparison array; < 2**16

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def upper_f32(edges: F64) -> npt.NDArray[np.float32]:
    """The smallest float32 >= each edge: for float32 ``x``, ``x >= edge`` iff ``x >= result``."""
    rounded = edges.astype(np.float32)
    low = rounded.astype(np.float64) < edges
    rounded[low] = np.nextafter(rounded[low], np.float32(np.inf))
    return rounded


def bin_counts(values_t: npt.NDArray[np.float32], inner: npt.NDArray[np.float32]) -> I64:
    """Counts per bin, shape (k, bins), of ``values_t`` (k, n) given inner edges (bins-1, k, 1).

    Bin i holds ``edge[i] <= x < edge[i+1]``; below the first inner edge is bin 0, at or above the
    last is the last bin. One broadcast comparison counts rows at or above every edge at once.
    """
    k, n = values_t.shape
    at_or_above = np.zeros((inner.shape[0], k), dtype=np.int64)
    for start in range(0, n, _CHUNK_ROWS):
        block = values_t[None, :, start : start + _CHUNK_ROWS] >= inner
        # uint16 sums are ~3x faster than int64 and cannot overflow: a chunk has < 65,536 rows.
        at_or_above += np.sum(block.view(np.uint8), axis=2, dtype=np.uint16)
    counts = np.empty((k, inner.shape[0] + 1), dtype=np.int64)
    counts[:, 0] = n - at_or_above[0]
    counts[:, 1:-1] = (at_or_above[:-1] - at_or_above[1:]).T
    counts[:, -1] = at_or_above[-1]
    return counts


def population_stability_index(counts: npt.ArrayLike, expected: npt.ArrayLike) -> F64:
    """PSI of observed bin ``counts`` against ``expected`` proportions, along the last axis.

    Both proportions are floored at :data:`PSI_EPSILON` (empty bins). NaN when there are no counts.
    """
    observed = np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        actual = np.maximum(observed / observed.sum(axis=-1, keepdims=True), PSI_EPSILON)
        base = np.maximum(np.asarray(expected, dtype=np.float64), PSI_EPSILON)
        result: F64 = np.sum((actual - base) * np.log(actual / base), axis=-1)
    return result


def _baseline_entry(name: str, entry: Any, keys: tuple[str, ...]) -> tuple[list[float], F64, F64]:
    """([mean, std]..., bin edges, proportions) of one baseline entry; ModelLoadError if bad."""
    try:
        numbers = [float(entry[key]) for key in keys]
        edges = np.asarray(entry["bin_edges"], dtype=np.float64)
        proportions = np.asarray(entry["proportions"], dtype=np.float64)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        wanted = "/".join((*keys, "bin_edges", "proportions"))
        raise ModelLoadError(f"drift baseline: {name} needs numeric {wanted} ({exc!r})") from None
    if not np.isfinite(numbers).all() or (len(numbers) > 1 and numbers[1] <= 0):
        raise ModelLoadError(f"drift baseline: {name} needs a finite mean and a std > 0")
    if edges.ndim != 1 or proportions.ndim != 1 or len(edges) != len(proportions) + 1:
        raise ModelLoadError(f"drift baseline: {name} needs len(bin_edges) = len(proportions) + 1")
    if len(proportions) < 2 or not np.isfinite(edges).all() or np.any(np.diff(edges) < 0):
        raise ModelLoadError(f"drift baseline: {name} bin edges must be >= 3, finite, ascending")
    if (
        not np.isfinite(proportions).all()
        or np.any(proportions < 0)
        or abs(proportions.sum() - 1.0) > 1e-3
    ):
        raise ModelLoadError(f"drift baseline: {name} proportions must be >= 0 and sum to 1")
    return numbers, edges, proportions


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ModelLoadError(f"drift baseline: {name} must be a non-negative integer")
    return value


@dataclass(frozen=True, eq=False)
class DriftBaseline:
    """What the training data looked like, as arrays: rows 0..28 are the features in
    FEATURE_NAMES order, row 29 is the fraud score.

    ``means``/``stds`` have shape (30,) (the score's std is informative only), ``edges``
    (30, bins + 1) and ``proportions`` (30, bins). Features are summarised on ``rows`` training
    rows, the score on ``score_rows`` held-out rows. Build it with :func:`build_baseline` or
    :meth:`from_json`; both validate, so a DriftBaseline in hand is always usable.
    """

    means: F64
    stds: F64
    edges: F64
    proportions: F64
    rows: int
    score_rows: int

    @property
    def bins(self) -> int:
        """Bins per feature (the same for every feature and the score)."""
        return int(self.proportions.shape[1])

    @classmethod
    def from_json(cls, baseline: object) -> DriftBaseline:
        """Parse the manifest's ``drift_baseline`` object; ModelLoadError naming what is wrong."""
        if not isinstance(baseline, Mapping):
            raise ModelLoadError("drift baseline must be a JSON object")
        features = baseline.get("features")
        if not isinstance(features, Mapping) or "score" not in baseline:
            raise ModelLoadError("drift baseline needs 'features' and 'score' entries")
        missing = [n for n in FEATURE_NAMES if n not in features]
        unknown = sorted(str(k) for k in set(features) - set(FEATURE_NAMES))
        if missing or unknown:
            raise ModelLoadError(f"drift baseline features: missing {missing}, unknown {unknown}")
        entries = [_baseline_entry(n, features[n], ("mean", "std")) for n in FEATURE_NAMES]
        score = baseline["score"]
        (score_mean,), score_edges, score_proportions = _baseline_entry("score", score, ("mean",))
        score_std = score.get("std", np.nan)
        if isinstance(score_std, bool) or not isinstance(score_std, int | float):
            raise ModelLoadError("drift baseline: score std must be a number")
        entries.append(([score_mean, float(score_std)], score_edges, score_proportions))
        if len({len(p) for _, _, p in entries}) != 1:
            raise ModelLoadError(
                "drift baseline: every feature and the score need the same bin count"
            )
        moments = np.array([m for m, _, _ in entries])
        return cls(
            means=moments[:, 0],
            stds=moments[:, 1],
            edges=np.stack([e for _, e, _ in entries]),
            proportions=np.stack([p for _, _, p in entries]),
            rows=_count(baseline.get("rows", 0), "rows"),
            score_rows=_count(score.get("rows", 0), "score rows"),
        )

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``drift_baseline`` object (JSON-serialisable)."""

        def entry(i: int) -> dict[str, Any]:
            return {
                "mean": float(self.means[i]),
                "std": float(self.stds[i]),
                "bin_edges": [float(e) for e in self.edges[i]],
                "proportions": [float(p) for p in self.proportions[i]],
            }

        score = entry(len(FEATURE_NAMES))
        return {
            "features": {name: entry(i) for i, name in enumerate(FEATURE_NAMES)},
            "score": {**score, "rows": self.score_rows, "source": "test"},
            "rows": self.rows,
        }


def _binned(values: npt.NDArray[np.floating], bins: int) -> tuple[F64, F64, F64, F64]:
    """Means, stds, quantile edges and proportions of each column of ``values`` (n, k)."""
    wide = np.asarray(values, dtype=np.float64)
    edges = np.quantile(wide, np.linspace(0.0, 1.0, bins + 1), axis=0).T
    values_t = np.ascontiguousarray(wide.T, dtype=np.float32)
    counts = bin_counts(values_t, np.ascontiguousarray(upper_f32(edges[:, 1:-1]).T[:, :, None]))
    return wide.mean(axis=0), wide.std(axis=0), edges, counts / len(wide)


def build_baseline(
    features: npt.NDArray[np.floating], scores: npt.NDArray[np.floating], bins: int = 10
) -> DriftBaseline:
    """The drift baseline of training rows ``features`` (n, 29) and held-out ``scores`` (m,).

    Features are summarised on the rows the model was fit on; the score on unseen rows, because
    live scores should look like scores on unseen data, not like the over-confident scores of the
    training rows. Edges are the quantiles at 0, 1/bins, ..., 1 (outer edges = min and max);
    proportions count rows per bin with the monitor's own rule. Raises ValueError on bad shapes.
    """
    if features.ndim != 2 or features.shape[1] != len(FEATURE_NAMES) or scores.ndim != 1:
        raise ValueError(f"drift baseline: bad shapes {features.shape} and {scores.shape}")
    if len(features) == 0 or len(scores) == 0:
        raise ValueError("drift baseline: no rows")
    f_mean, f_std, f_edges, f_props = _binned(features, bins)
    s_mean, s_std, s_edges, s_props = _binned(np.asarray(scores)[:, None], bins)
    return DriftBaseline(
        means=np.concatenate([f_mean, s_mean]),
        stds=np.concatenate([f_std, s_std]),
        edges=np.concatenate([f_edges, s_edges]),
        proportions=np.concatenate([f_props, s_props]),
        rows=len(features),
        score_rows=len(scores),
    )
