"""``sentinel drift report``: the fleet's drift, merged exactly from the scorers' snapshots.

Reads the ``drift`` topic from the beginning to its high watermark without joining a consumer
group (partitions are assigned, nothing is committed), keeps the latest snapshot of every scorer
instance for one model version, merges them with
:func:`streams.drift.monitor.merge_snapshots`, prints a table sorted by PSI and writes a bar
chart of PSI per feature.
"""

from __future__ import annotations

import argparse
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.drift_codec import DriftSnapshot, decode_snapshot
from schemas.errors import BrokerError, ConfigError, SchemaError
from streams.cli._args import add_kafka_flags, env_flag, kafka_settings, positive_float, topic_env
from streams.config import KafkaSettings, TopicNames
from streams.drift.monitor import merge_snapshots


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "drift",
        help="report feature and prediction drift across the scorer fleet",
        description="Inspect the drift snapshots the scorers publish to the drift topic.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    report = actions.add_parser(
        "report",
        help="merge every instance's latest snapshot; print a PSI table and write a PNG chart",
        description=(
            "Read the drift topic from the beginning (no consumer group, nothing committed), keep "
            "the latest snapshot of every scorer instance for one model version, merge them "
            "exactly, print a table sorted by PSI and write a bar chart of PSI per feature."
        ),
    )
    add_kafka_flags(report)
    env_flag(report, "--topic", topic_env("drift"), TopicNames().drift, "the drift topic")
    report.add_argument(
        "--out",
        default="drift_report.png",
        help="PNG bar chart of PSI per feature; '' skips the chart [default drift_report.png]",
    )
    report.add_argument(
        "--model-version",
        help="model version to report [default: the one with the most recent snapshot]",
    )
    report.add_argument(
        "--all-windows",
        action="store_true",
        help="merge every window on the topic (the model version's lifetime), not only each "
        "instance's latest",
    )
    report.add_argument(
        "--timeout",
        type=positive_float,
        default=30.0,
        help="give up reading the topic after this many seconds [default 30]",
    )
    report.set_defaults(run=_report)


def _report(args: argparse.Namespace) -> int:
    snapshots, undecodable = read_snapshots(kafka_settings(args), args.topic, args.timeout)
    if undecodable:
        print(f"warning: skipped {undecodable} records on {args.topic!r} that are not snapshots")
    version, chosen = select_snapshots(snapshots, args.model_version, args.all_windows)
    merged = merge_snapshots(chosen)
    others = sorted({s.model_version for s in snapshots} - {version})
    print(format_report(merged, instances=len({s.scorer_id for s in chosen}), windows=len(chosen)))
    if others:
        print(f"other model versions on the topic: {', '.join(others)} (see --model-version)")
    if args.out and merged.count > 0:
        write_chart(merged, Path(args.out))
        print(f"PSI chart: {Path(args.out).resolve()}")
    return 0


def read_snapshots(
    settings: KafkaSettings, topic: str, timeout_s: float
) -> tuple[list[DriftSnapshot], int]:
    """Every snapshot on ``topic`` up to the high watermarks at call time, and how many records
    were not snapshots. Blocks up to ``timeout_s``; BrokerError if Kafka cannot be read, ConfigError
    if the topic does not exist."""
    from confluent_kafka import Consumer, KafkaException, Message

    from streams.log_reader import read_to_end

    # librdkafka insists on a group.id; with assign() and no commits, the group is never joined.
    config = settings.client_config(
        group_id=f"sentinel-drift-report-{uuid.uuid4().hex[:12]}",
        enable_auto_commit=False,
        enable_auto_offset_store=False,
    )
    config["log_level"] = 0  # connection failures surface below as one BrokerError line
    consumer = Consumer(config)
    snapshots: list[DriftSnapshot] = []
    undecodable = 0

    def keep(message: Message) -> None:
        nonlocal undecodable
        try:
            snapshots.append(decode_snapshot(message.value() or b""))
        except SchemaError:
            undecodable += 1

    try:
        # Listing all topics (not just ours) so a broker with auto-create does not create it.
        metadata = consumer.list_topics(timeout=min(timeout_s, 15.0))
        if topic not in metadata.topics:
            raise ConfigError(f"topic {topic!r} does not exist on {settings.bootstrap_servers}")
        read_to_end(consumer, topic, keep, idle_timeout_s=timeout_s)
    except KafkaException as exc:
        raise BrokerError(
            f"cannot read {topic!r} from {settings.bootstrap_servers}: {exc}"
        ) from exc
    finally:
        consumer.close()
    return snapshots, undecodable


def select_snapshots(
    snapshots: Sequence[DriftSnapshot], model_version: str | None, all_windows: bool
) -> tuple[str, list[DriftSnapshot]]:
    """The model version to report and its snapshots: each instance's latest window (or every
    window with ``all_windows``). ConfigError if there is nothing to report."""
    if not snapshots:
        raise ConfigError("no drift snapshots on the topic yet (is a scorer running?)")
    if model_version is None:
        model_version = max(snapshots, key=lambda s: s.window_end_ms).model_version
    chosen = [s for s in snapshots if s.model_version == model_version]
    if not chosen:
        seen = sorted({s.model_version for s in snapshots})
        raise ConfigError(f"no drift snapshots for model version {model_version!r}; seen: {seen}")
    if all_windows:
        return model_version, chosen
    latest: dict[str, DriftSnapshot] = {}
    for snap in chosen:
        if (
            snap.scorer_id not in latest
            or snap.window_end_ms > latest[snap.scorer_id].window_end_ms
        ):
            latest[snap.scorer_id] = snap
    return model_version, sorted(latest.values(), key=lambda s: s.scorer_id)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _by_psi(psi: float) -> float:
    return -math.inf if math.isnan(psi) else psi


def format_report(merged: DriftSnapshot, instances: int, windows: int) -> str:
    """The report table: one row per feature, highest PSI first, then prediction and verdict."""
    lines = [
        f"drift of model {merged.model_version}: {merged.count:,} rows from {instances} "
        f"instance(s), {windows} window(s), {_when(merged.window_start_ms)} to "
        f"{_when(merged.window_end_ms)}",
        f"flag: PSI >= {merged.psi_threshold:g} or |z| >= {merged.z_threshold:g} sd "
        f"(and t >= {merged.t_threshold:g}), with >= {merged.min_count} rows",
        "",
        f"{'feature':<8} {'PSI':>8} {'z (sd)':>8} {'mean':>11} {'base mean':>11} "
        f"{'std':>10} {'base std':>10}  drifted",
    ]
    for f in sorted(merged.features, key=lambda f: _by_psi(f.psi), reverse=True):
        lines.append(
            f"{f.name:<8} {f.psi:>8.4f} {f.z_score:>+8.3f} {f.mean:>11.4g} "
            f"{f.baseline_mean:>11.4g} {f.std:>10.4g} {f.baseline_std:>10.4g}  "
            f"{'YES' if f.drifted else '-'}"
        )
    p = merged.prediction
    lines += [
        "",
        f"prediction: mean score {p.mean:.4g} (baseline {p.baseline_mean:.4g}), "
        f"{p.share_above_threshold:.2%} at or above the block threshold {p.block_threshold:g}, "
        f"PSI {p.psi:.4f}{'  DRIFTED' if p.drifted else ''}",
    ]
    if merged.count < merged.min_count:
        verdict = f"too few rows to judge (< {merged.min_count})"
    elif merged.drifted:
        names = ", ".join(merged.drifted_features) or "none"
        verdict = f"DRIFTED - features: {names}; prediction: {'yes' if p.drifted else 'no'}"
    else:
        verdict = "no drift"
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


def write_chart(merged: DriftSnapshot, path: Path) -> None:
    """Bar chart of PSI per feature (and the score), drifted ones in red, threshold dashed.

    ConfigError if matplotlib is missing or the file cannot be written.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError(
            "the PSI chart needs matplotlib: pip install 'sentinel-stream[train]', "
            "or pass --out '' to skip the chart"
        ) from exc
    rows = [(f.name, f.psi, f.drifted) for f in merged.features]
    rows.append(("score", merged.prediction.psi, merged.prediction.drifted))
    rows.sort(key=lambda row: _by_psi(row[1]), reverse=True)
    figure = Figure(figsize=(12, 5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.bar(
        [name for name, _, _ in rows],
        [psi for _, psi, _ in rows],
        color=["#c0392b" if drifted else "#4a79a8" for _, _, drifted in rows],
    )
    axes.axhline(merged.psi_threshold, color="black", linestyle="--", linewidth=1)
    axes.set_ylabel("PSI vs training baseline")
    axes.set_title(
        f"Drift of model {merged.model_version}: {merged.count:,} rows, "
        f"{_when(merged.window_start_ms)} to {_when(merged.window_end_ms)} "
        f"(red: drifted; dashed: PSI {merged.psi_threshold:g})"
    )
    axes.tick_params(axis="x", labelrotation=60)
    try:
        figure.savefig(path, dpi=110)
    except OSError as exc:
        raise ConfigError(f"cannot write the PSI chart to {path}: {exc.strerror or exc}") from exc
