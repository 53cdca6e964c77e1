"""``sentinel console``: the operator console, a web app on 127.0.0.1 by default.

Reads the product's topics (its own never-joined consumer) and the scorers' metrics, and steers
the fleet through the control topic with the same code as ``sentinel control``. The control
signing key (``SENTINEL_CONTROL_KEY``) and the console token (``SENTINEL_CONSOLE_TOKEN``) are
read here from the environment only, never from flags (they would show in ``ps``).
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import Any

from streams.cli._args import (
    add_kafka_flags,
    add_registry_flags,
    add_topic_flags,
    control_keys,
    default_issuer,
    env_flag,
    kafka_settings,
    positive_float,
    registry_settings,
    topic_names,
)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "console",
        help="the operator console: a web app showing traffic, fleet, A/B, drift, models, DLQ",
        description=(
            "Serve the operator console (JSON API at /api, OpenAPI at /openapi.json). Binds "
            "127.0.0.1 unless --host says otherwise; a non-loopback bind needs "
            "SENTINEL_CONSOLE_TOKEN (mutations then need 'Authorization: Bearer <token>'). "
            "Commands are signed on the server when SENTINEL_CONTROL_KEY(S) is set."
        ),
    )
    add_kafka_flags(parser)
    add_topic_flags(parser)
    add_registry_flags(parser)
    env_flag(parser, "--host", "SENTINEL_CONSOLE_HOST", "127.0.0.1", "address to bind")
    env_flag(
        parser, "--port", "SENTINEL_CONSOLE_PORT", 8765, "port to bind (0: any free port)",
        type=int,
    )  # fmt: skip
    env_flag(
        parser, "--scrape", "SENTINEL_CONSOLE_SCRAPE", "http://127.0.0.1:9464/metrics",
        "scorers' Prometheus endpoints, comma-separated",
    )  # fmt: skip
    env_flag(parser, "--models-dir", "SENTINEL_MODELS_DIR", "models", "model bundles")
    env_flag(
        parser, "--replay-csv", "SENTINEL_REPLAY_CSV", None,
        "CSV the load tester replays [default data/creditcard.csv if present, else "
        "data/synthetic.csv]",
    )  # fmt: skip
    env_flag(
        parser, "--refresh-s", "SENTINEL_CONSOLE_REFRESH_S", 1.0,
        "seconds between metric scrapes and page updates", type=positive_float,
    )  # fmt: skip
    env_flag(
        parser, "--timeout", "SENTINEL_CONTROL_TIMEOUT", 15.0,
        "seconds to wait for every live instance's ack", type=positive_float,
    )  # fmt: skip
    env_flag(
        parser, "--issuer", "SENTINEL_CONTROL_ISSUER", default_issuer("console:"),
        "who issues the console's commands (recorded in the control log)",
    )  # fmt: skip
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from streams.console.app import Services, create_app
    except ImportError as exc:
        from schemas.errors import ConfigError

        raise ConfigError(
            f"the console needs its web stack ({exc.name}): pip install 'sentinel-stream[console]'"
        ) from None
    from streams.cli.produce import default_csv
    from streams.console.config import ConsoleConfig

    keys, key_id = control_keys()  # the secrets are read here and never printed
    config = ConsoleConfig(
        kafka=kafka_settings(args),
        topics=topic_names(args),
        models_dir=Path(args.models_dir),
        host=args.host,
        port=args.port,
        token=os.environ.get("SENTINEL_CONSOLE_TOKEN") or None,
        signing_key=keys.get(key_id) if key_id else None,
        key_id=key_id,
        issuer=args.issuer,
        scrape_urls=tuple(u.strip() for u in args.scrape.split(",") if u.strip()),
        refresh_s=args.refresh_s,
        control_timeout_s=args.timeout,
        replay_csv=Path(args.replay_csv) if args.replay_csv else default_csv(),
        schema_registry=registry_settings(args),
    )
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        from schemas.errors import ConfigError

        raise ConfigError(f"cannot bind {config.host}:{config.port}: {exc.strerror}") from None
    port = sock.getsockname()[1]
    shown = f"[{config.host}]" if family == socket.AF_INET6 else config.host
    app = create_app(Services.build(config))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    )
    token_note = " (mutations need the token)" if config.token else ""
    print(f"sentinel console at http://{shown}:{port}/{token_note}", flush=True)
    import asyncio

    asyncio.run(server.serve(sockets=[sock]))
    return 0
