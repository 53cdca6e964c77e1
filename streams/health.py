"""Health that means progress, served beside ``/metrics`` on the same port.

A live process is not a working scorer: with its broker gone or frozen, a scorer used to stay up
and keep serving ``/metrics`` while deciding nothing (issue 12). :class:`Progress` is the
scorer's record of what it did and what waits; :class:`HealthCheck` turns it into a verdict:

* unhealthy when the control thread is gone (the instance would silently stop following the
  control log);
* unhealthy when the scoring loop has not turned for ``stall_s`` (it is stuck in a call);
* unhealthy when no decision was acknowledged for ``stall_s`` while work waits: known consumer
  lag, decisions produced but not acknowledged, or no broker reachable (lag then is unknown);
* healthy otherwise, including an idle scorer with nothing to do.

``GET /healthz`` (also ``/health``) answers 200 or 503 with a JSON body naming the reason; every
other path is the Prometheus exposition. The server runs on daemon threads and never touches
Kafka, so a probe cannot block the scorer nor be blocked by it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from schemas.errors import ConfigError

HEALTH_PATHS = frozenset({"/healthz", "/health"})


class Progress:
    """Marks the scoring loop leaves for the health check (written by one thread, read by any).

    Each mark is a single attribute store, atomic under the GIL; readers may see a value one
    loop iteration old, which is all a health check needs.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        now = clock()
        self.started_at = now
        self.loop_at = now  # the scoring loop's last turn
        self.decided_at = now  # the last acknowledged decision (start counts as one)
        self.lag = 0  # last known consumer lag, summed over owned partitions
        self.unacked = 0  # decisions and DLQ records produced, not yet acknowledged
        self.broker_up = True  # some broker answered (librdkafka statistics)

    def loop_turned(self) -> None:
        self.loop_at = self._clock()

    def decided(self) -> None:
        self.decided_at = self._clock()

    def now(self) -> float:
        return self._clock()


@dataclass(frozen=True)
class HealthConfig:
    """``stall_s``: how long without progress counts as stuck (see the module docstring)."""

    stall_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.stall_s > 0:
            raise ConfigError(f"health stall time must be > 0 s, got {self.stall_s}")


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    reason: str
    details: dict[str, Any]

    def to_json(self) -> bytes:
        body = {"status": "ok" if self.healthy else "unhealthy", "reason": self.reason}
        return json.dumps({**body, **self.details}).encode()


class HealthCheck:
    """Evaluates :class:`Progress` and the liveness of the instance's threads."""

    def __init__(
        self,
        config: HealthConfig,
        progress: Progress,
        control_alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config = config
        self._progress = progress
        self._control_alive = control_alive

    def verdict(self) -> Verdict:
        p, stall = self._progress, self.config.stall_s
        now = p.now()
        idle_for = now - p.decided_at
        details: dict[str, Any] = {
            "seconds_since_decision": round(idle_for, 1),
            "seconds_since_loop": round(now - p.loop_at, 1),
            "consumer_lag": p.lag,
            "unacknowledged": p.unacked,
            "broker_reachable": p.broker_up,
            "stall_s": stall,
        }
        if not self._control_alive():
            return Verdict(False, "control thread is gone", details)
        if now - p.loop_at > stall:
            return Verdict(False, f"scoring loop blocked for {now - p.loop_at:.0f} s", details)
        if idle_for > stall:
            waiting = _waiting(p)
            if waiting:
                return Verdict(
                    False, f"no decision for {idle_for:.0f} s while {', '.join(waiting)}", details
                )
        return Verdict(True, "making progress", details)


def _waiting(p: Progress) -> list[str]:
    waiting = []
    if p.lag > 0:
        waiting.append(f"lag is {p.lag}")
    if p.unacked > 0:
        waiting.append(f"{p.unacked} records await acknowledgement")
    if not p.broker_up:
        waiting.append("no broker is reachable")
    return waiting


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no log
        return


def health_app(registry: CollectorRegistry, health: HealthCheck) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: ``/healthz`` and ``/health`` from ``health``, anything else Prometheus."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in HEALTH_PATHS:
            verdict = health.verdict()
            status = "200 OK" if verdict.healthy else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [verdict.to_json()]
        result: Iterable[bytes] = metrics(environ, start_response)
        return result

    return app


def serve_http(
    port: int, registry: CollectorRegistry, health: HealthCheck, host: str = "0.0.0.0"
) -> WSGIServer:
    """Serve ``/metrics`` and ``/healthz`` on ``port`` from a daemon thread; returns the server."""
    server = make_server(
        host, port, health_app(registry, health), _ThreadingServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
