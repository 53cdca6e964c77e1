"""A real Prometheus, with the project's scrape config, scraping a real ``sentinel score``."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from streams.config import KafkaSettings, TopicNames
from tests.fixtures.prometheus import PROMETHEUS_DIR, PrometheusLauncher
from tests.fixtures.scorer import ScorerLauncher
from tests.unit.ops.test_dashboard import exported_names, exprs, metric_names

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "dashboards" / "sentinel.json"
# Grafana's interval variables, given the values Grafana would substitute at 1 s scrapes.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def test_promtool_accepts_the_config_and_the_alert_rules_behave(prometheus_binary: str) -> None:
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],  # each alert fires, or stays silent, as designed
    ):
        done = subprocess.run(
            ["promtool", *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"promtool {' '.join(args)}: {done.stdout}{done.stderr}"
        assert "SUCCESS" in done.stdout + done.stderr


def _send(bootstrap: str, topic: str, count: int) -> int:
    from streams.tools.replayer import ReplayOptions, replay

    rng = np.random.default_rng(5)
    features = rng.normal(0.0, 1.0, size=(count, 29))
    features[:, 28] = np.abs(features[:, 28]) * 80.0  # Amount: non-negative
    labels = np.zeros(count, dtype=np.int8)
    result = replay(KafkaSettings(bootstrap), topic, features, labels, ReplayOptions(count=count))
    good: int = result.good
    return good


def _value(sample: dict[str, object]) -> float:
    return float(sample["value"][1])  # type: ignore[index]


def test_prometheus_scrapes_throughput_and_latency_from_a_running_scorer(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    prometheus_server: PrometheusLauncher,
) -> None:
    scorer = scorers.start()
    target = f"127.0.0.1:{scorer.metrics_port}"
    prometheus = prometheus_server.start(target)

    sent = _send(kafka_bootstrap, scorer_topics.transactions, 500)

    try:
        consumed = prometheus.wait_for(
            "sentinel_consumed_messages_total",
            until=lambda result: bool(result) and _value(result[0]) >= sent,
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nscorer (exit {scorer.proc.poll()}):\n{scorer.output()}"
        ) from exc
    assert consumed[0]["metric"]["job"] == "sentinel-scorer"
    assert consumed[0]["metric"]["instance"] == target
    assert _value(consumed[0]) == sent

    buckets = prometheus.wait_for(
        'sentinel_end_to_end_latency_seconds_bucket{le="+Inf"}',
        until=lambda result: bool(result) and _value(result[0]) >= sent,
    )
    assert _value(buckets[0]) == sent
    all_buckets = prometheus.query("sentinel_end_to_end_latency_seconds_bucket")
    assert len(all_buckets) > 2  # the full bucket ladder, not just +Inf
    p99 = prometheus.query(
        "histogram_quantile(0.99, sum by (le) (sentinel_end_to_end_latency_seconds_bucket))"
    )
    assert 0 < _value(p99[0]) < 60  # a latency in seconds, computed by Prometheus itself

    up = prometheus.query('up{job="sentinel-scorer"}')
    assert [_value(s) for s in up] == [1.0]

    # Every metric a Grafana panel queries is one this running scorer actually exports.
    exposition = urllib.request.urlopen(f"http://{target}/metrics").read().decode()
    exported = {"up"} | exported_names(exposition)
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {name for expr in exprs(dashboard) for name in metric_names(expr)}
    assert queried - exported == set()


def test_every_dashboard_query_is_valid_promql_and_the_alert_rules_load(
    prometheus_server: PrometheusLauncher,
) -> None:
    prometheus = prometheus_server.start("127.0.0.1:9")  # no target needed to parse queries
    alerts = PROMETHEUS_DIR / "alerts.yml"
    if alerts.exists():
        loaded = {g["name"] for g in prometheus.api("/api/v1/rules")["groups"]}
        assert loaded == {g["name"] for g in yaml.safe_load(alerts.read_text())["groups"]}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    assert len(exprs) >= 15
    for expr in exprs:
        concrete = re.sub(
            r"\$__\w+", lambda m: GRAFANA_VARIABLES[m.group()], expr
        )  # KeyError = a Grafana variable this test does not know
        prometheus.query(concrete)  # raises with Prometheus' parse error if the query is bad
