"""``make bench``: every benchmark in one run, against a real broker; writes bench/RESULTS.md.

Scenarios (each on fresh topics/groups, the same broker, the same model):
  drain      pre-fill N transactions, start the scorer, time first->last decision (broker
             timestamps) and its CPU per decision: all-distinct (cache misses) and 99%
             redeliveries (cache hits), 1 and 2 workers; drift tracking off, exactly-once and
             an A/B split 50%, each in adjacent pairs with the default scorer; bench/relay.py
             on the same input: Kafka's own floor
  latency    offered rates 1k, 5k, 10k tx/s and 50% of the measured maximum: event time -> decision
             consumed by a reader in another process, p50/p95/p99/max (at-least-once and
             exactly-once, read_committed); beside the same rates
             through bench/relay.py (consume -> produce raw bytes -> commit): Kafka's floor
  naive      the per-message loop of bench/naive.py on the same data: the ratio
  profile    µs per message per stage, from the scorer's own Prometheus counters, beside the
             served model's ONNX call alone and the Kafka client's calls alone (its floor)
  control    a control command's latency from publish to acked by every instance
  cost       scorer CPU per message by --max-batch (1 .. 2,000) and cache-hit share (bench/scale.py)
  long       a 10M-transaction drain: throughput, CPU and RSS per million (bench/scale.py)
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import platform
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

from bench import scale
from bench.harness import (
    SENTINEL,
    SETTLE_IDLE_SHARE,
    SETTLE_QUIET_S,
    CpuSampler,
    JobRunner,
    cache_hit_rate,
    decision_window,
    distinct_source,
    kept_section,
    log,
    make_topics,
    read_latencies,
    relay,
    scorer,
    settle,
    stage_profile,
    wait_for_commit,
)
from bench.naive import run_naive
from ops.kafka_broker import KAFKA_VERSION, provide_bootstrap
from streams.cli._args import external_bootstrap
from streams.config import KafkaSettings
from streams.control.client import model_args
from streams.scoring import _messages
from streams.tools.replayer import ReplayOptions, replay
from streams.tools.topics import TopicAdmin

RESULTS = Path(__file__).with_name("RESULTS.md")
READING = "## Reading these figures"
EXACTLY_ONCE = "--processing-guarantee=exactly-once"
RELAY = "relay (Kafka floor)"
LATENCY_ROUNDS = 5  # interleaved relay/scorer rounds at 10k tx/s
DRAIN_ROUNDS = 3  # interleaved relay/scorer 1-worker drains of the all-distinct topic
PAIR_ROUNDS = 2  # adjacent default / variant 1-worker drains (default, variant, variant, default)
PAIRED_WITH = "all distinct, beside "  # the default scorer's drains paired with a variant


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000, help="pre-filled per workload")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--naive-messages", type=int, default=20_000)
    parser.add_argument(
        "--cost-messages", type=int, default=200_000, help="per cache-hit share (0 skips)"
    )
    parser.add_argument(
        "--long-messages", type=int, default=10_000_000, help="the long drain (0 skips)"
    )
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    models_dir = Path(args.models_dir)
    if not (models_dir / "current").exists():
        log("no models/current: training the default model first")
        subprocess.run([*SENTINEL, "train", "--activate", f"--models-dir={models_dir}"], check=True)
    # Every drain, the long one included, cycles this source: 2M distinct rows keep a row from
    # coming back before 2M others were decided (the cache holds ~10k).
    features, labels = distinct_source(max(args.messages, 2_000_000))
    results: dict[str, Any] = {
        "messages": args.messages,
        "started": time.strftime("%Y-%m-%d %H:%M"),
    }
    with provide_bootstrap(external_bootstrap()) as bootstrap:
        base = make_topics(bootstrap)
        distinct = base.transactions
        hot = make_topics(bootstrap).transactions
        log(f"pre-filling {args.messages:,} distinct + {args.messages:,} redelivered transactions")
        replay(
            KafkaSettings(bootstrap),
            distinct,
            features,
            labels,
            ReplayOptions(count=args.messages),
            True,
        )
        replay(
            KafkaSettings(bootstrap),
            hot,
            features,
            labels,
            ReplayOptions(count=args.messages, duplicate_fraction=0.99, seed=2),
            True,
        )
        # Not recorded: right after the pre-fill the broker is still flushing, and the first
        # drain of a run measured ~25% below the later 1-worker drains.
        _drain(bootstrap, distinct, models_dir, "warm-up", args.messages, 1)
        # The headline drain and its floor in alternating order (relay, scorer, scorer, relay,
        # ...): one drain's figure moved 30-50% with the machine's state within a run.
        drains: list[dict[str, Any]] = []
        results["drain"] = drains
        for round_ in range(DRAIN_ROUNDS):
            order = (RELAY, "all distinct")
            for workload in order if round_ % 2 == 0 else order[::-1]:
                drains.append(_drain(bootstrap, distinct, models_dir, workload, args.messages, 1))
            if round_ == 0:
                results["client_us"] = _client_alone(
                    bootstrap, distinct, min(args.messages, 200_000)
                )
        drains.append(_drain(bootstrap, hot, models_dir, "99% cache hits", args.messages, 1))
        for name, topic in (("all distinct", distinct), ("99% cache hits", hot)):
            drains.append(_drain(bootstrap, topic, models_dir, name, args.messages, 2))
        # Each variant's cost from adjacent pairs with the default scorer, in alternating order
        # (default, variant, variant, default): drains of the same code measured up to 50% apart
        # depending on where in the run they fell, so a variant is compared with its neighbours.
        candidate = _candidate(models_dir)
        variants: list[tuple[str, list[str], tuple[str, int] | None]] = [
            ("drift off", ["--drift-interval-s=0"], None),
            ("exactly-once", [EXACTLY_ONCE], None),
        ]
        if candidate:
            variants.append(("A/B split 50%", [], (candidate, 50)))
        for variant, flags, ab in variants:
            pair = [(f"{PAIRED_WITH}{variant}", [], None), (f"all distinct, {variant}", flags, ab)]
            for round_ in range(PAIR_ROUNDS):
                for workload, extra, split in pair if round_ % 2 == 0 else pair[::-1]:
                    drains.append(
                        _drain(
                            bootstrap,
                            distinct,
                            models_dir,
                            workload,
                            args.messages,
                            1,
                            *extra,
                            ab=split,
                        )
                    )
        best = max(d["tx_per_s"] for d in drains if d["workload"] == "all distinct")
        results["onnx_us"] = _onnx_alone(models_dir, features)
        results["settled_s"] = settle()
        # The relay (Kafka's own two hops, same client settings) beside the scorer, interleaved.
        results["latency"] = [
            _latency(bootstrap, models_dir, features, labels, rate, path)
            for rate in (1_000, 5_000, 10_000)
            for path in ("relay", "scorer", "scorer, exactly-once")
        ]
        # One 10 s run's p99 at 10k is its 1,000 slowest records: a single stall of the shared
        # machine moves it by tens of ms (the relay's too). The goals take the median of rounds.
        results["latency"] += [
            _latency(bootstrap, models_dir, features, labels, 10_000, path)
            for _ in range(LATENCY_ROUNDS - 1)
            for path in ("relay", "scorer")
        ]
        results["latency"].append(
            _latency(bootstrap, models_dir, features, labels, int(best * 0.5), "scorer")
        )
        log(f"naive baseline on {args.naive_messages:,} messages")
        naive_rate = run_naive(
            bootstrap, distinct, make_topics(bootstrap).decisions, models_dir, args.naive_messages
        )
        results["naive"] = {"tx_per_s": naive_rate, "ratio": best / naive_rate}
        if candidate:
            results["control"] = _control_latency(bootstrap, models_dir, candidate)
        results["cost"] = (
            scale.cost_table(bootstrap, models_dir, features, labels, args.cost_messages)
            if args.cost_messages
            else []
        )
        results["long"] = (
            scale.long_drain(bootstrap, models_dir, features, labels, args.long_messages)
            if args.long_messages >= 1_000_000
            else []
        )
    _write(results, Path(args.out))
    print(Path(args.out).read_text())
    return 0


def _candidate(models_dir: Path) -> str | None:
    active = (models_dir / "current").read_text().strip()
    others = sorted(p.name for p in models_dir.glob("v*") if p.is_dir() and p.name != active)
    if others:
        return others[-1]
    log("training a candidate model for the A/B scenarios")
    out = subprocess.run(
        [*SENTINEL, "train", "--rows=80000", "--seed=8", f"--models-dir={models_dir}"], check=False
    )
    others = sorted(p.name for p in models_dir.glob("v*") if p.is_dir() and p.name != active)
    return others[-1] if out.returncode == 0 and others else None


def _publish(bootstrap: str, topic: str, command: str, **arguments: str | int) -> str:
    from streams.control.commands import new_command

    cmd = new_command(command, arguments, issuer="bench")
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, cmd.encode())
    producer.flush(10)
    return cmd.command_id


def _drain(
    bootstrap: str,
    source: str,
    models_dir: Path,
    workload: str,
    total: int,
    workers: int,
    *extra: str,
    ab: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Drain ``total`` pre-filled transactions with the scorer, or with bench/relay.py when
    ``workload`` is RELAY (Kafka's floor); with 1 worker, also the process's CPU per decision."""
    topics = replace(make_topics(bootstrap), transactions=source)
    if ab is not None:
        setup = model_args("ab_setup", models_dir, ab[0])
        _publish(bootstrap, topics.control, "ab_setup", **setup)
        _publish(bootstrap, topics.control, "ab_split", percent=ab[1])
    group = f"drain-{uuid.uuid4().hex[:6]}"
    log(f"drain: {workload}, {workers} worker(s)")
    profile: dict[str, float] = {}
    hit_rate = 0.0
    if workload == RELAY:
        with relay(bootstrap, topics, group) as proc:
            cpu = CpuSampler(proc.pid)
            wait_until_decided(bootstrap, topics.decisions, total, timeout_s=900)
            cpu.stop()
    else:
        with scorer(bootstrap, topics, models_dir, group, *extra, workers=workers) as job:
            # With more workers this pid is only their parent: no CPU figure then.
            cpu = CpuSampler(job.proc.pid)
            wait_for_commit(bootstrap, group, source, total, timeout_s=900)
            cpu.stop()
            profile = stage_profile(job.metrics()) if workers == 1 else {}
            hit_rate = cache_hit_rate(job)
    count, first, last = decision_window(bootstrap, topics.decisions)
    seconds = last - first
    row = {
        "workload": workload,
        "workers": workers,
        "decisions": count,
        "seconds": seconds,
        "tx_per_s": count / seconds,
        "cpu_us": cpu.between(first, last) / count * 1e6 if workers == 1 else None,
        "profile_us": profile,
        "cache_hit_rate": hit_rate,
    }
    log(
        f"  {row['tx_per_s']:,.0f} tx/s ({count:,} decisions in {seconds:.1f} s, "
        f"cache hits {hit_rate:.1%})"
    )
    return row


def _onnx_alone(models_dir: Path, features: np.ndarray, rows: int = 2_000) -> float:
    """µs per row of the served model's ONNX Runtime call alone, on batches of ``rows``
    distinct rows (the scorer's settings: one thread): the score stage's floor."""
    from streams.model.loader import load_current

    model = load_current(models_dir)
    batches = [features[i : i + rows].astype(np.float32) for i in range(0, 100 * rows, rows)]
    model.predict_proba(batches[0])  # first call: allocations
    began = time.perf_counter()
    for batch in batches:
        model.predict_proba(batch)
    return (time.perf_counter() - began) / (len(batches) * rows) * 1e6


class _Acks:
    __slots__ = ("outstanding",)

    def __init__(self, outstanding: int) -> None:
        self.outstanding = outstanding

    def on_delivery(self, err: Any, msg: Any) -> None:
        self.outstanding -= 1


def _client_alone(bootstrap: str, source: str, total: int) -> dict[str, float]:
    """Main-thread CPU µs per message of the Kafka client calls the scorer makes and cannot
    avoid, in this process with the scorer's settings and batch cap: ``consume`` and reading
    the messages (the scorer's C ``read_batch``), building ``produce_batch``'s message dicts
    (its C ``produce_dicts``), ``produce_batch`` itself (a 200-byte value, a decision's size)
    and serving delivery reports with a Python callback. With the ONNX call alone, this is the
    per-stage profile's floor."""
    from streams.config import TopicNames
    from streams.scoring.loop import ScorerConfig

    topics = make_topics(bootstrap)
    config = ScorerConfig(
        kafka=KafkaSettings(bootstrap),
        topics=TopicNames(transactions=source, decisions=topics.decisions),
        scorer_id="client-floor",
        group_id=f"client-floor-{uuid.uuid4().hex[:6]}",
    )
    consumer = Consumer(config.consumer_settings())
    producer = Producer(config.producer_settings())
    consumer.subscribe([source])
    # The collector as the scorer sets it before its loop (collected, then frozen), so the
    # collections this loop's allocations set off do not walk the bench's own heap.
    gc.collect()
    gc.freeze()
    spent = dict.fromkeys(("consume", "dicts", "produce_batch", "delivery reports"), 0.0)
    value, seen = b"d" * 200, 0
    clock = time.thread_time
    while seen < total:
        began = clock()
        messages = consumer.consume(config.max_batch, timeout=1.0)
        if not messages:
            continue
        n = len(messages)
        _messages.read_batch(messages, np.empty(n, np.int32), np.empty(n, np.int64))
        consumed = clock()
        keys = [m.key() or b"" for m in messages]  # the scorer's come from the decoded values
        built = clock()
        seen += n
        batch = _messages.produce_dicts([value] * n, keys)
        produced = clock()
        producer.produce_batch(topics.decisions, batch, on_delivery=_Acks(len(batch)).on_delivery)
        served = clock()
        producer.poll(0)
        spent["consume"] += consumed - began
        spent["dicts"] += produced - built
        spent["produce_batch"] += served - produced
        spent["delivery reports"] += clock() - served
    while len(producer):
        began = clock()
        producer.poll(0.01)
        spent["delivery reports"] += clock() - began
    consumer.close()
    gc.unfreeze()
    return {stage: seconds / seen * 1e6 for stage, seconds in spent.items()}


def _reader(
    bootstrap: str, topic: str, start: dict[int, int], expected: int, timeout_s: float, out: str
) -> None:
    np.save(out, read_latencies(bootstrap, topic, start, expected, timeout_s))


def _latency(
    bootstrap: str,
    models_dir: Path,
    features: np.ndarray,
    labels: np.ndarray | None,
    rate: int,
    path: str,
    job: JobRunner | None = None,
) -> dict[str, Any]:
    """Offer ``rate`` tx/s for 10 s to a warmed-up scorer (or the relay, ``path``; or ``job``, a
    peer doing the same work, ``path`` naming it); a reader in another process stamps each
    record as it is consumed."""
    topics = make_topics(bootstrap)
    count = int(rate * 10)
    out = f"/tmp/latency-{uuid.uuid4().hex[:6]}.npy"
    settings = KafkaSettings(bootstrap)
    log(f"latency, {path}, at {rate:,} tx/s offered ({count:,} transactions, 3 s warm-up)")
    group = f"lat-{uuid.uuid4().hex[:6]}"
    service = (
        job(bootstrap, topics, group)
        if job is not None
        else relay(bootstrap, topics, group)
        if path == "relay"
        else scorer(
            bootstrap, topics, models_dir, group, *([EXACTLY_ONCE] if "exactly" in path else [])
        )
    )
    with service:
        warm = ReplayOptions(count=rate * 3, rate=rate, seed=3)
        replay(settings, topics.transactions, features, labels, warm)
        wait_until_decided(bootstrap, topics.decisions, warm.count or 0)
        start = TopicAdmin(settings).end_offsets(topics.decisions)
        reader = multiprocessing.get_context("spawn").Process(
            target=_reader, args=(bootstrap, topics.decisions, start, count, 120.0, out)
        )
        reader.start()
        time.sleep(2.0)  # the reader process is up and assigned
        options = ReplayOptions(count=count, rate=rate, seed=4)
        sent = replay(settings, topics.transactions, features, labels, options)
        reader.join(180)
    latencies = np.load(out)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    row = {
        "path": path,
        "offered": rate,
        "achieved": sent.sent / sent.seconds,
        "decisions": len(latencies),
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "max": float(latencies.max()),
    }
    log(f"  p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {row['max']:.1f} ms")
    return row


def wait_until_decided(bootstrap: str, topic: str, count: int, timeout_s: float = 120) -> None:
    admin = TopicAdmin(KafkaSettings(bootstrap))
    deadline = time.monotonic() + timeout_s
    while sum(admin.end_offsets(topic).values()) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{topic} did not reach {count} decisions")
        time.sleep(0.2)


def _control_latency(bootstrap: str, models_dir: Path, candidate: str) -> dict[str, Any]:
    """Publish -> acked by both instances, for 10 ab_split commands on a 2-instance fleet."""
    topics = make_topics(bootstrap)
    samples = []
    with scorer(bootstrap, topics, models_dir, "ctl", workers=2):
        _publish(
            bootstrap, topics.control, "ab_setup", **model_args("ab_setup", models_dir, candidate)
        )
        time.sleep(3)
        events = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e-{uuid.uuid4().hex}"})
        events.assign([TopicPartition(topics.control_events, 0, -1)])  # OFFSET_END
        time.sleep(1)
        for percent in range(5, 55, 5):
            began = time.perf_counter()
            command_id = _publish(bootstrap, topics.control, "ab_split", percent=percent)
            acked: set[str] = set()
            while len(acked) < 2 and time.perf_counter() - began < 30:
                msg = events.poll(0.05)
                if msg is None or msg.error():
                    continue
                event = json.loads(msg.value() or b"{}")
                if event.get("command_id") == command_id and event.get("type") == "ack":
                    acked.add(event["scorer_id"])
            samples.append((time.perf_counter() - began) * 1000)
        events.close()
    return {
        "commands": len(samples),
        "p50_ms": float(np.median(samples)),
        "max_ms": float(np.max(samples)),
    }


def _machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    import os

    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python "
        f"{platform.python_version()}, Apache Kafka {KAFKA_VERSION} (local KRaft broker on "
        "the same machine)"
    )


def _goals(results: dict[str, Any]) -> list[str]:
    """The issue's goals against this run's figures (computed, not hand-written)."""

    def drains_of(workload: str, workers: int = 1) -> list[float]:
        """Every drain of ``workload`` with ``workers``, in run order."""
        return [
            float(d["tx_per_s"])
            for d in results["drain"]
            if d["workload"] == workload and d["workers"] == workers
        ]

    def drain(workload: str, workers: int = 1) -> float:
        """The first drain of ``workload`` with ``workers``."""
        return drains_of(workload, workers)[0]

    def p99s(path: str, rate: int) -> list[float]:
        """Every round's p99 at ``rate`` through ``path``, in run order."""
        return [r["p99"] for r in results["latency"] if r["offered"] == rate and r["path"] == path]

    scorer_10k, relay_10k = p99s("scorer", 10_000), p99s("relay", 10_000)
    rounds = len(scorer_10k)
    p99_10k = float(np.median(scorer_10k))
    over_floor = float(np.median(np.subtract(scorer_10k, relay_10k)))
    best = max(drain("all distinct", workers) for workers in (1, 2))
    hot = max(drain("99% cache hits", workers) for workers in (1, 2))

    def paired(variant: str) -> tuple[list[float], list[float]]:
        """The variant's drains and the default scorer's drains beside them, in run order."""
        return drains_of(f"all distinct, {variant}"), drains_of(f"{PAIRED_WITH}{variant}")

    def ratio(variant: str) -> float:
        """Median drain of the variant over the median of the default drains beside it."""
        mine, beside = paired(variant)
        return float(np.median(mine)) / float(np.median(beside))

    def pairs_text(variant: str, label: str) -> str:
        mine, beside = paired(variant)
        return (
            f"medians of {len(mine)} adjacent pairs, {label}: "
            + ", ".join(f"{v:,.0f}" for v in mine)
            + " tx/s; default: "
            + ", ".join(f"{v:,.0f}" for v in beside)
        )

    drift_cost = 1 - 1 / ratio("drift off")
    eos_slowdown = 1 - ratio("exactly-once")
    (eos_10k,) = p99s("scorer, exactly-once", 10_000)
    scorer_drains, relay_drains = drains_of("all distinct"), drains_of(RELAY)
    median_drain = float(np.median(scorer_drains))
    of_relay = float(np.median(np.divide(scorer_drains, relay_drains)))
    profile = sum(_profile(results).values())
    client_us = sum(results["client_us"].values())
    floor_us = client_us + results["onnx_us"]
    rows = [
        ("drain, all distinct", ">= 50,000 tx/s", f"{best:,.0f} tx/s", best >= 50_000),
        (
            "drain, 99% cache hits",
            ">= 100,000 tx/s",
            f"{hot:,.0f} tx/s",
            hot >= 100_000,
        ),
        (
            "drain, all distinct (issue 16)",
            ">= 150,000 tx/s",
            f"{median_drain:,.0f} tx/s (1 worker, median of {len(scorer_drains)} rounds: "
            + ", ".join(f"{v:,.0f}" for v in scorer_drains)
            + "; the relay's: "
            + ", ".join(f"{v:,.0f}" for v in relay_drains)
            + f"; scorer / relay, median of the rounds: {of_relay:.0%})",
            median_drain >= 150_000,
        ),
        (
            "profile, 1 worker, all distinct",
            "<= 4 µs/message",
            f"{profile:.2f} µs; floor {floor_us:.2f} = the Kafka client's calls alone "
            f"{client_us:.2f} + ONNX alone {results['onnx_us']:.2f}",
            profile <= 4,
        ),
        (
            "p99 at 10k tx/s offered",
            "<= 20 ms",
            f"{p99_10k:.1f} ms (median of {rounds} rounds: "
            + ", ".join(f"{v:.1f}" for v in scorer_10k)
            + ")",
            p99_10k <= 20,
        ),
        (
            "p99 at 10k tx/s over the relay's",
            "<= 5 ms",
            f"{over_floor:+.1f} ms (median of the {rounds} rounds' differences; relay "
            + ", ".join(f"{v:.1f}" for v in relay_10k)
            + ")",
            over_floor <= 5,
        ),
        (
            "against the naive loop",
            ">= 10x",
            f"{results['naive']['ratio']:.1f}x",
            results["naive"]["ratio"] >= 10,
        ),
        (
            "exactly-once drain slowdown",
            "<= 10%",
            f"{eos_slowdown:.1%} ({pairs_text('exactly-once', 'exactly-once')})",
            eos_slowdown <= 0.10,
        ),
        (
            "exactly-once p99 at 10k tx/s",
            "reported",
            f"{eos_10k:.1f} ms (at-least-once, median {p99_10k:.1f} ms)",
            True,
        ),
        (
            "drift tracking cost",
            "< 5%",
            f"{drift_cost:.1%} (the default tracks drift; {pairs_text('drift off', 'off')})",
            drift_cost < 0.05,
        ),
    ]
    lines = [
        "## Goals (from the issues) against this run",
        "",
        "| goal | target | measured | met |",
        "|---|---|---|---|",
    ]
    lines += [f"| {g} | {t} | {m} | {'yes' if ok else '**no**'} |" for g, t, m, ok in rows]
    if paired("A/B split 50%")[0]:
        lines.append(
            f"\nDrain during a 50% A/B split: {ratio('A/B split 50%'):.0%} of the no-split "
            f"drain ({pairs_text('A/B split 50%', 'split')})."
        )
    return [*lines, ""]


def _profiles(results: dict[str, Any]) -> list[dict[str, float]]:
    """The per-stage profiles (µs per message) of the 1-worker all-distinct drains, in run order."""
    return [
        d["profile_us"]
        for d in results["drain"]
        if d["workload"] == "all distinct" and d["workers"] == 1 and d["profile_us"]
    ]


def _profile(results: dict[str, Any]) -> dict[str, float]:
    """Each stage's median over the rounds' profiles."""
    rounds = _profiles(results)
    if not rounds:
        return {}
    return {stage: float(np.median([r[stage] for r in rounds])) for stage in rounds[0]}


def _write(results: dict[str, Any], path: Path) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Command: `make bench` (`python -m bench.run_all`), run {results['started']} UTC.",
        f"Machine: {_machine()}.",
        f"Each drain pre-fills {results['messages']:,} transactions; the broker, replayer and "
        "scorer(s) share the machine's cores.",
        "",
        "## Drain throughput (first -> last decision, broker timestamps)",
        "",
        f"`{RELAY}` is bench/relay.py (below) draining the same all-distinct topic. CPU: the",
        "process's user + system seconds (all its threads, librdkafka's included) between the",
        "first and last decision, per decision; 1 worker only.",
        "",
        "| workload | workers | decisions | seconds | tx/s | CPU µs/decision | cache hits |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for d in results["drain"]:
        cpu = "" if d.get("cpu_us") is None else f"{d['cpu_us']:.2f}"
        lines.append(
            f"| {d['workload']} | {d['workers']} | {d['decisions']:,} | "
            f"{d['seconds']:.1f} | {d['tx_per_s']:,.0f} | {cpu} | "
            f"{d.get('cache_hit_rate', 0.0):.1%} |"
        )
    lines += [
        "",
        "## Latency: event time -> record consumed downstream (ms)",
        "",
        "`relay` is the floor: `bench/relay.py`, the scorer's consumer and producer settings,",
        "batch cap and commit-after-ack, passing the raw bytes through (no decode, score,",
        "encode, drift). `scorer` is `sentinel score`. Same replayer, same reader.",
        f"At 10k tx/s the relay and the scorer ran {LATENCY_ROUNDS} interleaved rounds (rows in",
        "run order); the goals below take their medians. The latency runs start once the",
        "machine has settled after the drains (dirty pages written back, both cores >= "
        f"{SETTLE_IDLE_SHARE:.0%} idle",
        f"for {SETTLE_QUIET_S:.0f} s: {results.get('settled_s', 0):.0f} s of waiting in this run).",
        "",
        "| path | offered tx/s | achieved tx/s | records | p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["latency"]:
        lines.append(
            f"| {r['path']} | {r['offered']:,} | {r['achieved']:,.0f} | {r['decisions']:,} | "
            f"{r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['max']:.1f} |"
        )
    naive = results["naive"]
    lines += [
        "",
        "## Against the naive per-message loop (bench/naive.py)",
        "",
        f"Naive: {naive['tx_per_s']:,.0f} tx/s. Scorer (best all-distinct drain) / naive = "
        f"**{naive['ratio']:.1f}x**.",
        "",
    ]
    profile = _profile(results)
    if profile:
        rounds = [(f"round {i}", r) for i, r in enumerate(_profiles(results), 1)]
        lines += [
            "## Per-stage profile (1 worker, all distinct; µs per message)",
            "",
            "Each 1-worker all-distinct drain's, and each stage's median over them (the goals",
            "take the medians' sum).",
            "",
            "| drain | " + " | ".join(profile) + " | total |",
            "|---|" + "---:|" * (len(profile) + 1),
        ]
        lines += [
            f"| {name} | "
            + " | ".join(f"{v:.2f}" for v in stages.values())
            + f" | {sum(stages.values()):.2f} |"
            for name, stages in [*rounds, ("**median**", profile)]
        ]
        lines += [
            "",
            f"The served model's ONNX Runtime call alone, batches of 2,000 distinct rows, one "
            f"thread: {results['onnx_us']:.2f} µs per row (`score` above is this call).",
            "",
            "The Kafka client's calls alone (main-thread CPU µs per message, in the bench "
            "process, with the scorer's settings and batch cap, on the same input after the "
            "first round's drains): "
            + ", ".join(f"{k} {v:.2f}" for k, v in results["client_us"].items())
            + f"; together {sum(results['client_us'].values()):.2f}. With ONNX alone they are "
            "what any scorer on confluent-kafka and this model pays per message before its "
            "own code runs.",
            "",
        ]
    if results["cost"]:
        lines += scale.markdown(results["cost"], results["long"])
    lines += _goals(results)
    if "control" in results:
        c = results["control"]
        lines += [
            "## Control plane",
            "",
            f"`ab_split` publish -> acked by both instances of a 2-worker fleet, "
            f"{c['commands']} commands: median {c['p50_ms']:.0f} ms, max {c['max_ms']:.0f} ms.",
            "",
        ]
    # The hand-written reading of the figures survives a re-run (update it when they move).
    # The section `make bench-peers` writes survives too.
    peers = kept_section(path, "peers")
    kept = path.read_text().partition(READING) if path.exists() else ("", "", "")
    path.write_text(
        "\n".join(lines) + "\n" + (peers and peers + "\n") + (READING + kept[2] if kept[1] else "")
    )


if __name__ == "__main__":
    sys.exit(main())
