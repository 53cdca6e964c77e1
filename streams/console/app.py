"""The console's web app: the JSON API, the page, and server-sent events (Starlette).

Reads go to the in-memory views of :class:`~streams.console.sources.TopicFollower` and
:class:`~streams.console.scrape.TrafficMonitor`. Mutations publish control commands through
:func:`streams.control.fleet.issue_command`, the code path of ``sentinel control``, and are
guarded in this order: the Host header must name this console when it binds loopback (against
DNS rebinding); the request must not be cross-site (``Sec-Fetch-Site``, ``Origin``); the body must
be ``application/json`` (a cross-site form cannot send that without a CORS preflight, which this
app never grants); the token must match when one is set. Any refusal publishes nothing. The
control signing key stays in this process: it signs on the server and is never sent anywhere.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from schemas.errors import ConfigError, SentinelError
from schemas.manifest import read_manifest
from schemas.models_dir import VERSION_PATTERN, current_version, list_versions
from streams.console.config import ConsoleConfig
from streams.console.loadtest import LoadTestBusy, LoadTester, parse_load_request
from streams.console.openapi import openapi_document
from streams.console.scrape import TrafficMonitor
from streams.console.sources import TopicFollower
from streams.control.client import CommandOutcome, issue_command, model_args
from streams.control.commands import CommandRefused, new_command
from streams.registry import SchemaRegistry

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = 4096
SERVED_FILE_SUFFIXES = (".png", ".md")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def console_version() -> str:
    try:
        return package_version("sentinel-stream")
    except PackageNotFoundError:
        return "0+unknown"


class ApiError(Exception):
    """A request the API refuses: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Services:
    """What the routes read and drive; started and stopped by the app's lifespan."""

    config: ConsoleConfig
    follower: TopicFollower
    traffic: TrafficMonitor
    load: LoadTester

    @classmethod
    def build(cls, config: ConsoleConfig) -> Services:
        traffic = TrafficMonitor(config.scrape_urls, config.refresh_s)
        return cls(
            config=config,
            follower=TopicFollower(
                config.kafka,
                config.topics,
                SchemaRegistry(config.schema_registry) if config.schema_registry else None,
            ),
            traffic=traffic,
            load=LoadTester(
                config.kafka,
                config.topics.transactions,
                config.replay_csv,
                config.models_dir,
                traffic.totals,
            ),
        )

    def start(self) -> None:
        self.follower.start()
        self.traffic.start()

    def stop(self) -> None:
        self.traffic.stop()
        self.follower.stop()


def create_app(services: Services) -> Starlette:
    """The Starlette app over ``services`` (started on startup, stopped on shutdown)."""
    config = services.config
    command_lock = threading.Lock()  # one command in flight: acks read in log order

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(services.start)
        try:
            yield
        finally:
            await run_in_threadpool(services.stop)

    def guard(request: Request) -> None:
        """Refuse cross-site and unauthenticated mutations (see the module docstring)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise ApiError(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
        origin = request.headers.get("origin")
        if origin is not None:
            host = request.headers.get("host", "")
            if origin == "null" or urlsplit(origin).netloc != host:
                raise ApiError(403, f"cross-site request refused (Origin {origin} is not {host})")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(415, "mutations take a JSON body: send Content-Type: application/json")
        if config.token is not None:
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), config.token.encode()
            ):
                raise ApiError(401, "missing or wrong token: send Authorization: Bearer <token>")

    async def json_body(request: Request, allowed: Collection[str] | None) -> dict[str, Any]:
        guard(request)
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise ApiError(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
        unknown = sorted(set(body) - set(allowed)) if allowed is not None else []
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(unknown)}")
        return body

    def handler(
        fn: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                check_host(request)
                return await fn(request)
            except ApiError as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)

        return wrapped

    def check_host(request: Request) -> None:
        if not config.loopback:
            return
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in LOOPBACK_HOSTS and not name.startswith("127."):
            raise ApiError(400, f"Host {host!r} is not this console (DNS rebinding guard)")

    def fleet_versions() -> dict[str, str]:
        state = services.follower.fleet_view()["state"] or {}
        versions = {}
        if state.get("a_version"):
            versions[state["a_version"]] = "A"
        if state.get("b_version"):
            versions[state["b_version"]] = "B"
        return versions

    def ab_status() -> dict[str, Any]:
        fleet = services.follower.fleet_view()
        return {
            "state": fleet["state"],
            "divergent": fleet["divergent"],
            "traffic": services.traffic.snapshot()["variants"],
            "sample": services.follower.ab_view(),
            "recent_acks": services.follower.recent_acks(),
        }

    cached: list[tuple[float, dict[str, Any]]] = []

    def snapshot() -> dict[str, Any]:
        """The page's whole live view, built at most once per refresh whatever the clients."""
        now = time.monotonic()
        with snapshot_lock:
            if cached and now - cached[0][0] < config.refresh_s * 0.8:
                return cached[0][1]
            view = build_snapshot()
            cached[:] = [(now, view)]
            return view

    snapshot_lock = threading.Lock()

    def build_snapshot() -> dict[str, Any]:
        traffic = services.traffic.snapshot()
        fleet = services.follower.fleet_view()
        return {
            "traffic": traffic,
            "fleet": fleet,
            "ab": {
                "state": fleet["state"],
                "divergent": fleet["divergent"],
                "traffic": traffic["variants"],
                "sample": services.follower.ab_view(),
                "recent_acks": services.follower.recent_acks(),
            },
            "drift": services.follower.drift_view(fleet_versions()),
            "dlq": services.follower.dlq_view(),
            "load": services.load.view(),
        }

    # -- reads ----------------------------------------------------------------------------

    async def index(_request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=_NO_STORE)

    async def openapi(_request: Request) -> Response:
        return JSONResponse(openapi_document(console_version()))

    async def health(_request: Request) -> Response:
        targets = services.traffic.snapshot()["targets"]
        alive = services.follower.alive
        return JSONResponse(
            {
                "status": "ok" if alive else "degraded",
                "topic_reader_alive": alive,
                "topic_reader_error": services.follower.error,
                "scrape_targets": len(targets),
                "scrape_targets_up": sum(t["up"] for t in targets),
                "mutations_need_token": config.token is not None,
            },
            status_code=200 if alive else 503,
        )

    async def version(_request: Request) -> Response:
        try:
            active: str | None = current_version(config.models_dir)
        except SentinelError:
            active = None
        return JSONResponse(
            {
                "console": console_version(),
                "models_current": active,
                "fleet_state": services.follower.fleet_view()["state"],
            }
        )

    async def traffic(_request: Request) -> Response:
        return JSONResponse(services.traffic.snapshot())

    async def fleet(_request: Request) -> Response:
        return JSONResponse(services.follower.fleet_view())

    async def ab(_request: Request) -> Response:
        return JSONResponse(ab_status())

    async def drift(_request: Request) -> Response:
        return JSONResponse(services.follower.drift_view(fleet_versions()))

    async def dlq(_request: Request) -> Response:
        return JSONResponse(services.follower.dlq_view())

    async def models(_request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(models_view, config.models_dir))

    async def model_file(request: Request) -> Response:
        version_name = request.path_params["version"]
        name = request.path_params["name"]
        if version_name not in list_versions(config.models_dir):
            raise ApiError(404, f"no bundle {version_name!r} in {config.models_dir}")
        bundle = config.models_dir / version_name
        files = {p.name for p in bundle.iterdir() if p.is_file()}
        if name not in files or not name.endswith(SERVED_FILE_SUFFIXES):
            raise ApiError(404, f"bundle {version_name} has no file {name!r} to serve")
        return FileResponse(bundle / name)

    async def load_view(_request: Request) -> Response:
        return JSONResponse(services.load.view())

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            while not await request.is_disconnected():
                payload = await run_in_threadpool(snapshot)
                yield b"event: snapshot\ndata: " + _dumps(payload) + b"\n\n"
                await asyncio.sleep(config.refresh_s)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # -- mutations ------------------------------------------------------------------------

    async def publish(name: str, args: dict[str, str | int]) -> Response:
        try:
            command = new_command(
                name, args, config.issuer, config.signing_key, key_id=config.key_id
            )
        except CommandRefused as exc:
            raise ApiError(400, exc.reason) from None

        def run() -> CommandOutcome:
            with command_lock:
                return issue_command(
                    config.kafka,
                    config.topics,
                    command,
                    config.control_timeout_s,
                    config.models_dir,
                )

        try:
            outcome = await run_in_threadpool(run)
        except SentinelError as exc:
            raise ApiError(502, f"could not publish {name}: {exc}") from None
        if name == "ab_split":
            services.follower.clear_sample()
        body = outcome_json(outcome)
        if outcome.offset is None:
            body["error"] = (
                "no live scorer instance (no heartbeat in the last 10 s): nothing published"
            )
            return JSONResponse(body, status_code=409)
        return JSONResponse(body)

    async def ab_setup(request: Request) -> Response:
        body = await json_body(request, {"candidate_version"})
        version_name = body.get("candidate_version")
        if not isinstance(version_name, str) or not VERSION_PATTERN.fullmatch(version_name):
            raise ApiError(400, f"candidate_version must be a version name, got {version_name!r}")
        if version_name not in list_versions(config.models_dir):
            raise ApiError(400, f"no bundle {version_name!r} in {config.models_dir}")
        return await publish("ab_setup", resolved("ab_setup", version_name))

    def resolved(name: str, version_name: str | None) -> dict[str, str | int]:
        """The version and its model sha256 from this console's models/, at publish time."""
        try:
            return model_args(name, config.models_dir, version_name)
        except SentinelError as exc:
            raise ApiError(400, f"{name}: {exc}") from None

    async def reload(request: Request) -> Response:
        await json_body(request, ())
        return await publish("reload", resolved("reload", None))

    async def ab_split(request: Request) -> Response:
        body = await json_body(request, {"percent"})
        if "percent" not in body:
            raise ApiError(400, "missing field: percent (an integer 0-100)")
        percent = body["percent"]
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ApiError(400, f"percent must be an integer 0-100, got {percent!r}")
        return await publish("ab_split", {"percent": percent})

    def no_args(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            await json_body(request, ())
            return await publish(name, {})

        return run

    async def load_start(request: Request) -> Response:
        body = await json_body(request, None)  # parse_load_request names unknown fields
        try:
            load_request = parse_load_request(body)
            view = services.load.start(load_request)
        except LoadTestBusy as exc:
            raise ApiError(409, str(exc)) from None
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from None
        return JSONResponse(view, status_code=202)

    routes = [
        Route("/", handler(index)),
        Route("/openapi.json", handler(openapi)),
        Route("/api/health", handler(health)),
        Route("/api/version", handler(version)),
        Route("/api/traffic", handler(traffic)),
        Route("/api/fleet", handler(fleet)),
        Route("/api/ab/status", handler(ab)),
        Route("/api/ab/setup", handler(ab_setup), methods=["POST"]),
        Route("/api/ab/split", handler(ab_split), methods=["POST"]),
        Route("/api/ab/promote", handler(no_args("promote")), methods=["POST"]),
        Route("/api/ab/abort", handler(no_args("abort")), methods=["POST"]),
        Route("/api/reload", handler(reload), methods=["POST"]),
        Route("/api/drift", handler(drift)),
        Route("/api/models", handler(models)),
        Route("/api/models/{version}/files/{name}", handler(model_file)),
        Route("/api/dlq", handler(dlq)),
        Route("/api/load", handler(load_view), methods=["GET"]),
        Route("/api/load", handler(load_start), methods=["POST"]),
        Route("/api/events", handler(events)),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


_NO_STORE = {"Cache-Control": "no-store"}


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def outcome_json(outcome: CommandOutcome) -> dict[str, Any]:
    """A command's outcome as the API returns it: one row per instance (ack, refusal, silence)."""
    results = []
    for scorer in sorted(set(outcome.live) | set(outcome.acks)):
        ack = outcome.acks.get(scorer)
        results.append(
            {
                "scorer_id": scorer,
                "result": ack.get("result") if ack else "no answer",
                "reason": ack.get("reason") if ack else None,
                "state": (ack or outcome.latest.get(scorer) or {}).get("state"),
            }
        )
    return {
        "command": outcome.command.command,
        "command_id": outcome.command.command_id,
        "args": dict(outcome.command.args),
        "published": outcome.offset is not None,
        "offset": outcome.offset,
        "applied_by_all": outcome.applied_by_all,
        "results": results,
        "missing": outcome.missing,
        "refused": outcome.refused,
        "diverging": list(outcome.diverging),
        "models_current_now": outcome.activated,
    }


def models_view(models_dir: Path) -> dict[str, Any]:
    """Every bundle's manifest summary (no parity sample, no drift baseline) and its files."""
    try:
        active: str | None = current_version(models_dir)
    except SentinelError:
        active = None
    bundles: list[dict[str, Any]] = []
    for version_name in list_versions(models_dir):
        try:
            manifest = read_manifest(models_dir, version_name)
        except SentinelError as exc:
            bundles.append({"version": version_name, "error": str(exc)})
            continue
        directory = models_dir / version_name
        files = sorted(
            p.name for p in directory.iterdir() if p.is_file() and p.suffix in (".png", ".md")
        )
        bundles.append(
            {
                "version": version_name,
                "active": version_name == active,
                "created_at": manifest.created_at,
                "thresholds": {
                    "block": manifest.thresholds.block,
                    "review": manifest.thresholds.review,
                },
                "metrics": {
                    split: {
                        k: v
                        for k, v in (manifest.metrics.get(split) or {}).items()
                        if isinstance(v, int | float)
                    }
                    for split in ("test", "validation")
                },
                "parity": {
                    "max_abs_diff": manifest.parity.max_abs_diff,
                    "rows": manifest.parity.rows,
                    "bound": manifest.parity.bound,
                },
                "data": {
                    "source": manifest.data.source,
                    "sha256": manifest.data.sha256,
                    "rows": manifest.data.rows,
                    "frauds": manifest.data.frauds,
                },
                "model_sha256": manifest.onnx.sha256,
                "plots": [p for p in files if p.endswith(".png")],
                "files": files,
            }
        )
    return {"models_dir": str(models_dir), "current": active, "bundles": bundles}
