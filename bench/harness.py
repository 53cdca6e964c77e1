"""Benchmark building blocks: a real broker, pre-filled topics, real scorer processes.

Everything here measures the product as deployed: ``sentinel score`` subprocesses in a consumer
group on the real Apache Kafka broker, fed by the real replayer, observed through the decisions
topic and the scorer's own Prometheus endpoint.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

# confluent_kafka.admin re-exports these without __all__, which strict mypy reads as private.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from ops.kafka_broker import free_ports
from streams.config import KafkaSettings, TopicNames
from streams.tools.topics import TopicAdmin

SENTINEL = [sys.executable, "-m", "streams.cli"]

# (bootstrap, topics, group id) -> a running process that consumes topics.transactions in that
# group and writes a record per transaction to topics.decisions: the relay, or a peer framework.
JobRunner = Callable[[str, TopicNames, str], AbstractContextManager[subprocess.Popen[bytes]]]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


SETTLE_QUIET_S = 20.0  # settle(): both cores idle this long in a row
SETTLE_IDLE_SHARE = 0.9


def settle(
    quiet_s: float = SETTLE_QUIET_S, idle_share: float = SETTLE_IDLE_SHARE, max_wait_s: float = 90.0
) -> float:
    """Before latency runs: write dirty pages back, then wait until the machine has been idle
    (``idle_share`` of both cores' time) for ``quiet_s`` in a row, at most ``max_wait_s``.

    Right after the drains the scorer's p50 and p99 at 10k tx/s read 1-2 and 3-15 ms higher
    than on a fresh broker, the relay's not (``bench/RESULTS.md``, reading); after this they
    were back. Returns the seconds it waited."""
    began = time.monotonic()
    os.sync()
    quiet_since = time.monotonic()
    before = _cpu_ticks()
    while time.monotonic() - began < max_wait_s:
        time.sleep(1.0)
        after = _cpu_ticks()
        busy, total = after[0] - before[0], after[1] - before[1]
        before = after
        if total and 1 - busy / total < idle_share:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            break
    waited = time.monotonic() - began
    log(f"settled in {waited:.0f} s (dirty pages written back, machine idle for {quiet_s:.0f} s)")
    return waited


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def distinct_source(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` synthetic transactions, no two feature rows alike (features, labels).

    The replayer cycles through its source, and the decision cache is keyed by the feature row:
    a source shorter than a drain would let the cache answer the repeats of an "all distinct"
    workload (a 100k-row file gave 22.7% hits over 1M messages).
    """
    from schemas.features import FEATURE_NAMES
    from training.synth import generate

    frame = generate(rows=rows, seed=2026)
    return (
        frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64),
        frame["Class"].to_numpy(dtype=np.int8),
    )


def make_topics(
    bootstrap: str, partitions: int = 6, decisions_config: dict[str, str] | None = None
) -> TopicNames:
    """A fresh, uniquely named set of product topics (``decisions_config``: the decisions
    topic's settings)."""
    run = uuid.uuid4().hex[:6]
    names = TopicNames(
        **{
            role: f"bench-{run}-{getattr(TopicNames(), role)}"
            for role in ("transactions", "decisions", "drift", "control", "control_events", "dlq")
        }
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    specs = [
        NewTopic(names.transactions, partitions, 1),
        NewTopic(names.decisions, partitions, 1, config=decisions_config or {}),
        NewTopic(names.dlq, 1, 1),
        NewTopic(names.drift, 1, 1),
        NewTopic(names.control, 1, 1, config={"retention.ms": "-1"}),
        NewTopic(names.control_events, 1, 1),
    ]
    for future in admin.create_topics(specs).values():
        future.result(30)
    return names


def topic_flags(topics: TopicNames) -> list[str]:
    return [
        f"--topic-{role.replace('_', '-')}={getattr(topics, role)}"
        for role in ("transactions", "decisions", "drift", "control", "control_events", "dlq")
    ]


@dataclass
class Scorer:
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path
    workers: int = 1

    def metrics(self, worker: int = 0) -> dict[str, float]:
        """Worker ``worker``'s Prometheus exposition (port + worker), as {series: value}."""
        port = self.metrics_port + worker
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()
        series: dict[str, float] = {}
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                series[name] = float(value)
        return series


@contextmanager
def scorer(
    bootstrap: str,
    topics: TopicNames,
    models_dir: Path,
    group: str,
    *extra: str,
    workers: int = 1,
) -> Iterator[Scorer]:
    """A ``sentinel score`` process (``workers`` processes); stopped with SIGTERM on exit."""
    (port,) = free_ports(1)
    cmd = [
        *SENTINEL,
        "score",
        f"--bootstrap-servers={bootstrap}",
        f"--models-dir={models_dir}",
        f"--group-id={group}",
        f"--metrics-port={port}",
        f"--workers={workers}",
        *topic_flags(topics),
        *extra,
    ]
    with service("scorer", cmd, workers) as (proc, log_path):
        yield Scorer(proc, port, log_path, workers)


@contextmanager
def relay(bootstrap: str, topics: TopicNames, group: str) -> Iterator[subprocess.Popen[bytes]]:
    """The pass-through relay (``bench/relay.py``) from transactions to decisions."""
    cmd = [
        sys.executable,
        "-m",
        "bench.relay",
        f"--bootstrap-servers={bootstrap}",
        f"--source={topics.transactions}",
        f"--sink={topics.decisions}",
        f"--group={group}",
    ]
    with service("relay", cmd, 1) as (proc, _):
        yield proc


@contextmanager
def service(
    name: str, cmd: list[str], members: int
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Run ``cmd`` until every one of its ``members`` owns partitions (logs a line
    ``assigned partitions [...``; 0: do not wait); SIGTERM on exit."""
    log_path = Path(f"/tmp/bench-{name}-{uuid.uuid4().hex[:6]}.log")
    env = {**os.environ, "SENTINEL_LOG_LEVEL": "INFO"}  # assignments are logged at INFO
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 90
    # Ready = every member owns partitions (a group join takes a few seconds).
    while len(re.findall(rb"assigned partitions \[\d", log_path.read_bytes())) < members:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)
    try:
        yield proc, log_path
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)


class CpuSampler:
    """CPU seconds (user + system, all threads) of one process, sampled every ``interval_s``.

    Reads ``/proc/<pid>/stat`` from a daemon thread, so a window inside the run (the span of
    its decisions) can be charged without counting start-up or idling after the drain.
    """

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self._stat = Path(f"/proc/{pid}/stat")
        self._interval_s = interval_s
        self._tick = os.sysconf("SC_CLK_TCK")
        self.samples: list[tuple[float, float]] = []  # (epoch seconds, CPU seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # Fields after the ")" that ends the command name: utime, stime are 12th, 13th.
                fields = self._stat.read_text().rpartition(")")[2].split()
            except OSError:  # the process is gone
                return
            self.samples.append((time.time(), (int(fields[11]) + int(fields[12])) / self._tick))
            self._stop.wait(self._interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> float:
        """CPU seconds spent between two epoch times (interpolated between samples)."""
        times, cpu = zip(*self.samples, strict=True)
        return float(np.interp(end, times, cpu) - np.interp(start, times, cpu))


def decision_window(bootstrap: str, topic: str) -> tuple[int, float, float]:
    """(count, first, last): the decisions' broker timestamps (epoch seconds) at both ends.

    Reads every record (read_committed): with exactly-once, offsets also number the
    transaction markers, so ``high - low`` overcounts and the last offset is not a record.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-span",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    first, last, count, at_end = float("inf"), 0.0, 0, 0
    while at_end < len(parts):
        for msg in consumer.consume(10_000, timeout=5):
            error = msg.error()
            if error is not None:
                at_end += error.code() == KafkaError._PARTITION_EOF
                continue
            stamp = msg.timestamp()[1]
            first, last, count = min(first, stamp), max(last, stamp), count + 1
    consumer.close()
    return count, first / 1000.0, last / 1000.0


def committed_count(admin: TopicAdmin, group: str, topic: str) -> int:
    """How many offsets ``group`` has committed on ``topic`` (summed over partitions)."""
    return sum(max(o, 0) for o in admin.committed(group, topic).values())


def wait_for_commit(
    bootstrap: str,
    group: str,
    topic: str,
    total: int,
    timeout_s: float,
    proc: subprocess.Popen[bytes] | None = None,
) -> float:
    """Block until the group committed ``total`` offsets on ``topic``; returns the wait.

    Raises RuntimeError after ``timeout_s``, or as soon as ``proc`` (the consuming job) exits.
    """
    began = time.monotonic()
    admin = TopicAdmin(KafkaSettings(bootstrap))
    while committed_count(admin, group, topic) < total:
        if time.monotonic() - began > timeout_s:
            raise RuntimeError(f"group {group} did not commit {total} offsets in {timeout_s} s")
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before committing")
        time.sleep(0.5)
    return time.monotonic() - began


def read_latencies(
    bootstrap: str, topic: str, start: dict[int, int], expected: int, timeout_s: float
) -> np.ndarray:
    """Consume ``expected`` records from ``start`` offsets as they arrive; event time ->
    consumed, in ms. The records are decisions, or the relay's raw transactions; they are
    stamped on arrival and decoded afterwards, so the reader's own decoding adds nothing."""
    from schemas.avro import record_codec
    from schemas.transaction_codec import decode_transactions

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"lat-{uuid.uuid4().hex[:6]}",
            "fetch.wait.max.ms": 5,
            # exactly-once decisions count from their commit (librdkafka's default, stated)
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in start.items()])
    arrived: list[float] = []
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < expected and time.monotonic() < deadline:
        batch = [m.value() or b"" for m in consumer.consume(1000, timeout=0.002) if not m.error()]
        now_ms = time.time() * 1000
        arrived.extend([now_ms] * len(batch))
        values.extend(batch)
    consumer.close()
    if values and values[0].startswith(record_codec("transaction").header):
        event_ms = decode_transactions(values)[0].event_time_ms.astype(np.float64)
    else:
        decision = record_codec("decision")
        event_ms = np.array([decision.decode(v)["event_time"] for v in values], dtype=np.float64)
    return np.array(arrived) - event_ms


def cache_hit_rate(scorer: Scorer) -> float:
    """Share of scored rows answered by the decision cache, over every worker's counters."""
    hits = misses = 0.0
    for worker in range(scorer.workers):
        series = scorer.metrics(worker)
        hits += series.get('sentinel_cache_lookups_total{result="hit"}', 0.0)
        misses += series.get('sentinel_cache_lookups_total{result="miss"}', 0.0)
    return hits / (hits + misses) if hits + misses else 0.0


def stage_profile(metrics: dict[str, float]) -> dict[str, float]:
    """µs per consumed message spent in each pipeline stage, from the scorer's own counters."""
    consumed = metrics.get("sentinel_consumed_messages_total", 0.0)
    profile = {}
    for series, value in metrics.items():
        match = re.fullmatch(r'sentinel_stage_seconds_total\{stage="(\w+)"\}', series)
        if match and consumed:
            profile[match.group(1)] = value / consumed * 1e6
    return profile


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin (written by the script, not by hand) -->", f"<!-- {name}: end -->"


def kept_section(path: Path, name: str) -> str:
    """The block ``name`` of ``path`` between its markers (markers included), or ''."""
    begin, end = _markers(name)
    text = path.read_text() if path.exists() else ""
    start = text.find(begin)
    stop = text.find(end, start)
    return text[start : stop + len(end)] + "\n" if start >= 0 and stop >= 0 else ""


def write_section(path: Path, name: str, lines: list[str], before: str) -> None:
    """Replace block ``name`` of ``path`` with ``lines``; a new block goes before the heading
    ``before`` (or at the end). The rest of the file is kept as it is."""
    begin, end = _markers(name)
    block = "\n".join([begin, *lines, end]) + "\n"
    text = path.read_text() if path.exists() else ""
    old = kept_section(path, name)
    if old:
        text = text.replace(old, block)
    elif before in text:
        text = text.replace(before, block + "\n" + before, 1)
    else:
        text = text + ("\n" if text else "") + block
    path.write_text(text)
