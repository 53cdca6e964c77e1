"""The Grafana dashboard only queries metrics the scorer exports, and shows what ops needs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from streams.metrics import ScorerMetrics

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "sentinel.json"
# Series Prometheus itself adds to every scrape target.
PROMETHEUS_SERIES = {"up"}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan", "atan2",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        followed_by_call = text[match.end() :].lstrip().startswith("(")
        if not followed_by_call and match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def exported_names(exposition: str | None = None) -> set[str]:
    """Series names in a Prometheus exposition (default: a fresh scorer's registry), expanded
    per type, so families declared without samples yet (no A/B, no drift window) count too."""
    if exposition is None:
        registry = CollectorRegistry()
        ScorerMetrics(registry)
        exposition = generate_latest(registry).decode()
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            suffixes = {"histogram": ("_bucket", "_sum", "_count")}.get(kind, ("",))
            names |= {name + suffix for suffix in suffixes}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return found


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", []) if t.get("expr")]


def test_metric_name_extraction_sees_through_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, variant) (rate(a_bucket{result="hit"}[5m])))'
        " / scalar(sum(rate(b_total[$__rate_interval]))) * 1e-3 + on(job) group_left up"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "up"}


def test_every_metric_a_panel_queries_is_exported_by_the_scorer(
    dashboard: dict[str, Any],
) -> None:
    used = set().union(*(metric_names(e) for e in exprs(dashboard)))
    exported = exported_names()
    assert "sentinel_end_to_end_latency_seconds_bucket" in exported
    missing = sorted(used - exported - PROMETHEUS_SERIES)
    assert not missing, f"panels query metrics the scorer does not export: {missing}"


def test_dashboard_covers_what_operators_watch(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(e) for e in exprs(dashboard)))
    assert {
        "sentinel_consumed_messages_total",
        "sentinel_decisions_total",
        "sentinel_end_to_end_latency_seconds_bucket",
        "sentinel_batch_size_messages_bucket",
        "sentinel_cache_lookups_total",
        "sentinel_consumer_lag_messages",
        "sentinel_dlq_messages_total",
        "sentinel_model_info",
        "sentinel_ab_split_percent",
        "sentinel_drift_feature_psi",
        "sentinel_control_commands_total",
    } <= used
    latency = [e for e in exprs(dashboard) if "sentinel_end_to_end_latency_seconds_bucket" in e]
    quantiles = {re.search(r"histogram_quantile\(([\d.]+)", e).group(1) for e in latency}  # type: ignore[union-attr]
    assert quantiles == {"0.5", "0.95", "0.99"}


def test_panels_use_the_provisioned_datasource_and_the_provider_loads_the_dashboard(
    dashboard: dict[str, Any],
) -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for ref in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert ref["uid"] == datasource["uid"], panel["title"]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/sentinel.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./ops/grafana/dashboards:{providers['providers'][0]['options']['path']}:ro" in mounts
