"""/healthz means progress: the verdicts an operator (or Docker) acts on, without a broker."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from ops.kafka_broker import free_ports
from streams.health import HealthCheck, HealthConfig, Progress, serve_http


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def check(clock: Clock, progress: Progress, alive: bool = True) -> HealthCheck:
    return HealthCheck(HealthConfig(stall_s=10), progress, lambda: alive)


def test_an_idle_scorer_with_nothing_to_do_stays_healthy() -> None:
    clock = Clock()
    progress = Progress(clock)
    clock.now += 600
    progress.loop_turned()
    assert check(clock, progress).verdict().healthy


def test_lag_without_decisions_turns_unhealthy_and_a_decision_heals_it() -> None:
    clock = Clock()
    progress = Progress(clock)
    progress.lag = 500
    clock.now += 11
    progress.loop_turned()
    verdict = check(clock, progress).verdict()
    assert not verdict.healthy and "lag is 500" in verdict.reason
    progress.decided()
    assert check(clock, progress).verdict().healthy


def test_unacknowledged_records_or_no_broker_count_as_waiting_work() -> None:
    clock = Clock()
    progress = Progress(clock)
    progress.unacked, progress.broker_up = 42, False
    clock.now += 11
    progress.loop_turned()
    reason = check(clock, progress).verdict().reason
    assert "42 records await acknowledgement" in reason and "no broker is reachable" in reason


def test_a_stuck_loop_or_a_dead_control_thread_is_unhealthy() -> None:
    clock = Clock()
    progress = Progress(clock)
    assert check(clock, progress, alive=False).verdict().reason == "control thread is gone"
    clock.now += 11
    assert "scoring loop blocked for 11 s" in check(clock, progress).verdict().reason


def test_the_endpoint_answers_503_with_a_json_reason_beside_the_metrics() -> None:
    clock = Clock()
    progress = Progress(clock)
    registry = CollectorRegistry()
    Counter("sentinel_probe_test", "x", registry=registry).inc()
    (port,) = free_ports(1)
    server = serve_http(port, registry, check(clock, progress), host="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as ok:
            assert ok.status == 200 and json.loads(ok.read())["status"] == "ok"
        progress.lag = 7
        clock.now += 11
        progress.loop_turned()
        try:
            urllib.request.urlopen(f"{base}/health", timeout=5)
            raise AssertionError("expected 503")
        except urllib.error.HTTPError as err:
            assert err.code == 503
            body = json.loads(err.read())
            assert body["status"] == "unhealthy" and "lag is 7" in body["reason"]
            assert body["consumer_lag"] == 7
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as metrics:
            assert b"sentinel_probe_test_total 1.0" in metrics.read()
    finally:
        server.shutdown()
