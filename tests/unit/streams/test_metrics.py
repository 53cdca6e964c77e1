"""The scorer's metrics: all in one registry passed in, named sentinel_*, bounded labels."""

from __future__ import annotations

import re

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streams.metrics import LATENCY_BUCKETS, STAGES, ScorerMetrics

# Every label a scorer metric may carry: each has a small, closed or operator-bounded value set.
BOUNDED_LABELS = {
    "variant",  # A / B
    "model_version",  # the handful of versions served since start
    "version",
    "sha256",
    "decision",  # ALLOW / REVIEW / BLOCK
    "result",  # hit / miss, ok / refused
    "reason",  # the DLQ poison kinds
    "stage",  # STAGES
    "partition",  # the assigned partitions
    "command",  # the control commands
    "feature",  # the 29 features
}


def samples(registry: CollectorRegistry) -> dict[str, float]:
    """Every sample as ``name{label="value",...}`` -> value."""
    found = {}
    for family in registry.collect():
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            found[f"{s.name}{{{labels}}}"] = s.value
    return found


def test_every_metric_is_registered_on_the_registry_passed_in() -> None:
    mine, other = CollectorRegistry(), CollectorRegistry()
    ScorerMetrics(mine)
    assert list(other.collect()) == []
    assert len(list(mine.collect())) >= 17
    ScorerMetrics(CollectorRegistry())  # a second instance on a fresh registry does not clash


def test_two_scorers_on_one_registry_clash_loudly() -> None:
    registry = CollectorRegistry()
    ScorerMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        ScorerMetrics(registry)


def test_every_metric_is_named_sentinel_something() -> None:
    registry = CollectorRegistry()
    ScorerMetrics(registry)
    names = [family.name for family in registry.collect()]
    assert len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"sentinel_[a-z][a-z0-9]*(_[a-z0-9]+)*", name), name
    exposed = {name.split("{")[0] for name in samples(registry)}
    assert all(name.startswith("sentinel_") for name in exposed)


def test_label_sets_are_bounded() -> None:
    metrics = ScorerMetrics(CollectorRegistry())
    labelled = [
        value
        for value in vars(metrics).values()
        if hasattr(value, "_labelnames") and value._labelnames
    ]
    assert labelled  # the check below looks at something
    for metric in labelled:
        assert set(metric._labelnames) <= BOUNDED_LABELS, metric._labelnames
        assert not {"card_id", "transaction_id", "offset", "scorer_id"} & set(metric._labelnames)


def test_every_stage_is_exported_at_zero_from_the_start() -> None:
    registry = CollectorRegistry()
    ScorerMetrics(registry)
    found = samples(registry)
    for stage in STAGES:
        assert found[f'sentinel_stage_seconds_total{{stage="{stage}"}}'] == 0.0


def test_updates_show_up_in_the_exposition() -> None:
    registry = CollectorRegistry()
    metrics = ScorerMetrics(registry)
    metrics.consumed.inc(1_000)
    metrics.decisions.labels("A", "v1", "BLOCK").inc(3)
    metrics.dlq.labels("undecodable").inc()
    metrics.consumer_lag.labels("2").set(42)
    found = samples(registry)
    assert found["sentinel_consumed_messages_total{}"] == 1_000
    key = 'sentinel_decisions_total{decision="BLOCK",model_version="v1",variant="A"}'
    assert found[key] == 3
    assert found['sentinel_dlq_messages_total{reason="undecodable"}'] == 1
    assert found['sentinel_consumer_lag_messages{partition="2"}'] == 42


def test_batch_histogram_counts_a_whole_array_like_one_observation_each() -> None:
    registry = CollectorRegistry()
    metrics = ScorerMetrics(registry)
    values = np.array([0.0001, 0.0005, 0.004, 0.004, 0.2, 7.0])
    metrics.end_to_end_latency.observe_many(values)
    metrics.end_to_end_latency.observe_many(np.array([]))  # an empty batch changes nothing
    found = samples(registry)
    name = "sentinel_end_to_end_latency_seconds"
    assert found[f"{name}_count{{}}"] == 6
    assert found[f"{name}_sum{{}}"] == pytest.approx(values.sum())
    # buckets are "<= le", like prometheus_client's own Histogram
    assert found[f'{name}_bucket{{le="0.0005"}}'] == 2
    assert found[f'{name}_bucket{{le="0.005"}}'] == 4
    assert found[f'{name}_bucket{{le="0.25"}}'] == 5
    assert found[f'{name}_bucket{{le="5"}}'] == 5
    assert found[f'{name}_bucket{{le="+Inf"}}'] == 6
    assert len([k for k in found if k.startswith(f"{name}_bucket")]) == len(LATENCY_BUCKETS) + 1


def test_the_exposition_is_valid_text_format() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    metrics = ScorerMetrics(registry)
    metrics.end_to_end_latency.observe_many(np.array([0.01, 0.02]))
    text = generate_latest(registry).decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert "sentinel_end_to_end_latency_seconds" in families
    assert all(name.startswith("sentinel_") for name in families)
