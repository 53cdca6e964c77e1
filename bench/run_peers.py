"""``make bench-peers``: the same fraud-scoring job in Sentinel and in the stream frameworks a user
would otherwise pick, interleaved on one broker and one input; writes RESULTS.md's Peers section.

Jobs (a peer's code is in bench/peers/; each peer runs in its own virtualenv under
.sentinel/bench-venvs/<name>, built here from the pins in bench/peers/requirements-<name>.txt):
  sentinel   ``sentinel score``, 1 worker: the product
  arroyo     sentry-arroyo: BatchStep (2,000 / 5 ms) -> one ONNX call per batch -> Produce ->
             CommitOffsets
  quix       Quix Streams: StreamingDataFrame.apply, one message at a time -> to_topic
  quix-sink  Quix Streams: a BatchingSink scoring each checkpoint's batch in one ONNX call
All consume Avro transactions, score them with the same ONNX file and thresholds, produce Avro
decisions (same schema and framing) and commit after the decisions are acknowledged.

Each round runs every job in turn, twice over, starting one job later than the round before:
  drain    the same N pre-filled transactions (one topic, all distinct) from a fresh group:
           decisions/s between the first and last decision's broker timestamps, and the job
           process's CPU seconds inside that window per million decisions
  latency  5k tx/s offered for 10 s after a 3 s warm-up: event time -> decision consumed, by the
           same reader for every job (bench/run_all.py's latency scenario)
Check: each job's first drain decided every input transaction once at least, with the
probability and outcome Sentinel gave it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench.harness import (
    SENTINEL,
    CpuSampler,
    JobRunner,
    cache_hit_rate,
    decision_window,
    distinct_source,
    log,
    make_topics,
    scorer,
    service,
    settle,
    wait_for_commit,
    write_section,
)
from bench.run_all import READING, RESULTS, _latency, _machine
from ops.kafka_broker import provide_bootstrap
from schemas.decision_codec import DECISION_OUTCOMES, decode_decision
from streams.cli._args import external_bootstrap
from streams.config import KafkaSettings, TopicNames
from streams.tools.replayer import ReplayOptions, replay
from streams.tools.topics import TopicAdmin

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = Path(__file__).with_name("peers")
VENVS = ROOT / ".sentinel" / "bench-venvs"
OURS = "sentinel"
SHARED_PACKAGES = ("confluent-kafka", "onnxruntime", "numpy", "fastavro")


@dataclass(frozen=True)
class Peer:
    """A peer job: ``bench/peers/<script>`` run by the python of virtualenv ``venv``."""

    name: str
    venv: str
    script: str
    framework: str  # its PyPI name
    args: tuple[str, ...] = ()
    ready_lines: int = 0  # "assigned partitions [..." lines once it owns partitions (0: none)


PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer("arroyo", "arroyo", "arroyo_job.py", "sentry-arroyo", ready_lines=1),
        Peer("quix", "quix", "quix_job.py", "quixstreams", ("--shape=apply",)),
        Peer("quix-sink", "quix", "quix_job.py", "quixstreams", ("--shape=sink",)),
    )
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=300_000, help="pre-filled for the drains")
    parser.add_argument("--rounds", type=int, default=3, help="every job drains and is timed")
    parser.add_argument("--rate", type=int, default=5_000, help="offered tx/s, latency runs")
    parser.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}"
    )
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    peers = [PEERS[name] for name in args.peers.split(",")]
    models_dir = Path(args.models_dir).resolve()
    if not (models_dir / "current").exists():
        log("no models/current: training the default model first")
        subprocess.run([*SENTINEL, "train", "--activate", f"--models-dir={models_dir}"], check=True)
    pythons = {peer.venv: peer_python(peer.venv) for peer in peers}
    ours = SentinelJob(models_dir)
    jobs: dict[str, JobRunner] = {OURS: ours}
    jobs.update({peer.name: peer_job(peer, pythons[peer.venv], models_dir) for peer in peers})
    features, labels = distinct_source(args.messages)
    run: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M"),
        "load": [os.getloadavg()[0]],
        "messages": args.messages,
        "rounds": args.rounds,
        "rate": args.rate,
        "versions": versions(peers, pythons),
        "drain": {name: [] for name in jobs},
        "latency": {name: [] for name in jobs},
        "cache_hits": [],
    }
    with provide_bootstrap(external_bootstrap()) as bootstrap:
        source = make_topics(bootstrap).transactions
        log(f"pre-filling {args.messages:,} distinct transactions")
        replay(
            KafkaSettings(bootstrap), source, features, labels, ReplayOptions(count=args.messages)
        )
        reference: dict[str, tuple[float, int]] = {}
        checks: dict[str, dict[str, Any]] = {}
        for round_no in range(1, args.rounds + 1):
            # Each round starts with the next job: the first latency run after a round's drains
            # met a broker still writing them (Sentinel's p99 293 ms, then 20.8 in round 2).
            names = list(jobs)
            start = (round_no - 1) % len(names)
            order = [(name, jobs[name]) for name in names[start:] + names[:start]]
            for name, job in order:
                log(f"round {round_no}: drain, {name}")
                row = drain(bootstrap, source, job, args.messages)
                run["drain"][name].append(row)
                if name == OURS:
                    run["cache_hits"].append(ours.cache_hit_rate)
                if round_no == 1:
                    outcomes = decided(bootstrap, row["topic"])
                    if name == OURS:
                        reference = outcomes
                    checks[name] = compare(outcomes, reference, args.messages)
                    log(f"  check: {checks[name]}")
            settle()  # the drains' aftermath fell on the first latency run of the round
            for name, job in order:
                run["latency"][name].append(
                    _latency(bootstrap, models_dir, features, labels, args.rate, name, job)
                )
        run["checks"] = checks
    run["load"].append(os.getloadavg()[0])
    lines = section(run)
    write_section(Path(args.out), "peers", lines, before=READING)
    print("\n".join(lines))
    return 0


def peer_python(venv_name: str) -> Path:
    """The python of ``.sentinel/bench-venvs/<venv_name>``, (re)built when its pins changed."""
    venv = VENVS / venv_name
    pins = PEERS_DIR / f"requirements-{venv_name}.txt"
    installed = venv / "requirements.txt"  # the pins it was built from
    if not installed.exists() or installed.read_text() != pins.read_text():
        log(f"building {venv} from {pins.relative_to(ROOT)}")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([venv / "bin" / "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([venv / "bin" / "pip", "install", "-q", "-r", pins], check=True)
        shutil.copyfile(pins, installed)
    return venv / "bin" / "python"


def peer_job(peer: Peer, python: Path, models_dir: Path) -> JobRunner:
    @contextmanager
    def run(bootstrap: str, topics: TopicNames, group: str) -> Iterator[subprocess.Popen[bytes]]:
        cmd = [
            str(python),
            str(PEERS_DIR / peer.script),
            f"--bootstrap-servers={bootstrap}",
            f"--group-id={group}",
            f"--input-topic={topics.transactions}",
            f"--output-topic={topics.decisions}",
            f"--models-dir={models_dir}",
            *peer.args,
        ]
        with service(peer.name, cmd, peer.ready_lines) as (proc, _):
            yield proc

    return run


class SentinelJob:
    """``sentinel score`` (1 worker) as a JobRunner; keeps the last run's cache hit share."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.cache_hit_rate = 0.0

    @contextmanager
    def __call__(
        self, bootstrap: str, topics: TopicNames, group: str
    ) -> Iterator[subprocess.Popen[bytes]]:
        with scorer(bootstrap, topics, self.models_dir, group) as proc:
            try:
                yield proc.proc
            finally:
                self.cache_hit_rate = cache_hit_rate(proc)


def drain(bootstrap: str, source: str, job: JobRunner, total: int) -> dict[str, Any]:
    """Run ``job`` over the pre-filled ``source`` from a fresh group, until all is committed."""
    # Decisions stamped by the broker: Quix gives an output record its input's timestamp.
    appended = {"message.timestamp.type": "LogAppendTime"}
    topics = replace(make_topics(bootstrap, decisions_config=appended), transactions=source)
    group = f"peers-{uuid.uuid4().hex[:6]}"
    with job(bootstrap, topics, group) as proc:
        cpu = CpuSampler(proc.pid)
        wait_for_commit(bootstrap, group, source, total, timeout_s=1800, proc=proc)
        cpu.stop()
    count, first, last = decision_window(bootstrap, topics.decisions)
    row = {
        "topic": topics.decisions,
        "decisions": count,
        "seconds": last - first,
        "tx_per_s": count / (last - first),
        "cpu_s_per_million": cpu.between(first, last) / count * 1e6,
    }
    log(
        f"  {row['tx_per_s']:,.0f} tx/s ({count:,} decisions in {row['seconds']:.1f} s), "
        f"{row['cpu_s_per_million']:.1f} CPU s per million"
    )
    return row


def decided(bootstrap: str, topic: str) -> dict[str, tuple[float, int]]:
    """Every decision on ``topic``: transaction id -> (fraud probability, outcome index)."""
    end = TopicAdmin(KafkaSettings(bootstrap)).end_offsets(topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}"})
    consumer.assign([TopicPartition(topic, p, 0) for p in end])
    position = dict.fromkeys(end, 0)
    outcomes: dict[str, tuple[float, int]] = {}
    while any(position[p] < end[p] for p in end):
        for msg in consumer.consume(10_000, timeout=1.0):
            if msg.error() is None:
                record = decode_decision(msg.value() or b"")
                outcome = DECISION_OUTCOMES.index(record["decision"])
                outcomes[record["transaction_id"]] = (record["fraud_probability"], outcome)
                position[msg.partition() or 0] = (msg.offset() or 0) + 1
    consumer.close()
    return outcomes


def compare(
    outcomes: dict[str, tuple[float, int]], reference: dict[str, tuple[float, int]], total: int
) -> dict[str, Any]:
    """How one job's decisions agree with Sentinel's, transaction by transaction."""
    shared = outcomes.keys() & reference.keys()
    return {
        "transactions": len(outcomes),
        "expected": total,
        "missing": total - len(shared),
        "max_probability_difference": max(
            (abs(outcomes[t][0] - reference[t][0]) for t in shared), default=float("nan")
        ),
        "outcome_differences": sum(outcomes[t][1] != reference[t][1] for t in shared),
    }


def versions(peers: list[Peer], pythons: dict[str, Path]) -> dict[str, dict[str, str]]:
    """Package versions: the project's venv for Sentinel, then each peer virtualenv's."""
    found = {OURS: {p: importlib.metadata.version(p) for p in SHARED_PACKAGES}}
    for peer in {peer.venv: peer for peer in peers}.values():
        packages = [peer.framework, *SHARED_PACKAGES]
        script = (
            "import importlib.metadata as m, json, sys; "
            "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
        )
        out = subprocess.run(
            [pythons[peer.venv], "-c", script, *packages], check=True, capture_output=True
        )
        found[f"{peer.venv} venv"] = json.loads(out.stdout)
    return found


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(row[key] for row in rows))


def _rounds(rows: list[dict[str, Any]], key: str, form: str) -> str:
    return " / ".join(format(row[key], form) for row in rows)


def section(run: dict[str, Any]) -> list[str]:
    """The Peers section of RESULTS.md for one run (medians over rounds, each round shown)."""
    drains, latencies, checks = run["drain"], run["latency"], run["checks"]
    median = {
        name: {
            "tx_per_s": _median(drains[name], "tx_per_s"),
            "cpu": _median(drains[name], "cpu_s_per_million"),
            "p99": _median(latencies[name], "p99"),
        }
        for name in drains
    }
    version_text = "; ".join(
        f"{venv}: " + ", ".join(f"{p} {v}" for p, v in found.items())
        for venv, found in run["versions"].items()
    )
    lines = [
        "## Peers: the same job in sentry-arroyo and Quix Streams",
        "",
        f"Command: `make bench-peers` (`python -m bench.run_peers --messages {run['messages']} "
        f"--rounds {run['rounds']}`), run {run['started']} UTC.",
        f"Machine: {_machine()}; 1-minute load average {run['load'][0]:.1f} at the start of "
        f"the run, {run['load'][1]:.1f} at its end.",
        f"Versions (each peer in its own virtualenv): {version_text}.",
        "",
        "Every job consumes the same pre-filled topic of "
        f"{run['messages']:,} Avro transactions (all distinct; Sentinel's cache still answered "
        f"{statistics.mean(run['cache_hits']):.1%} of them), scores them with the same ONNX "
        "model and thresholds, produces Avro decisions and commits after their acks. Drain: "
        "decisions/s between the first and last decision's broker timestamps; CPU: the job "
        "process's CPU seconds in that window per million decisions; latency: event time -> "
        f"decision consumed at {run['rate']:,} tx/s offered (10 s after a 3 s warm-up). Jobs "
        f"ran interleaved, {run['rounds']} rounds: medians, then each round.",
        "",
        f"| job | drain tx/s | CPU s per million | p50 ms | p99 ms at {run['rate']:,} tx/s | "
        f"latency decisions read (of {run['rate'] * 10:,}) | drain decisions against Sentinel's |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in drains:
        check = checks[name]
        agreement = (
            "(the reference)"
            if name == OURS
            else f"{check['missing']:,} missing, largest probability difference "
            f"{check['max_probability_difference']:.1g}, "
            f"{check['outcome_differences']:,} outcomes differ"
        )
        lines.append(
            f"| {name} | {median[name]['tx_per_s']:,.0f} "
            f"({_rounds(drains[name], 'tx_per_s', ',.0f')}) "
            f"| {median[name]['cpu']:.1f} ({_rounds(drains[name], 'cpu_s_per_million', '.1f')}) "
            f"| {_median(latencies[name], 'p50'):.1f} ({_rounds(latencies[name], 'p50', '.1f')}) "
            f"| {median[name]['p99']:.1f} ({_rounds(latencies[name], 'p99', '.1f')}) "
            f"| {_rounds(latencies[name], 'decisions', ',')} "
            f"| {check['transactions']:,} of {check['expected']:,} decided; {agreement} |"
        )
    ours = median[OURS]
    peers = [name for name in drains if name != OURS]
    lines += [
        "",
        "| Sentinel / peer | drain (> 1: Sentinel faster) | CPU per million (< 1: Sentinel "
        "cheaper) | p99 (< 1: Sentinel lower) |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {ours['tx_per_s'] / median[name]['tx_per_s']:.2f}x "
        f"| {ours['cpu'] / median[name]['cpu']:.2f} | {ours['p99'] / median[name]['p99']:.2f} |"
        for name in peers
    ]
    behind = [name for name in drains if median[name]["tx_per_s"] < run["rate"]]
    if behind:
        lines += [
            "",
            f"{', '.join(behind)} drained slower than the {run['rate']:,} tx/s offered in the "
            "latency runs, so their latency there is the wait behind a growing backlog (see "
            "the decisions read), not the job's latency at a rate it sustains.",
        ]
    best = max(peers, key=lambda name: median[name]["tx_per_s"])
    lowest = min(peers, key=lambda name: median[name]["p99"])
    drain_ratio = ours["tx_per_s"] / median[best]["tx_per_s"]
    lines += [
        "",
        "| goal (issue 16) | measured | met |",
        "|---|---|---|",
        f"| drain >= 3x the best peer | {drain_ratio:.2f}x {best} | "
        f"{'yes' if drain_ratio >= 3 else '**no**'} |",
        f"| p99 lower than every peer's | {ours['p99']:.1f} ms vs {median[lowest]['p99']:.1f} "
        f"ms ({lowest}) | {'yes' if ours['p99'] < median[lowest]['p99'] else '**no**'} |",
        "",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
