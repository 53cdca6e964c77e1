"""Drift monitor: exact merges, PSI and z on hand-computed cases, false alarms, detection, Avro."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from schemas.drift_baseline import DriftBaseline, build_baseline
from schemas.drift_codec import DriftSnapshot, decode_snapshot, encode_snapshot
from schemas.errors import ConfigError, ModelLoadError, SchemaError
from schemas.features import FEATURE_NAMES
from streams.drift.monitor import (
    DriftConfig,
    DriftMonitor,
    merge_snapshots,
    population_stability_index,
)
from streams.metrics import ScorerMetrics

N_FEATURES = len(FEATURE_NAMES)
V14 = FEATURE_NAMES.index("V14")
AMOUNT = FEATURE_NAMES.index("Amount")
Matrix = npt.NDArray[np.float64]


def transactions(rng: np.random.Generator, n: int) -> tuple[Matrix, Matrix]:
    """Rows shaped like the card data: 28 PCA-like normals of varied scale, a heavy-tailed
    lognormal Amount, and fraud scores piled up near zero."""
    features = rng.normal(size=(n, N_FEATURES)) * np.linspace(0.3, 2.0, N_FEATURES)
    features[:, AMOUNT] = np.round(rng.lognormal(np.log(22.0), 1.4, n), 2)
    scores = rng.beta(0.3, 30.0, n)
    return features, scores


@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    """The baseline as the manifest holds it (JSON), so tests can break it field by field."""
    features, scores = transactions(np.random.default_rng(2024), 100_000)
    return build_baseline(features, scores).to_json()


def monitor(
    baseline: dict[str, Any], metrics: ScorerMetrics | None = None, **config: Any
) -> DriftMonitor:
    return DriftMonitor(
        DriftBaseline.from_json(baseline),
        DriftConfig(**config),
        "scorer-1",
        "v1",
        metrics,
        block_threshold=0.5,
    )


def reference_bins(values: Matrix, edges: list[float]) -> list[int]:
    """Independent binning: outer bins open-ended, a value equal to an inner edge goes up."""
    index = np.searchsorted(np.asarray(edges[1:-1]), values.astype(np.float32), side="right")
    counts: list[int] = np.bincount(index, minlength=len(edges) - 1).tolist()
    return counts


# --- exact merges -------------------------------------------------------------------------------


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 3_000),  # crosses BUFFER_ROWS: held rows join the window in bulk
    cuts=st.lists(st.floats(0.0, 1.0), max_size=6),
    tied=st.booleans(),
)
def test_split_and_merged_statistics_equal_one_pass(
    baseline: dict[str, Any], seed: int, rows: int, cuts: list[float], tied: bool
) -> None:
    rng = np.random.default_rng(seed)
    features, scores = transactions(rng, rows)
    if tied:  # many values exactly on bin edges
        features[:, 0] = rng.choice(baseline["features"]["V1"]["bin_edges"], rows)
    bounds = sorted({0, rows, *(int(c * rows) for c in cuts)})
    chunks = list(itertools.pairwise(bounds))

    # Per-batch Welford inside one monitor, and Chan merges across "instances" (one per chunk).
    batched = monitor(baseline)
    parts: list[DriftSnapshot] = []
    for start, stop in chunks:
        batched.observe(features[start:stop], scores[start:stop])
        instance = monitor(baseline)
        instance.observe(features[start:stop], scores[start:stop])
        parts.append(instance.snapshot(now_ms=1_000 + stop))
    merged = merge_snapshots(parts)

    values = features.astype(np.float32).astype(np.float64)
    for snap in (batched.snapshot(now_ms=5_000), merged):
        assert snap.count == rows
        for i, feature in enumerate(snap.features):
            column = values[:, i]
            assert feature.mean == pytest.approx(column.mean(), rel=1e-9, abs=1e-9)
            assert feature.m2 == pytest.approx(
                ((column - column.mean()) ** 2).sum(), rel=1e-9, abs=1e-7
            )
            edges = baseline["features"][feature.name]["bin_edges"]
            assert list(feature.bin_counts) == reference_bins(column, edges)
        assert list(snap.prediction.bin_counts) == reference_bins(
            scores, baseline["score"]["bin_edges"]
        )
        assert snap.prediction.above_threshold_count == int(
            (scores.astype(np.float32) >= 0.5).sum()
        )
    single = monitor(baseline)
    single.observe(features, scores)
    one_pass = single.snapshot(now_ms=5_000)
    assert [f.psi for f in merged.features] == pytest.approx([f.psi for f in one_pass.features])
    assert [f.z_score for f in merged.features] == pytest.approx(
        [f.z_score for f in one_pass.features], abs=1e-12
    )
    assert merged.window_start_ms == min(p.window_start_ms for p in parts)
    assert merged.window_end_ms == 1_000 + rows


def test_lifetime_covers_every_window_including_the_open_one(baseline: dict[str, Any]) -> None:
    rng = np.random.default_rng(5)
    drift = monitor(baseline)
    windows = []
    for end in (1_000, 2_000, 3_000):
        drift.observe(*transactions(rng, 300))
        windows.append(drift.snapshot(now_ms=end))
    drift.observe(*transactions(rng, 100))
    lifetime = drift.lifetime_snapshot(now_ms=3_500)
    windows.append(drift.snapshot(now_ms=3_500))
    everything = merge_snapshots(windows)
    assert lifetime.count == everything.count == 1_000
    assert [f.bin_counts for f in lifetime.features] == [f.bin_counts for f in everything.features]
    assert [f.mean for f in lifetime.features] == pytest.approx(
        [f.mean for f in everything.features]
    )
    assert lifetime.window_end_ms == 3_500


def test_merging_different_model_versions_is_refused(baseline: dict[str, Any]) -> None:
    first = monitor(baseline).snapshot(now_ms=1)
    other = DriftMonitor(
        DriftBaseline.from_json(baseline), DriftConfig(), "scorer-2", "v2", block_threshold=0.5
    )
    with pytest.raises(ConfigError, match="different model versions"):
        merge_snapshots([first, other.snapshot(now_ms=2)])
    with pytest.raises(ConfigError, match="no drift snapshots"):
        merge_snapshots([])


# --- PSI and z on hand-computed cases -----------------------------------------------------------


def test_psi_hand_computed() -> None:
    # (0.5 - 0.25) ln(0.5 / 0.25) + (0.5 - 0.75) ln(0.5 / 0.75) = 0.17329 + 0.10137
    assert population_stability_index([50, 50], [0.25, 0.75]) == pytest.approx(0.274653, abs=1e-6)
    # An empty bin counts as 1e-4: (1e-4 - 0.5) ln(1e-4 / 0.5) + (1 - 0.5) ln(1 / 0.5)
    #   = 4.257745 + 0.346574
    assert population_stability_index([0, 80], [0.5, 0.5]) == pytest.approx(4.604318, abs=1e-6)
    assert population_stability_index([10, 30, 60], [0.1, 0.3, 0.6]) == pytest.approx(0.0)
    assert math.isnan(population_stability_index([0, 0], [0.5, 0.5]))


def two_bin_baseline(mean: float, std: float) -> dict[str, Any]:
    """Every feature: two bins split at 0 (half below, half above), given mean and std."""
    entry = {"mean": mean, "std": std, "bin_edges": [-10.0, 0.0, 10.0], "proportions": [0.5, 0.5]}
    return {"features": {name: dict(entry) for name in FEATURE_NAMES}, "score": dict(entry)}


def test_z_score_and_psi_in_a_window_hand_computed() -> None:
    drift = monitor(two_bin_baseline(mean=1.0, std=2.0), min_count=4)
    # V-values 2, 4, 2, 4: mean 3, population std 1, all four in the upper bin.
    features = np.tile(np.array([[2.0], [4.0], [2.0], [4.0]]), (1, N_FEATURES))
    drift.observe(features, np.array([0.2, 0.4, 0.6, 0.8]))
    snap = drift.snapshot(now_ms=10)
    v1 = snap.features[0]
    assert (v1.count, v1.mean, v1.m2, v1.std) == (4, 3.0, 4.0, 1.0)
    assert v1.z_score == pytest.approx((3.0 - 1.0) / 2.0)
    assert v1.bin_counts == (0, 4)
    assert v1.psi == pytest.approx(population_stability_index([0, 4], [0.5, 0.5]))
    assert v1.drifted  # z = 1.0 >= 0.25 and |3 - 1| / (1 / sqrt 4) = 4 >= 4
    assert snap.prediction.mean == pytest.approx(0.5)
    assert snap.prediction.share_above_threshold == 0.5  # 0.6 and 0.8 are >= 0.5
    assert snap.prediction.bin_counts == (0, 4)


def test_one_outlier_moving_a_small_window_mean_is_not_a_mean_shift() -> None:
    drift = monitor(two_bin_baseline(mean=0.0, std=1.0))
    features = np.tile(np.array([[-0.1], [0.1]]), (300, N_FEATURES))
    features[0] = 150.0  # moves the mean by 0.25 baseline sd, but is not significant
    drift.observe(features, np.full(600, 0.5))
    v1 = drift.snapshot(now_ms=10).features[0]
    assert v1.z_score >= 0.25
    assert v1.psi < 0.2
    assert not v1.drifted


def test_empty_window_has_nan_statistics_and_no_verdict(baseline: dict[str, Any]) -> None:
    snap = monitor(baseline).snapshot(now_ms=1)
    assert snap.count == 0
    assert math.isnan(snap.features[0].psi) and math.isnan(snap.features[0].z_score)
    assert not snap.drifted and snap.drifted_features == ()


# --- no false alarms, real shifts flagged -------------------------------------------------------


def test_stationary_stream_raises_no_drift(baseline: dict[str, Any]) -> None:
    rng = np.random.default_rng(99)  # not the baseline's sample
    drift = monitor(baseline)
    for window in range(30):
        for _ in range(2):
            drift.observe(*transactions(rng, 500))
        snap = drift.snapshot(now_ms=window)
        assert not snap.drifted, snap.drifted_features
        assert max(f.psi for f in snap.features) < 0.1
        assert not snap.prediction.drifted


def test_small_windows_are_reported_but_never_flagged(baseline: dict[str, Any]) -> None:
    registry = CollectorRegistry()
    features, scores = transactions(np.random.default_rng(7), 100)
    features[:, V14] += 5.0
    snap = _observe_once(monitor(baseline, ScorerMetrics(registry)), features, scores)
    assert snap.features[V14].psi > 1.0
    assert not snap.drifted
    # Gauges say "not judged" rather than a PSI an alert rule would page on.
    psi = registry.get_sample_value("sentinel_drift_feature_psi", {"feature": "V14"})
    assert psi is not None and math.isnan(psi)
    assert registry.get_sample_value("sentinel_drift_drifted_features") == 0.0


def _observe_once(drift: DriftMonitor, features: Matrix, scores: Matrix) -> DriftSnapshot:
    drift.observe(features.astype(np.float32), scores.astype(np.float32))
    return drift.snapshot(now_ms=1)


def test_v14_shifted_by_one_and_a_half_sd_is_flagged_first(baseline: dict[str, Any]) -> None:
    registry = CollectorRegistry()
    features, scores = transactions(np.random.default_rng(11), 2_000)
    features[:, V14] += 1.5 * baseline["features"]["V14"]["std"]
    snap = _observe_once(monitor(baseline, ScorerMetrics(registry)), features, scores)

    assert snap.drifted
    assert snap.drifted_features == ("V14",)
    assert snap.features[V14].z_score == pytest.approx(1.5, abs=0.1)
    psi = registry.get_sample_value("sentinel_drift_feature_psi", {"feature": "V14"})
    assert psi == pytest.approx(snap.features[V14].psi)
    assert registry.get_sample_value("sentinel_drift_drifted_features") == 1.0
    z = registry.get_sample_value("sentinel_drift_feature_zscore", {"feature": "V14"})
    assert z == pytest.approx(snap.features[V14].z_score)


def test_several_drifted_features_are_ranked_by_psi(baseline: dict[str, Any]) -> None:
    features, scores = transactions(np.random.default_rng(12), 3_000)
    features[:, V14] += 1.5 * baseline["features"]["V14"]["std"]
    features[:, AMOUNT] *= 3.0
    features[:, 2] += 0.6 * baseline["features"]["V3"]["std"]
    scores = np.minimum(scores * 4.0, 1.0)
    snap = _observe_once(monitor(baseline), features, scores)
    assert set(snap.drifted_features) == {"V14", "Amount", "V3"}
    psis = [snap.features[FEATURE_NAMES.index(name)].psi for name in snap.drifted_features]
    assert psis == sorted(psis, reverse=True)
    assert snap.prediction.drifted and snap.prediction.mean > 3 * baseline["score"]["mean"]


def test_due_after_the_interval_and_restarts_after_a_snapshot(baseline: dict[str, Any]) -> None:
    rng = np.random.default_rng(3)
    drift = monitor(baseline, interval_s=10.0)
    assert not drift.due(90.0)  # an empty window is never due and its clock does not run
    drift.observe(*transactions(rng, 10))
    assert not drift.due(100.0)  # the first call with rows starts the window clock
    assert not drift.due(109.9)
    assert drift.due(110.0)
    drift.snapshot(now_ms=110_000)
    assert not drift.due(500.0)  # idle after a snapshot: nothing to judge, no clock
    drift.observe(*transactions(rng, 10))
    assert not drift.due(501.0)
    assert drift.due(511.0)


# --- baseline, config and Avro --------------------------------------------------------------------


def test_bad_baselines_are_refused_naming_the_problem(baseline: dict[str, Any]) -> None:
    missing = {**baseline, "features": dict(baseline["features"])}
    del missing["features"]["V7"]
    with pytest.raises(ModelLoadError, match=r"missing \['V7'\]"):
        monitor(missing)
    short = {**baseline, "features": dict(baseline["features"])}
    short["features"]["V2"] = {**short["features"]["V2"], "bin_edges": [0.0, 1.0]}
    with pytest.raises(ModelLoadError, match="V2 needs len"):
        monitor(short)
    flat = {**baseline, "features": dict(baseline["features"])}
    flat["features"]["V5"] = {**flat["features"]["V5"], "std": 0.0}
    with pytest.raises(ModelLoadError, match="V5 needs a finite mean and a std > 0"):
        monitor(flat)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="psi_threshold"):
        DriftConfig(psi_threshold=0.0)
    with pytest.raises(ConfigError, match="min_count"):
        DriftConfig(min_count=0)


def test_baseline_matches_the_manifest_contract(baseline: dict[str, Any]) -> None:
    assert list(baseline["features"]) == list(FEATURE_NAMES)
    v14 = baseline["features"]["V14"]
    assert len(v14["bin_edges"]) == 11 and len(v14["proportions"]) == 10
    assert sum(v14["proportions"]) == pytest.approx(1.0)
    assert set(baseline["score"]) == {"mean", "std", "bin_edges", "proportions", "rows", "source"}
    assert baseline["rows"] == baseline["score"]["rows"] == 100_000
    parsed = DriftBaseline.from_json(baseline)
    assert parsed.to_json() == baseline  # the JSON form round-trips exactly


def test_avro_round_trip(baseline: dict[str, Any]) -> None:
    features, scores = transactions(np.random.default_rng(13), 1_500)
    features[:, V14] += 2.0
    snap = _observe_once(monitor(baseline), features, scores)
    assert snap.drifted_features  # a non-trivial verdict survives the trip
    assert decode_snapshot(encode_snapshot(snap)) == snap
    empty = encode_snapshot(monitor(baseline).snapshot(now_ms=1))  # NaN statistics
    assert encode_snapshot(decode_snapshot(empty)) == empty


def test_garbage_is_not_a_snapshot(baseline: dict[str, Any]) -> None:
    data = encode_snapshot(monitor(baseline).snapshot(now_ms=1))
    with pytest.raises(SchemaError, match="not an Avro DriftSnapshot"):
        decode_snapshot(data[:40])
    with pytest.raises(SchemaError, match="trailing bytes"):
        decode_snapshot(data + b"\x00")
    with pytest.raises(SchemaError, match="not an Avro DriftSnapshot"):
        decode_snapshot(b'{"scorer_id": "json is not avro"}')


# --- `sentinel drift report` (no broker: the selection, table and chart) -------------------------


def _window(
    baseline: dict[str, Any], scorer: str, version: str, end_ms: int, shift: float
) -> DriftSnapshot:
    features, scores = transactions(np.random.default_rng(end_ms), 1_000)
    features[:, V14] += shift
    drift = DriftMonitor(
        DriftBaseline.from_json(baseline), DriftConfig(), scorer, version, block_threshold=0.5
    )
    drift.observe(features, scores)
    return drift.snapshot(now_ms=end_ms)


def test_report_merges_the_latest_window_of_each_instance(
    baseline: dict[str, Any], tmp_path: Path
) -> None:
    from streams.cli.drift import format_report, select_snapshots, write_chart

    snaps = [
        _window(baseline, "a", "v1", 1_000, shift=0.0),
        _window(baseline, "a", "v1", 2_000, shift=3.0),  # a's latest
        _window(baseline, "b", "v1", 1_500, shift=3.0),  # b's latest
        _window(baseline, "a", "v0", 500, shift=0.0),
    ]
    version, chosen = select_snapshots(snaps, None, all_windows=False)
    assert version == "v1"
    assert [(s.scorer_id, s.window_end_ms) for s in chosen] == [("a", 2_000), ("b", 1_500)]
    assert len(select_snapshots(snaps, "v1", all_windows=True)[1]) == 3
    with pytest.raises(ConfigError, match="no drift snapshots for model version 'v9'"):
        select_snapshots(snaps, "v9", all_windows=False)

    merged = merge_snapshots(chosen)
    table = format_report(merged, instances=2, windows=2).splitlines()
    assert table[0].startswith("drift of model v1: 2,000 rows from 2 instance(s)")
    feature_rows = [line for line in table if line[:8].strip() in FEATURE_NAMES]
    assert feature_rows[0].split()[0] == "V14" and feature_rows[0].endswith("YES")
    assert table[-1] == "verdict: DRIFTED - features: V14; prediction: no"

    chart = tmp_path / "psi.png"
    write_chart(merged, chart)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="cannot write the PSI chart"):
        write_chart(merged, tmp_path / "missing-dir" / "psi.png")
