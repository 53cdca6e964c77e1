"""``sentinel score``: run scorer processes (consumer-group members) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from schemas.event_time import DEFAULT_MAX_AGE_MS, DEFAULT_MAX_AHEAD_MS
from streams.cli._args import (
    add_kafka_flags,
    add_models_dir_flag,
    add_registry_flags,
    add_topic_flags,
    control_keys,
    env_flag,
    kafka_settings,
    positive_float,
    positive_int,
    registry_settings,
    topic_names,
)

log = logging.getLogger("sentinel.score")


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 3.15e9:  # `not` also refuses NaN
        raise argparse.ArgumentTypeError(f"must be a number of seconds in 0..3.15e9, got {text!r}")
    return value


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "score",
        help="consume transactions, score them with the served model(s), produce decisions",
        description=(
            "Join the scorer consumer group and turn transactions into decisions, at least once "
            "(or exactly once: --processing-guarantee). "
            "Replays the control log first so every instance serves the same models. "
            "SIGTERM/SIGINT: finish the batch, wait for acks, commit and leave the group within "
            "--shutdown-timeout-s, exit 0; exit 3 (naming the partitions and offsets left "
            "uncommitted, which the next owner re-reads) if it could not commit in time. "
            "GET /healthz on the metrics port: 503 when there is work but no progress."
        ),
    )
    add_kafka_flags(parser)
    add_topic_flags(parser)
    add_registry_flags(parser)
    add_score_flags(parser)
    parser.set_defaults(run=_run)


def add_score_flags(parser: argparse.ArgumentParser) -> None:
    add_models_dir_flag(parser, "model bundles directory")
    env_flag(parser, "--group-id", "SENTINEL_GROUP_ID", "sentinel-scorer", "consumer group")
    env_flag(parser, "--scorer-id", "SENTINEL_SCORER_ID", None, "instance id (default host-pid)")
    env_flag(parser, "--workers", "SENTINEL_WORKERS", 1, "scorer processes", type=positive_int)
    env_flag(
        parser,
        "--max-batch",
        "SENTINEL_MAX_BATCH",
        2000,
        "max messages per micro-batch",
        type=positive_int,
    )
    env_flag(
        parser,
        "--max-wait-ms",
        "SENTINEL_MAX_WAIT_MS",
        1.0,
        "max wait to fill a micro-batch (bounds added latency at low rates)",
        type=positive_float,
    )
    env_flag(
        parser,
        "--cache-capacity",
        "SENTINEL_CACHE_CAPACITY",
        10_000,
        "how many recent rows the decision cache keeps (0 disables it)",
        type=int,
    )
    env_flag(parser, "--cache-ttl-s", "SENTINEL_CACHE_TTL_S", 2.0, "decision cache TTL", type=float)
    env_flag(
        parser,
        "--max-message-bytes",
        "SENTINEL_MAX_MESSAGE_BYTES",
        65_536,
        "larger transactions go to the DLQ as oversize",
        type=positive_int,
    )
    env_flag(
        parser,
        "--max-event-age-s",
        "SENTINEL_MAX_EVENT_AGE_S",
        DEFAULT_MAX_AGE_MS / 1000,
        "older event times go to the DLQ as absurd_value",
        type=_seconds,
    )
    env_flag(
        parser,
        "--max-event-ahead-s",
        "SENTINEL_MAX_EVENT_AHEAD_S",
        DEFAULT_MAX_AHEAD_MS / 1000,
        "event times further ahead of this scorer's clock go to the DLQ as absurd_value",
        type=_seconds,
    )
    env_flag(
        parser,
        "--dlq-max-share",
        "SENTINEL_DLQ_MAX_SHARE",
        0.5,
        "stop if more than this share of the last --dlq-window messages was poison",
        type=float,
    )
    env_flag(
        parser,
        "--dlq-window",
        "SENTINEL_DLQ_WINDOW",
        1000,
        "DLQ limit window (messages)",
        type=positive_int,
    )
    env_flag(
        parser,
        "--drift-interval-s",
        "SENTINEL_DRIFT_INTERVAL_S",
        10.0,
        "seconds between drift snapshots (0 disables drift tracking)",
        type=float,
    )
    env_flag(
        parser,
        "--shutdown-timeout-s",
        "SENTINEL_SHUTDOWN_TIMEOUT_S",
        20.0,
        "SIGTERM: at most this long for acks, commit and leaving the group (then exit)",
        type=positive_float,
    )
    env_flag(
        parser,
        "--processing-guarantee",
        "SENTINEL_PROCESSING_GUARANTEE",
        "at-least-once",
        "at-least-once: offsets committed after the broker acked the decisions (a crash may "
        "repeat some); exactly-once: decisions, DLQ records and offsets in one Kafka "
        "transaction per batch, for read_committed readers (transactional.id = "
        "GROUP_ID.SCORER_ID: keep --scorer-id stable so a restart fences its zombie)",
        choices=("at-least-once", "exactly-once"),
    )
    env_flag(
        parser,
        "--group-protocol",
        "SENTINEL_GROUP_PROTOCOL",
        "classic",
        "consumer group protocol: classic, or consumer (KIP-848; session timeout is the "
        "broker's group.consumer.session.timeout.ms)",
        choices=("classic", "consumer"),
    )
    env_flag(
        parser,
        "--session-timeout-ms",
        "SENTINEL_SESSION_TIMEOUT_MS",
        6000,
        "classic protocol: a member silent this long is expired and its partitions move",
        type=positive_int,
    )
    env_flag(
        parser,
        "--static-membership",
        "SENTINEL_STATIC_MEMBERSHIP",
        False,
        "group.instance.id = scorer id: a restart within the session timeout keeps the "
        "partitions without a rebalance, but a dead instance's partitions wait the full "
        "session timeout (needs a stable --scorer-id)",
        type=_boolean,
    )
    env_flag(
        parser,
        "--health-stall-s",
        "SENTINEL_HEALTH_STALL_S",
        30.0,
        "/healthz turns 503 after this long with lag (or unacked records, or no broker) but "
        "no decision, or with the scoring loop stuck",
        type=positive_float,
    )
    env_flag(
        parser,
        "--output-format",
        "SENTINEL_OUTPUT_FORMAT",
        "single-object",
        "framing of decisions and drift snapshots: single-object (Avro's, self-describing), or "
        "confluent (00 + schema id; the schemas are registered at start under <topic>-value "
        "with BACKWARD compatibility; needs --schema-registry-url)",
        choices=("single-object", "confluent"),
    )
    env_flag(
        parser,
        "--metrics-port",
        "SENTINEL_METRICS_PORT",
        9464,
        "Prometheus /metrics and /healthz port (worker k uses port+k; 0 disables)",
        type=int,
    )


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _run(args: argparse.Namespace) -> int:
    # Validate everything once, in the parent, so a bad flag fails before any process starts.
    base_id = args.scorer_id or f"{socket.gethostname()}-{os.getpid()}"
    build_config(args, base_id)
    if args.workers == 1:
        return serve(args, base_id, args.metrics_port)
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(
            target=_worker_main,
            args=(args, f"{base_id}-w{k}", args.metrics_port + k if args.metrics_port else 0),
            name=f"scorer-w{k}",
        )
        for k in range(args.workers)
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.join()
    failed = [w.name for w in workers if w.exitcode != 0]
    if failed:
        print(f"sentinel: error: worker(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _worker_main(args: argparse.Namespace, scorer_id: str, metrics_port: int) -> None:
    logging.basicConfig(level=os.environ.get("SENTINEL_LOG_LEVEL", "INFO"))
    try:
        sys.exit(serve(args, scorer_id, metrics_port))
    except Exception as exc:
        print(f"sentinel: error: [{scorer_id}] {exc}", file=sys.stderr)
        sys.exit(1)


def build_config(args: argparse.Namespace, scorer_id: str) -> Any:
    from schemas.event_time import EventTimeWindow
    from streams.drift.monitor import DriftConfig
    from streams.scoring.dlq import DlqLimit
    from streams.scoring.group import GroupSettings
    from streams.scoring.loop import ScorerConfig

    drift = DriftConfig(interval_s=args.drift_interval_s) if args.drift_interval_s > 0 else None
    return ScorerConfig(
        kafka=kafka_settings(args),
        topics=topic_names(args),
        scorer_id=scorer_id,
        group_id=args.group_id,
        max_batch=args.max_batch,
        max_wait_s=args.max_wait_ms / 1000.0,
        cache_capacity=args.cache_capacity,
        cache_ttl_s=args.cache_ttl_s,
        max_message_bytes=args.max_message_bytes,
        event_time_window=EventTimeWindow(
            max_age_ms=round(args.max_event_age_s * 1000),
            max_ahead_ms=round(args.max_event_ahead_s * 1000),
        ),
        dlq_limit=DlqLimit(max_share=args.dlq_max_share, window_messages=args.dlq_window),
        drift=drift,
        group=GroupSettings(
            protocol=args.group_protocol,
            session_timeout_ms=args.session_timeout_ms,
            heartbeat_interval_ms=max(100, args.session_timeout_ms // 4),
            instance_id=scorer_id if args.static_membership else None,
        ),
        shutdown_timeout_s=args.shutdown_timeout_s,
        processing_guarantee=args.processing_guarantee,
        schema_registry=registry_settings(args),
        output_format=args.output_format,
    )


def serve(args: argparse.Namespace, scorer_id: str, metrics_port: int) -> int:
    """Run one scorer in this process until a signal; returns the exit code."""
    from prometheus_client import CollectorRegistry

    from streams.control.plane import ControlPlane
    from streams.health import HealthCheck, HealthConfig, Progress, serve_http
    from streams.metrics import ScorerMetrics
    from streams.scoring.loop import Scorer

    config = build_config(args, scorer_id)
    health_config = HealthConfig(stall_s=args.health_stall_s)
    registry = CollectorRegistry()
    metrics = ScorerMetrics(registry)
    progress = Progress()
    control_holder: list[ControlPlane] = []
    health = HealthCheck(
        health_config, progress, lambda: not control_holder or control_holder[0].alive
    )
    if metrics_port:
        serve_http(metrics_port, registry, health)
    keys, sign_with = control_keys()
    holder: list[Scorer] = []
    control = ControlPlane(
        config.kafka,
        config.topics,
        scorer_id,
        Path(args.models_dir),
        metrics,
        keys=keys,
        sign_with=sign_with,
        stats=lambda: holder[0].stats() if holder else {},
    )
    # First the scorer: with confluent output it registers its schemas, and a refusal must stop
    # the start before the control log is replayed.
    scorer = Scorer(config, control, metrics, progress)
    holder.append(scorer)
    state = control.start()
    control_holder.append(control)
    log.info("%s serving %s", scorer_id, state.summary())
    signal.signal(signal.SIGTERM, lambda *_: scorer.stop())
    signal.signal(signal.SIGINT, lambda *_: scorer.stop())
    print(
        f"{scorer_id}: scoring {config.topics.transactions} -> {config.topics.decisions}"
        f" (metrics :{metrics_port})",
        flush=True,
    )
    try:
        report = scorer.run()
    finally:
        control_closed = _close_control(control, CONTROL_CLOSE_S)
    if report.clean:
        print(f"{scorer_id}: stopped cleanly ({report.describe()})", flush=True)
        code = 0
    else:
        print(f"sentinel: error: [{scorer_id}] {report.describe()}", file=sys.stderr, flush=True)
        code = EXIT_UNCOMMITTED
    if not (report.close_finished and control_closed):
        # A close is still blocked inside librdkafka on a daemon thread; interpreter
        # shutdown would wait on it (destructors), so leave now: the exit code is the report.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


EXIT_UNCOMMITTED = 3
CONTROL_CLOSE_S = 5.0


def _close_control(control: Any, timeout_s: float) -> bool:
    """``control.close()`` (publishes ``stopped``, flushes) bounded like the scorer's shutdown."""
    import threading

    closer = threading.Thread(target=control.close, name="control-close", daemon=True)
    closer.start()
    closer.join(timeout_s)
    if closer.is_alive():
        log.warning("control plane close did not finish within %.0f s: abandoned", timeout_s)
        return False
    return True
