"""``sentinel broker start|stop|status``: the local single-node Apache Kafka dev broker (and, with
``--with-registry``, a local schema registry beside it)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ops import schema_registry
from ops.kafka_broker import DEFAULT_CACHE_DIR, LocalBroker, ensure_classpath, require_tools
from streams.cli._args import add_broker_dir_flag, env_flag, external_bootstrap


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "broker",
        help="start, stop or inspect the local Apache Kafka dev broker",
        description=(
            "Run a real single-node Apache Kafka (KRaft) broker from Maven Central jars on "
            "loopback "
            "ports chosen once per broker dir and kept across restarts (so running clients "
            "reconnect by themselves). If KAFKA_BOOTSTRAP_SERVERS is set, nothing is started: "
            "that cluster is used."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="start the broker (downloads jars on first use)")
    start.add_argument("--fresh", action="store_true", help="wipe the broker's data first")
    env_flag(
        start,
        "--port",
        "SENTINEL_BROKER_PORT",
        None,
        "client port to pin (stored in the broker dir; default: the stored one, else a free one)",
        type=int,
    )
    start.add_argument(
        "--with-registry",
        action="store_true",
        help=f"also start a local schema registry (Apicurio Registry "
        f"{schema_registry.APICURIO_VERSION}, Confluent API, in-memory) and print its URL",
    )
    env_flag(
        start,
        "--registry-port",
        "SENTINEL_REGISTRY_PORT",
        None,
        "registry port to pin (stored in the registry dir; default: the stored one, else free)",
        type=int,
    )
    status = actions.add_parser("status", help="print the running broker's address and paths")
    stop = actions.add_parser("stop", help="stop the broker and the registry (SIGTERM, then KILL)")
    for sub in (start, status, stop):
        add_broker_dir_flag(sub)
        env_flag(
            sub,
            "--registry-dir",
            "SENTINEL_REGISTRY_DIR",
            ".sentinel/registry",
            "state directory of the local schema registry",
        )
        env_flag(
            sub,
            "--registry-cache-dir",
            "SENTINEL_REGISTRY_CACHE",
            str(schema_registry.DEFAULT_CACHE_DIR),
            "where the registry application is cached",
        )
        env_flag(
            sub,
            "--cache-dir",
            "SENTINEL_KAFKA_CACHE",
            str(DEFAULT_CACHE_DIR),
            "where the broker jars are cached",
        )
    start.set_defaults(run=_start)
    status.set_defaults(run=_status)
    stop.set_defaults(run=_stop)


def _broker(args: argparse.Namespace) -> LocalBroker:
    port = getattr(args, "port", None)  # only `start` pins a port
    return LocalBroker(Path(args.broker_dir), Path(args.cache_dir), port=port)


def _registry(args: argparse.Namespace) -> schema_registry.LocalRegistry:
    return schema_registry.LocalRegistry(
        Path(args.registry_dir),
        Path(args.registry_cache_dir),
        port=getattr(args, "registry_port", None),
    )


def _start(args: argparse.Namespace) -> int:
    external = external_bootstrap()
    if external:
        print(f"KAFKA_BOOTSTRAP_SERVERS is set: using {external}, starting nothing")
    else:
        code = _start_broker(args)
        if code:
            return code
    if args.with_registry:
        began = time.monotonic()
        registry = _registry(args)
        _, downloaded = schema_registry.ensure_app(registry.cache_dir)
        if downloaded:
            print(f"fetched Apicurio Registry into {registry.cache_dir}")
        info = registry.start()
        print(
            f"schema registry running at {info.url} (pid {info.pid}, "
            f"ready in {time.monotonic() - began:.1f} s; in-memory: a restart forgets schemas)"
        )
        print(f"  log: {info.log_file}")
        print(f"  export SENTINEL_SCHEMA_REGISTRY_URL={info.url}")
    return 0


def _start_broker(args: argparse.Namespace) -> int:
    broker = _broker(args)
    running = broker.status()
    if running is not None:
        if args.port is not None and not running.bootstrap.endswith(f":{args.port}"):
            print(
                f"sentinel: error: the broker is already running at {running.bootstrap}; "
                f"stop it first to move it to port {args.port}",
                file=sys.stderr,
            )
            return 1
        print(f"already running: {running.bootstrap} (pid {running.pid})")
        return 0
    require_tools(broker.cache_dir)  # name every missing tool before downloading anything
    began = time.monotonic()
    _, downloaded = ensure_classpath(broker.cache_dir)
    if downloaded:
        print(f"fetched Kafka jars into {broker.cache_dir} in {time.monotonic() - began:.1f} s")
    info = broker.start(fresh=args.fresh)
    print(
        f"Kafka broker running at {info.bootstrap} (pid {info.pid}, "
        f"ready in {time.monotonic() - began:.1f} s)"
    )
    print(f"  log: {info.log_file}")
    print(f"  export KAFKA_BOOTSTRAP_SERVERS={info.bootstrap}")
    return 0


def _status(args: argparse.Namespace) -> int:
    registry = _registry(args).status()
    if registry is not None:
        print(f"schema registry: {registry.url} (pid {registry.pid})")
    external = external_bootstrap()
    if external:
        print(f"KAFKA_BOOTSTRAP_SERVERS is set: using {external} (no local broker is managed)")
        return 0
    info = _broker(args).status()
    if info is None:
        print(f"no local broker is running (state dir {Path(args.broker_dir).resolve()})")
        return 1
    print(f"running: {info.bootstrap} (pid {info.pid}, up {time.time() - info.started_at:.0f} s)")
    print(f"  data: {info.data_dir}")
    print(f"  log:  {info.log_file}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    if _registry(args).stop():
        print("schema registry stopped")
    if _broker(args).stop():
        print("broker stopped")
    else:
        print("no local broker was running")
    return 0
