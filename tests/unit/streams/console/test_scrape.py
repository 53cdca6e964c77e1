"""Rates and quantiles from scraped Prometheus text, as PromQL's rate/histogram_quantile give."""

from __future__ import annotations

import pytest

from streams.console import scrape
from streams.console.scrape import Scrape, TrafficMonitor, counter_delta, parse_metrics, quantile


def exposition(allow: int, block: int, latency: dict[str, int], dlq: int = 0) -> str:
    lines = [
        "# TYPE sentinel_decisions counter",
        f'sentinel_decisions_total{{variant="A",model_version="v1",decision="ALLOW"}} {allow}',
        f'sentinel_decisions_total{{variant="A",model_version="v1",decision="BLOCK"}} {block}',
        "# TYPE sentinel_dlq_messages counter",
        f'sentinel_dlq_messages_total{{reason="undecodable"}} {dlq}',
        "# TYPE sentinel_consumer_lag_messages gauge",
        'sentinel_consumer_lag_messages{partition="0"} 7',
        "# TYPE sentinel_end_to_end_latency_seconds histogram",
    ]
    lines += [
        f'sentinel_end_to_end_latency_seconds_bucket{{le="{le}"}} {n}' for le, n in latency.items()
    ]
    lines += [
        f"sentinel_end_to_end_latency_seconds_count {latency['+Inf']}",
        "sentinel_end_to_end_latency_seconds_sum 1.0",
    ]
    return "\n".join(lines) + "\n"


def test_quantile_interpolates_inside_the_bucket_holding_the_rank() -> None:
    cumulative = {0.001: 0.0, 0.01: 50.0, 0.1: 100.0, float("inf"): 100.0}
    assert quantile(0.5, cumulative) == pytest.approx(0.01)
    assert quantile(0.75, cumulative) == pytest.approx(0.055)
    assert quantile(0.99, {0.01: 10.0, float("inf"): 100.0}) == 0.01  # +Inf: highest bound
    assert quantile(0.5, {0.01: 0.0, float("inf"): 0.0}) is None


def test_a_counter_that_went_down_counts_from_zero_and_no_baseline_means_no_rate() -> None:
    old = parse_metrics(exposition(1000, 10, {"0.01": 0, "+Inf": 0}))
    new = parse_metrics(exposition(40, 2, {"0.01": 0, "+Inf": 0}))  # the scorer restarted
    assert counter_delta(new, old, "sentinel_decisions_total", ("decision",)) == {
        ("ALLOW",): 40.0,
        ("BLOCK",): 2.0,
    }
    assert counter_delta(new, None, "sentinel_decisions_total") == {}


def test_the_traffic_view_sums_targets_and_takes_rates_over_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    answers = {
        "http://a/metrics": [
            exposition(0, 0, {"0.01": 0, "0.1": 0, "+Inf": 0}),
            exposition(900, 100, {"0.01": 500, "0.1": 1000, "+Inf": 1000}, dlq=5),
        ],
        "http://b/metrics": [None, None],  # down
    }

    def fake_fetch(url: str) -> Scrape:
        text = answers[url].pop(0)
        if text is None:
            return Scrape(url, clock[0], error="URLError: refused")
        return Scrape(url, clock[0], parse_metrics(text))

    monkeypatch.setattr(scrape, "fetch", fake_fetch)
    monitor = TrafficMonitor(answers, interval_s=1.0)
    monitor.scrape_once()
    clock[0] += 10.0
    monitor.scrape_once()
    view = monitor.snapshot()
    assert view["window_s"] == 10.0
    assert view["decisions_per_s"] == {"ALLOW": 90.0, "REVIEW": 0.0, "BLOCK": 10.0, "total": 100.0}
    assert view["latency_ms"]["p50"] == pytest.approx(10.0)
    assert view["dlq_per_s"] == {"undecodable": 0.5}
    assert view["lag"] == {"0": 7.0}
    assert [(t["url"], t["up"]) for t in view["targets"]] == [
        ("http://a/metrics", True),
        ("http://b/metrics", False),
    ]
    assert view["variants"] == [
        {"variant": "A", "model_version": "v1", "per_s": 100.0, "block_rate": 0.1}
    ]
    assert monitor.totals().decisions == 1000


def test_the_view_before_the_first_scrape_has_no_rates_and_does_not_fail() -> None:
    view = TrafficMonitor(["http://a/metrics"]).snapshot()
    assert view["decisions_per_s"]["total"] == 0 and view["targets"] == []
    assert view["latency_ms"] == {"p50": None, "p95": None, "p99": None}
