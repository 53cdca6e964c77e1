"""The console's JSON API, documented: one table that the OpenAPI document (``/openapi.json``)
and the README's API table are built from; a unit test keeps it equal to the app's routes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final


@dataclass(frozen=True)
class Endpoint:
    """One API operation. ``body`` is the JSON Schema of a mutation's request body."""

    method: str
    path: str
    summary: str
    body: dict[str, Any] | None = None
    responses: dict[str, str] = field(default_factory=lambda: {"200": "OK"})

    @property
    def mutation(self) -> bool:
        """POST: needs the token (when one is set) and a same-origin JSON request."""
        return self.method == "POST"


_EMPTY: Final = {"type": "object", "additionalProperties": False, "properties": {}}
_COMMAND_RESPONSES: Final = {
    "200": "published; every live instance's ack or refusal (applied_by_all says if all applied)",
    "400": "invalid input: nothing published",
    "401": "missing or wrong token",
    "403": "cross-site request refused",
    "409": "no live scorer instance: nothing published",
    "415": "body is not application/json",
}

ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    Endpoint(
        "GET",
        "/api/health",
        "the console's own health: topic reader alive, scrape "
        "targets up, whether mutations need a token",
    ),
    Endpoint(
        "GET",
        "/api/version",
        "console version, the active bundle on disk and the versions the fleet serves",
    ),
    Endpoint(
        "GET",
        "/api/traffic",
        "decisions/s by outcome, latency p50/p95/p99, cache hit "
        "rate, batch size, lag per partition, DLQ rate by kind, per scrape target",
    ),
    Endpoint(
        "GET", "/api/fleet", "every instance from its heartbeats: state, liveness, divergence"
    ),
    Endpoint(
        "GET",
        "/api/ab/status",
        "split, per-variant traffic, card share, block rate and "
        "score histogram; the latest command acks",
    ),
    Endpoint(
        "POST",
        "/api/ab/setup",
        "publish ab_setup: load a bundle from models/ as candidate B",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["candidate_version"],
            "properties": {"candidate_version": {"type": "string"}},
        },
        _COMMAND_RESPONSES,
    ),
    Endpoint(
        "POST",
        "/api/ab/split",
        "publish ab_split: route PERCENT of cards to B",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["percent"],
            "properties": {"percent": {"type": "integer", "minimum": 0, "maximum": 100}},
        },
        _COMMAND_RESPONSES,
    ),
    Endpoint("POST", "/api/ab/promote", "publish promote: B becomes A", _EMPTY, _COMMAND_RESPONSES),
    Endpoint("POST", "/api/ab/abort", "publish abort: discard B", _EMPTY, _COMMAND_RESPONSES),
    Endpoint(
        "POST",
        "/api/reload",
        "publish reload: every instance re-reads models/current as A",
        _EMPTY,
        _COMMAND_RESPONSES,
    ),
    Endpoint(
        "GET",
        "/api/drift",
        "per model version: PSI, z-score and flag per feature, "
        "prediction drift (every instance's latest full window, merged)",
    ),
    Endpoint(
        "GET",
        "/api/models",
        "every bundle on disk: metrics, thresholds, parity, data source, plots",
    ),
    Endpoint(
        "GET",
        "/api/models/{version}/files/{name}",
        "a plot or report file of a bundle",
        responses={"200": "the file", "404": "no such bundle or file"},
    ),
    Endpoint(
        "GET",
        "/api/dlq",
        "the latest poison messages (kind, reason, source "
        "partition/offset, hex/text preview) and counts by kind",
    ),
    Endpoint("GET", "/api/load", "the current or last load test: progress and results"),
    Endpoint(
        "POST",
        "/api/load",
        "start a load test: replay COUNT transactions at RATE tx/s",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["count"],
            "properties": {
                "count": {"type": "integer", "minimum": 1},
                "rate": {
                    "type": "number",
                    "minimum": 0,
                    "description": "tx/s; 0 = as fast as possible",
                },
                "bad_fraction": {"type": "number", "minimum": 0, "maximum": 0.5},
                "drift": {"type": "string", "example": "V14=+1.5sd"},
                "seed": {"type": "integer"},
            },
        },
        {
            "202": "started",
            "400": "invalid input",
            "401": "missing or wrong token",
            "403": "cross-site request refused",
            "409": "a load test is already running",
            "415": "body is not application/json",
        },
    ),
    Endpoint(
        "GET",
        "/api/events",
        "server-sent events: one `snapshot` event per refresh with "
        "traffic, fleet, A/B, drift, DLQ and load test views",
        responses={"200": "text/event-stream"},
    ),
)


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of :data:`ENDPOINTS`."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "responses": {code: {"description": text} for code, text in endpoint.responses.items()},
        }
        parameters = [part[1:-1] for part in endpoint.path.split("/") if part.startswith("{")]
        if parameters:
            operation["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in parameters
            ]
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": endpoint.body}},
            }
            operation["security"] = [{}, {"token": []}]
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sentinel Stream operator console",
            "version": version,
            "description": (
                "Reads the product's topics and the scorers' metrics; steers the fleet only "
                "through the control topic. Mutations (POST) take a JSON body, are refused "
                "cross-site, and need `Authorization: Bearer <SENTINEL_CONSOLE_TOKEN>` when a "
                "token is set (always when the console binds a non-loopback address)."
            ),
        },
        "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


def markdown_table() -> str:
    """The README's API table."""
    lines = ["| method | path | what | mutation |", "|---|---|---|---|"]
    for e in ENDPOINTS:
        lines.append(f"| {e.method} | `{e.path}` | {e.summary} | {'yes' if e.mutation else '-'} |")
    return "\n".join(lines)
