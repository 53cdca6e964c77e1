"""``sentinel demo``: the whole product on one machine, end to end, in a few minutes.

Local broker (unless KAFKA_BOOTSTRAP_SERVERS) -> topics -> a model trained if models/current is
missing -> a real ``sentinel score`` process -> a replay of an unseen synthetic stream with a few
malformed messages -> a summary -> an A/B sequence (setup v2, split 25, promote) -> a drift phase
-> clean stop. The operator console runs beside the scorer for the whole demo and prints its URL
(``--keep-running`` keeps everything up at the end for a look). Every step is a real component
(CLI subprocesses, the real broker); nothing is simulated. Training libraries are imported only
inside this command, never by the scorer.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from streams.cli._args import external_bootstrap, topic_flag
from streams.config import TOPIC_ROLES, KafkaSettings, TopicNames
from streams.tools.topics import TopicAdmin

SENTINEL = [sys.executable, "-m", "streams.cli"]


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="run the whole product end to end on this machine and print what happened",
        description=__doc__,
    )
    parser.add_argument("--models-dir", default="models", help="model bundles directory")
    parser.add_argument("--rows", type=int, default=100_000, help="transactions in the main replay")
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after the last step, keep the broker, the scorer and the console up until Ctrl-C",
    )
    parser.set_defaults(run=_run)


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _sentinel(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*SENTINEL, *args], text=True, capture_output=True, check=False)
    sys.stdout.write(result.stdout)
    if check and result.returncode != 0:
        from schemas.errors import SentinelError

        raise SentinelError(f"'sentinel {' '.join(args)}' failed: {result.stderr.strip()}")
    return result


@contextmanager
def _kafka() -> Iterator[tuple[str, str]]:
    """Yield (bootstrap, topic prefix): a fresh local broker, or the user's cluster + a prefix."""
    from ops.kafka_broker import provide_bootstrap

    external = external_bootstrap()
    if external:
        print(f"using KAFKA_BOOTSTRAP_SERVERS={external}; demo topics get a unique prefix")
    began = time.monotonic()
    with provide_bootstrap(external, Path(".sentinel/demo-broker"), fresh=True) as bootstrap:
        if not external:
            print(f"Kafka broker at {bootstrap} (ready in {time.monotonic() - began:.1f} s)")
        yield bootstrap, f"demo-{uuid.uuid4().hex[:6]}-" if external else ""
    if not external:
        print("broker stopped")


def _run(args: argparse.Namespace) -> int:
    models_dir = Path(args.models_dir)
    _step("1/7 Kafka")
    with _kafka() as (bootstrap, prefix):
        topics = TopicNames().prefixed(prefix)
        kafka = ["--bootstrap-servers", bootstrap, *_topic_flags(topics)]
        _sentinel("topics", "create", *kafka)
        _step("2/7 data and model")
        replay_csv = _prepare_data(args.rows)
        if not (models_dir / "current").exists():
            print("no models/current: training one on the default data (progress below)")
            subprocess.run(
                [*SENTINEL, "train", "--activate", "--models-dir", str(models_dir)], check=True
            )
        print(f"serving model {(models_dir / 'current').read_text().strip()}")
        with (
            _scorer(kafka, models_dir) as metrics_port,
            _console(kafka, models_dir, metrics_port, replay_csv),
        ):
            _step(f"3/7 replay {args.rows:,} unseen transactions (0.1% malformed, 2% redelivered)")
            settings = KafkaSettings(bootstrap)
            sent, decisions = _collect(
                settings,
                topics.decisions,
                lambda: _replay(
                    settings,
                    topics,
                    replay_csv,
                    count=args.rows,
                    bad_fraction=0.001,
                    duplicate_fraction=0.02,
                ),
            )
            _step("4/7 latency at a steady 2,000 tx/s")
            # A fresh broker answers the first second or two of small, frequent produce requests
            # slowly, so a paced stream's first transactions wait in the replayer (LogAppendTime
            # runs: event -> append p99 110-390 ms, append -> scored 11-47 ms): warm that first.
            print("warm-up: 2 s at 2,000 tx/s, not measured")
            _collect(
                settings,
                topics.decisions,
                lambda: _replay(settings, topics, replay_csv, count=4_000, rate=2_000, seed=4),
            )
            _, paced = _collect(
                settings,
                topics.decisions,
                lambda: _replay(settings, topics, replay_csv, count=10_000, rate=2_000, seed=5),
            )
            _summary(sent, decisions, paced, settings, topics, metrics_port)
            _step("5/7 A/B test: setup v2, split 25%, promote")
            _ab_sequence(kafka, models_dir, settings, topics, replay_csv)
            _step("6/7 drift: V14 shifted by +1.5 sd")
            _replay(
                settings,
                topics,
                replay_csv,
                count=40_000,
                seed=9,
                drift="V14=+1.5sd",
                models_dir=models_dir,
            )
            time.sleep(4)  # one drift interval of the demo scorer
            _sentinel(
                "drift", "report", *kafka[:2], f"--topic={topics.drift}", "--out=drift_report.png"
            )
            if args.keep_running:
                _wait_for_interrupt()
            _step("7/7 stopping")
    print(
        "\ndemo finished: the model bundle's report is in "
        f"{models_dir / (models_dir / 'current').read_text().strip() / 'report.md'}"
    )
    return 0


def _topic_flags(topics: TopicNames) -> list[str]:
    return [f"{topic_flag(role)}={topics.name(role)}" for role in TOPIC_ROLES]


def _prepare_data(rows: int) -> Path:
    """An unseen replay stream: the user's real data if present, else a fresh synthetic draw."""
    real = Path("data/creditcard.csv")
    if real.exists():
        print(f"replaying the real data set {real}")
        return real
    path = Path("data/replay.csv")
    if not path.exists():
        from training.synth import generate

        path.parent.mkdir(parents=True, exist_ok=True)
        generate(rows=max(rows, 50_000), seed=2026).to_csv(path, index=False)
        print(f"generated an unseen synthetic stream {path} (seed 2026)")
    return path


@contextmanager
def _scorer(kafka: list[str], models_dir: Path) -> Iterator[int]:
    """A real ``sentinel score`` process, stopped with SIGTERM (finish, flush, commit)."""
    from ops.kafka_broker import free_ports

    (port,) = free_ports(1)
    log_path = Path(".sentinel/demo-scorer.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        *SENTINEL,
        "score",
        *kafka,
        f"--models-dir={models_dir}",
        "--scorer-id=demo-scorer",
        f"--metrics-port={port}",
        "--drift-interval-s=3",
        "--group-id=sentinel-demo",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while b"scoring" not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                from schemas.errors import SentinelError

                raise SentinelError(f"the scorer did not start: {log_path.read_text()[-800:]}")
            time.sleep(0.1)
        print(
            f"scorer running (pid {proc.pid}, metrics http://127.0.0.1:{port}/metrics, "
            f"log {log_path})"
        )
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        print(f"scorer exited with code {code} after SIGTERM (finish batch, flush, commit)")


@contextmanager
def _console(kafka: list[str], models_dir: Path, metrics_port: int, csv: Path) -> Iterator[str]:
    """A real ``sentinel console`` process on a free loopback port, watching the demo."""
    import re

    log_path = Path(".sentinel/demo-console.log")
    cmd = [
        *SENTINEL, "console", *kafka, f"--models-dir={models_dir}", "--port=0",
        f"--scrape=http://127.0.0.1:{metrics_port}/metrics", f"--replay-csv={csv}",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(rb"sentinel console at (\S+)", log_path.read_bytes())):
            if proc.poll() is not None or time.monotonic() > deadline:
                from schemas.errors import SentinelError

                raise SentinelError(f"the console did not start: {log_path.read_text()[-800:]}")
            time.sleep(0.1)
        url = found.group(1).decode()
        print(f"operator console at {url} (pid {proc.pid}, log {log_path})")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM (also when started in the background, where SIGINT may be
    ignored), then let the caller stop everything cleanly."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print("\n--keep-running: broker, scorer and console stay up; Ctrl-C (or SIGTERM) stops them",
          flush=True)  # fmt: skip
    while not stop.wait(1.0):
        pass
    print("stopping")


def _replay(
    settings: KafkaSettings,
    topics: TopicNames,
    csv: Path,
    drift: str | None = None,
    models_dir: Path | None = None,
    **options: Any,
) -> Any:
    from streams.cli.produce import drift_shift
    from streams.tools.replayer import ReplayOptions, load_csv, replay

    features, labels = load_csv(csv)
    shift = drift_shift(drift, models_dir) if drift and models_dir else None
    result = replay(
        settings,
        topics.transactions,
        features,
        labels,
        ReplayOptions(shift=shift, **options),
        progress=True,
    )
    print(
        f"sent {result.sent:,} ({result.bad:,} malformed, {result.duplicates:,} redelivered) "
        f"in {result.seconds:.1f} s"
    )
    return result


class _DecisionReader(threading.Thread):
    """Reads decisions from given offsets as they arrive, stamping when each was consumed."""

    def __init__(self, settings: KafkaSettings, topic: str, start: dict[int, int]) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Consumer, TopicPartition

        self.seen: list[tuple[dict[str, Any], float]] = []
        self.expected = 0
        self._consumer = Consumer(
            settings.client_config({"group.id": "demo-reader", "fetch.wait.max.ms": 5})
        )
        self._consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])

    def run(self) -> None:
        from schemas.decision_codec import decode_decision

        while self.expected == 0 or len(self.seen) < self.expected:
            batch = self._consumer.consume(1000, timeout=0.002)
            arrived = time.time()  # before decoding: ~10 us a record, up to 1,000 in a batch
            for msg in batch:
                if msg.error() is None:
                    self.seen.append((decode_decision(msg.value() or b""), arrived))
        self._consumer.close()

    def wait_for(
        self, expected: int, timeout_s: float = 120.0
    ) -> list[tuple[dict[str, Any], float]]:
        self.expected = expected
        self.join(timeout_s)
        return self.seen


def _collect(
    settings: KafkaSettings, topic: str, run: Callable[[], Any]
) -> tuple[Any, list[tuple[dict[str, Any], float]]]:
    """Run a replay while reading the decisions it causes: (replay result, decisions)."""
    reader = _DecisionReader(settings, topic, TopicAdmin(settings).end_offsets(topic))
    reader.start()
    sent = run()
    return sent, reader.wait_for(sent.sent - sent.bad)


def _summary(
    sent: Any,
    decisions: list[tuple[dict[str, Any], float]],
    paced: list[tuple[dict[str, Any], float]],
    settings: KafkaSettings,
    topics: TopicNames,
    metrics_port: int,
) -> None:
    rows = [d for d, _ in decisions]
    scored_at = np.array([d["scored_at"] for d in rows], dtype=np.float64)
    if isinstance(rows[0]["scored_at"], float) or rows[0]["scored_at"] > 1e14:
        scored_at = scored_at / 1e6  # timestamp-micros
    span = max(float(scored_at.max() - scored_at.min()), 1e-9)
    outcomes = Counter(d["decision"] for d in rows)
    hits = sum(d["cache_hit"] for d in rows)
    latency = np.array([seen * 1000 - d["event_time"] for d, seen in paced], dtype=np.float64)
    p50, p95, p99 = np.percentile(latency, [50, 95, 99])
    tp = sum(
        1
        for d in rows
        if d["decision"] == "BLOCK" and sent.labels.get(d["transaction_id"].encode()) == 1
    )
    blocked = sum(1 for d in rows if d["decision"] == "BLOCK")
    frauds = sum(1 for d in rows if sent.labels.get(d["transaction_id"].encode()) == 1)
    dlq = sum(TopicAdmin(settings).end_offsets(topics.dlq).values())
    print("\n   Summary")
    print(f"   decisions           {len(rows):,} for {sent.sent:,} sent ({dlq} in the DLQ)")
    print(f"   throughput          {len(rows) / span:,.0f} decisions/s (burst replay)")
    print(
        f"   latency @2k tx/s    p50 {p50:.1f} ms  p95 {p95:.1f} ms  p99 {p99:.1f} ms "
        "(event time -> decision consumed)"
    )
    print(
        "                       on a broker started seconds ago, this varies run to run;"
        " bench/RESULTS.md has the measured latency"
    )
    print(
        "   outcomes            "
        + "  ".join(f"{k} {outcomes[k]:,}" for k in ("ALLOW", "REVIEW", "BLOCK"))
    )
    print(f"   cache hit rate      {hits / len(rows):.1%}")
    print(f"   BLOCK precision     {tp / max(blocked, 1):.1%} ({tp} of {blocked})")
    print(f"   BLOCK recall        {tp / max(frauds, 1):.1%} ({tp} of {frauds} frauds)")
    print(f"   metrics             http://127.0.0.1:{metrics_port}/metrics")


def _ab_sequence(
    kafka: list[str], models_dir: Path, settings: KafkaSettings, topics: TopicNames, csv: Path
) -> None:
    active = (models_dir / "current").read_text().strip()
    candidate = f"v{int(active.lstrip('v')) + 1}" if active.lstrip("v").isdigit() else "v2"
    if not (models_dir / candidate).exists():
        print(f"training candidate {candidate} on a fresh 80,000-row synthetic draw (seed 8)")
        subprocess.run(
            [
                *SENTINEL,
                "train",
                "--rows=80000",
                "--seed=8",
                f"--version={candidate}",
                f"--models-dir={models_dir}",
            ],
            check=True,
        )
    flags = kafka[:2] + [f for f in kafka[2:] if f.startswith("--topic-control")]
    flags.append(f"--models-dir={models_dir}")  # model commands resolve the bundle there
    for command in (["ab-setup", candidate], ["ab-split", "25"]):
        _sentinel("control", *command, *flags)
    _, during = _collect(
        settings, topics.decisions, lambda: _replay(settings, topics, csv, count=20_000, seed=7)
    )
    _print_variants("during the 25% split", [d for d, _ in during])
    _sentinel("control", "promote", *flags)
    _, after = _collect(
        settings, topics.decisions, lambda: _replay(settings, topics, csv, count=5_000, seed=8)
    )
    _print_variants("after promote", [d for d, _ in after])


def _print_variants(when: str, decisions: list[dict[str, Any]]) -> None:
    """Per model/variant: decisions, cards, block rate. The split is by card (sticky), so with
    a skewed card distribution the share of *transactions* differs from the share of cards."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for d in decisions:
        by_variant.setdefault(f"{d['model_version']}/{d['variant']}", []).append(d)
    cards = {d["card_id"] for d in decisions}
    print(f"   {when}: {len(decisions):,} decisions, {len(cards):,} cards")
    for key, rows in sorted(by_variant.items()):
        variant_cards = {d["card_id"] for d in rows}
        blocked = sum(d["decision"] == "BLOCK" for d in rows)
        print(
            f"     {key:<6} {len(rows):>7,} decisions ({len(rows) / len(decisions):.0%})  "
            f"{len(variant_cards):>6,} cards ({len(variant_cards) / len(cards):.0%})  "
            f"block rate {blocked / len(rows):.2%}"
        )
