"""The drift baseline: training bins exactly like the monitor bins live rows, the JSON form
round-trips, and every malformed baseline is refused at load with the problem named."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.drift_baseline import DriftBaseline, bin_counts, build_baseline, upper_f32
from schemas.errors import ModelLoadError
from schemas.features import FEATURE_NAMES
from streams.drift.monitor import DriftConfig, DriftMonitor

N = len(FEATURE_NAMES)
F64 = npt.NDArray[np.float64]


def training_rows(seed: int = 3, n: int = 4_000) -> tuple[F64, F64]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, N)) * np.linspace(0.5, 3.0, N)
    features[:, -1] = np.round(rng.lognormal(3.0, 1.2, n), 2)  # Amount: ties on cents
    features[:, 0] = rng.integers(0, 4, n)  # a discrete column: many values exactly on an edge
    return features, rng.beta(0.5, 20.0, n)


@pytest.fixture(scope="module")
def built() -> tuple[DriftBaseline, F64, F64]:
    features, scores = training_rows()
    return build_baseline(features, scores), features, scores


def reference_counts(column: F64, edges: F64) -> npt.NDArray[np.int64]:
    """Bin i holds float32 x with edge[i] <= x < edge[i+1]: first and last bins open-ended."""
    x = column.astype(np.float32).astype(np.float64)
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    for value in x:
        counts[int(np.sum(value >= upper_f32(edges[1:-1]).astype(np.float64)))] += 1
    return counts


def test_build_baseline_summarises_each_column_with_decile_edges(
    built: tuple[DriftBaseline, F64, F64],
) -> None:
    baseline, features, scores = built
    assert baseline.bins == 10
    assert baseline.edges.shape == (N + 1, 11) and baseline.proportions.shape == (N + 1, 10)
    assert (baseline.rows, baseline.score_rows) == (len(features), len(scores))
    np.testing.assert_allclose(baseline.means[:N], features.mean(axis=0))
    np.testing.assert_allclose(baseline.stds[:N], features.std(axis=0))
    assert baseline.means[N] == pytest.approx(scores.mean())
    np.testing.assert_allclose(baseline.edges[N], np.quantile(scores, np.linspace(0, 1, 11)))
    np.testing.assert_allclose(baseline.edges[:, 0], [*features.min(axis=0), scores.min()])
    np.testing.assert_allclose(baseline.edges[:, -1], [*features.max(axis=0), scores.max()])
    np.testing.assert_allclose(baseline.proportions.sum(axis=1), 1.0)


def test_build_baseline_counts_rows_per_bin_with_the_monitors_rule(
    built: tuple[DriftBaseline, F64, F64],
) -> None:
    baseline, features, scores = built
    columns = [*features.T, scores]
    for i in (0, 5, N - 1, N):  # the discrete column, a normal one, Amount, the score
        expected = reference_counts(columns[i], baseline.edges[i]) / len(columns[i])
        np.testing.assert_allclose(baseline.proportions[i], expected, err_msg=f"row {i}")


def test_the_training_rows_replayed_through_the_monitor_land_in_the_same_bins(
    built: tuple[DriftBaseline, F64, F64],
) -> None:
    baseline, features, scores = built
    monitor = DriftMonitor(baseline, DriftConfig(), "scorer-1", "v1")
    monitor.observe(features.astype(np.float32), scores)
    snapshot = monitor.snapshot(0)
    for i, feature in enumerate(snapshot.features):
        np.testing.assert_array_equal(
            np.array(feature.bin_counts) / len(features), baseline.proportions[i]
        )
        assert feature.psi == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_array_equal(
        np.array(snapshot.prediction.bin_counts) / len(scores), baseline.proportions[N]
    )
    assert not snapshot.drifted


@settings(max_examples=200, deadline=None)
@given(
    edge=st.floats(-1e6, 1e6, allow_nan=False),
    x=st.floats(-1e6, 1e6, allow_nan=False, width=32),
)
def test_upper_f32_makes_float32_comparison_exact(edge: float, x: float) -> None:
    rounded = upper_f32(np.array([edge]))[0]
    assert (np.float32(x) >= rounded) == (float(np.float32(x)) >= edge)


def test_bin_counts_puts_values_on_an_edge_in_the_upper_bin() -> None:
    values = np.array([[0.0, 1.0, 1.5, 2.0, 2.0, 9.0]], dtype=np.float32)
    inner = np.array([1.0, 2.0], dtype=np.float32)[:, None, None]
    np.testing.assert_array_equal(bin_counts(values, inner), [[1, 2, 3]])


@pytest.mark.parametrize(
    ("features", "scores"),
    [
        (np.zeros((10, N - 1)), np.zeros(10)),
        (np.zeros(N), np.zeros(10)),
        (np.zeros((10, N)), np.zeros((10, 1))),
        (np.zeros((0, N)), np.zeros(10)),
        (np.zeros((10, N)), np.zeros(0)),
    ],
)
def test_build_baseline_refuses_bad_shapes(features: F64, scores: F64) -> None:
    with pytest.raises(ValueError, match="drift baseline"):
        build_baseline(features, scores)


def test_to_json_and_from_json_round_trip(built: tuple[DriftBaseline, F64, F64]) -> None:
    baseline, _, _ = built
    text = json.dumps(baseline.to_json(), allow_nan=False)  # what manifest.json can hold
    again = DriftBaseline.from_json(json.loads(text))
    for name in ("means", "stds", "edges", "proportions"):
        np.testing.assert_array_equal(getattr(again, name), getattr(baseline, name), err_msg=name)
    assert (again.rows, again.score_rows, again.bins) == (4_000, 4_000, 10)
    assert again.to_json() == baseline.to_json()


def test_the_json_form_names_every_feature(built: tuple[DriftBaseline, F64, F64]) -> None:
    obj = built[0].to_json()
    assert list(obj["features"]) == list(FEATURE_NAMES)
    assert set(obj["score"]) >= {"mean", "std", "bin_edges", "proportions", "rows"}


def test_a_baseline_without_a_score_std_is_accepted_as_informative_only(
    built: tuple[DriftBaseline, F64, F64],
) -> None:
    obj = built[0].to_json()
    del obj["score"]["std"]
    assert np.isnan(DriftBaseline.from_json(obj).stds[N])


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            obj = obj[key]
        obj[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            obj = obj[key]
        del obj[last]

    return mutate


def _rebin(name: str, bins: int) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        entry = obj["features"][name]
        entry["bin_edges"] = list(np.linspace(-1, 1, bins + 1))
        entry["proportions"] = [1 / bins] * bins

    return mutate


MALFORMED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("no features", _delete("features"), "needs 'features' and 'score'"),
    ("features not an object", _set("features", []), "needs 'features' and 'score'"),
    ("no score", _delete("score"), "needs 'features' and 'score'"),
    ("missing feature", _delete("features.V7"), r"missing \['V7'\], unknown \[\]"),
    ("unknown feature", _set("features.V99", {}), r"missing \[\], unknown \['V99'\]"),
    ("no mean", _delete("features.V3.mean"), "V3 needs numeric mean/std/bin_edges/proportions"),
    ("text mean", _set("features.V3.mean", "high"), "V3 needs numeric mean/std"),
    ("null std", _set("features.V3.std", None), "V3 needs numeric mean/std"),
    ("entry not an object", _set("features.V3", 1.0), "V3 needs numeric"),
    ("zero std", _set("features.V4.std", 0.0), "V4 needs a finite mean and a std > 0"),
    ("negative std", _set("features.V4.std", -1.0), "V4 needs a finite mean and a std > 0"),
    ("infinite mean", _set("features.V4.mean", float("inf")), "V4 needs a finite mean"),
    ("edges count", _set("features.V5.bin_edges", [0, 1, 2]), r"V5 needs len\(bin_edges\) ="),
    ("nested edges", _set("features.V5.bin_edges", [[0, 1]] * 11), r"V5 needs len\(bin_edges\)"),
    ("null proportions", _set("features.V5.proportions", None), r"V5 needs len\(bin_edges\)"),
    ("descending edges", _set("features.V6.bin_edges", list(range(10, -1, -1))), "V6 bin edges"),
    ("NaN edge", _set("features.V6.bin_edges", [0, *range(1, 10), "NaN"]), "V6 bin edges"),
    ("one bin", _rebin("V6", 1), "V6 bin edges must be >= 3, finite, ascending"),
    ("negative share", _set("features.V8.proportions", [-0.1, 0.2] + [0.1] * 8), "V8 proportions"),
    ("shares sum 0.9", _set("features.V8.proportions", [0.09] * 10), "V8 proportions must"),
    ("NaN share", _set("features.V8.proportions", ["NaN"] + [0.1] * 9), "V8 proportions"),
    ("bin counts differ", _rebin("V9", 5), "every feature and the score need the same bin count"),
    ("no score mean", _delete("score.mean"), "score needs numeric mean/bin_edges/proportions"),
    ("text score std", _set("score.std", "0.1"), "score std must be a number"),
    ("bool score std", _set("score.std", True), "score std must be a number"),
    ("negative rows", _set("rows", -1), "rows must be a non-negative integer"),
    ("fractional rows", _set("rows", 1.5), "rows must be a non-negative integer"),
    ("bool rows", _set("rows", True), "rows must be a non-negative integer"),
    ("text score rows", _set("score.rows", "10"), "score rows must be a non-negative integer"),
]


@pytest.mark.parametrize(
    ("mutate", "problem"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_every_malformed_baseline_is_refused_naming_the_problem(
    built: tuple[DriftBaseline, F64, F64], mutate: Callable[[dict[str, Any]], None], problem: str
) -> None:
    obj = copy.deepcopy(built[0].to_json())
    DriftBaseline.from_json(copy.deepcopy(obj))  # the unbroken one loads
    mutate(obj)
    with pytest.raises(ModelLoadError, match=problem):
        DriftBaseline.from_json(obj)


@pytest.mark.parametrize("baseline", [None, [], "baseline", 42])
def test_a_baseline_that_is_not_an_object_is_refused(baseline: object) -> None:
    with pytest.raises(ModelLoadError, match="drift baseline must be a JSON object"):
        DriftBaseline.from_json(baseline)
