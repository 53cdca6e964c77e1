"""Cost as the work grows: a long drain's throughput and RSS per million, and the scorer's CPU
per message against batch size and cache-hit share. Both run the real ``sentinel score``
process on the real broker (``bench/run_all.py`` calls them; ``make bench`` writes the tables).

CPU and RSS come from ``/proc/<pid>`` of the scorer process (``--workers=1`` scores in the
process itself): CPU is user + system time from the moment the scorer owns its partitions (its
start-up, imports and model load, is not counted) to the moment the group committed the
measured messages.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import cache_hit_rate, committed_count, log, make_topics, scorer
from streams.config import KafkaSettings
from streams.tools.replayer import ReplayOptions, replay
from streams.tools.topics import TopicAdmin

BATCH_SIZES = (1, 10, 100, 1_000, 2_000)
HIT_SHARES = (0.0, 0.5, 0.99)
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S  # utime, stime (fields 14, 15)


def _kib(path: str) -> dict[str, int]:
    """The ``Name: <n> kB`` lines of a /proc status file (/proc/<pid>/status, /proc/meminfo)."""
    fields = (line.partition(":") for line in Path(path).read_text().splitlines())
    return {name: int(value.split()[0]) for name, _, value in fields if value.endswith("kB")}


def rss_mib(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB."""
    return _kib(f"/proc/{pid}/status")["VmRSS"] / 1024


def machine_cpu() -> tuple[float, float, float]:
    """The machine's CPU time so far, all cores, in seconds: (busy, iowait, total)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    idle, iowait = ticks[3], ticks[4]
    return (total - idle - iowait) * _TICK_S, iowait * _TICK_S, total * _TICK_S


def page_cache_gib() -> tuple[float, float]:
    """(page cache, dirty + under writeback) in GiB, from /proc/meminfo."""
    kib = _kib("/proc/meminfo")
    return kib["Cached"] / 2**20, (kib["Dirty"] + kib["Writeback"]) / 2**20


def cost_table(
    bootstrap: str,
    models_dir: Path,
    features: np.ndarray,
    labels: np.ndarray | None,
    messages: int,
) -> list[dict[str, Any]]:
    """CPU µs per message for every (cache-hit share, ``--max-batch``) pair."""
    settings, rows = KafkaSettings(bootstrap), []
    for share in HIT_SHARES:
        source = make_topics(bootstrap).transactions
        log(f"cost table: pre-filling {messages:,} transactions, {share:.0%} redelivered")
        options = ReplayOptions(count=messages, duplicate_fraction=share, seed=5)
        replay(settings, source, features, labels, options, True)
        for batch in BATCH_SIZES:
            # Batches of 1 and 10 are slow by nature: a share of the input says enough.
            count = min(messages, batch * 5_000) if batch < 100 else messages
            rows.append(
                _measure(bootstrap, models_dir, source, count, f"--max-batch={batch}")
                | {"max_batch": batch, "redelivered": share}
            )
            log(
                f"  max batch {batch:>5,}: {rows[-1]['cpu_us_per_message']:.2f} µs CPU/message, "
                f"{rows[-1]['tx_per_s']:,.0f} tx/s, cache hits {rows[-1]['cache_hit_rate']:.1%}"
            )
    return rows


def _measure(
    bootstrap: str, models_dir: Path, source: str, count: int, *extra: str
) -> dict[str, Any]:
    topics = replace(make_topics(bootstrap), transactions=source)
    group = f"cost-{uuid.uuid4().hex[:6]}"
    admin = TopicAdmin(KafkaSettings(bootstrap))
    with scorer(bootstrap, topics, models_dir, group, *extra) as proc:
        pid = proc.proc.pid
        cpu0, began = cpu_seconds(pid), time.monotonic()
        while (done := committed_count(admin, group, source)) < count:
            time.sleep(0.2)
        cpu, seconds = cpu_seconds(pid) - cpu0, time.monotonic() - began
        hits = cache_hit_rate(proc)
    return {
        "messages": done,
        "cpu_us_per_message": cpu / done * 1e6,
        "tx_per_s": done / seconds,
        "cache_hit_rate": hits,
    }


def long_drain(
    bootstrap: str,
    models_dir: Path,
    features: np.ndarray,
    labels: np.ndarray | None,
    messages: int,
) -> list[dict[str, Any]]:
    """Drain ``messages`` all-distinct transactions; per million: tx/s, CPU/message, RSS, the
    machine's CPU split, page cache and the partitions still holding input."""
    settings = KafkaSettings(bootstrap)
    topics = make_topics(bootstrap)
    log(f"long drain: pre-filling {messages:,} distinct transactions")
    replay(settings, topics.transactions, features, labels, ReplayOptions(count=messages), True)
    group = f"long-{uuid.uuid4().hex[:6]}"
    admin = TopicAdmin(settings)
    source = topics.transactions
    ends = admin.end_offsets(source)
    rows: list[dict[str, Any]] = []
    with scorer(bootstrap, topics, models_dir, group) as proc:
        pid = proc.proc.pid
        last_at, last_cpu, last_machine, last_done = (
            time.monotonic(),
            cpu_seconds(pid),
            machine_cpu(),
            0,
        )
        for million in range(1, messages // 1_000_000 + 1):
            while (done := committed_count(admin, group, source)) < million * 1_000_000:
                time.sleep(0.1)
            now, cpu, machine = time.monotonic(), cpu_seconds(pid), machine_cpu()
            committed = admin.committed(group, source)
            busy, iowait, total = (b - a for a, b in zip(last_machine, machine, strict=True))
            cached, dirty = page_cache_gib()
            rows.append(
                {
                    "million": million,
                    "tx_per_s": (done - last_done) / (now - last_at),
                    "cpu_us_per_message": (cpu - last_cpu) / (done - last_done) * 1e6,
                    "rss_mib": rss_mib(pid),
                    # Both cores: the scorer's share, everyone else's (broker, bench, kernel).
                    "scorer_cpu_share": (cpu - last_cpu) / total,
                    "others_cpu_share": (busy - (cpu - last_cpu)) / total,
                    "iowait_share": iowait / total,
                    "page_cache_gib": cached,
                    "dirty_gib": dirty,
                    "partitions_left": sum(committed.get(p, 0) < end for p, end in ends.items()),
                }
            )
            log(
                f"  {million}M: {rows[-1]['tx_per_s']:,.0f} tx/s, "
                f"{rows[-1]['cpu_us_per_message']:.2f} µs CPU/message, "
                f"RSS {rows[-1]['rss_mib']:.0f} MiB, machine busy "
                f"{rows[-1]['scorer_cpu_share']:.0%} scorer + {rows[-1]['others_cpu_share']:.0%}"
                f" others, iowait {rows[-1]['iowait_share']:.0%}, page cache {cached:.1f} GiB, "
                f"{rows[-1]['partitions_left']} of {len(ends)} partitions left"
            )
            last_at, last_cpu, last_machine, last_done = now, cpu, machine, done
    return rows


def markdown(cost: list[dict[str, Any]], long: list[dict[str, Any]]) -> list[str]:
    """The two tables for RESULTS.md."""
    lines = [
        "## Cost per message against batch size and cache-hit share",
        "",
        "Scorer CPU (user + system, `/proc`) per decided message, 1 worker, `--max-batch` as "
        "given; the input is pre-filled, so batches fill to the cap. Redelivered = share of the "
        "input that repeats an earlier transaction (the replayer's `--duplicate-fraction`).",
        "",
        "| max batch | " + " | ".join(f"{s:.0%} redelivered" for s in HIT_SHARES) + " |",
        "|---:|" + "---:|" * len(HIT_SHARES),
    ]
    for batch in BATCH_SIZES:
        cells = []
        for share in HIT_SHARES:
            row = next(r for r in cost if r["max_batch"] == batch and r["redelivered"] == share)
            cells.append(
                f"{row['cpu_us_per_message']:.2f} µs ({row['tx_per_s']:,.0f} tx/s, "
                f"{row['cache_hit_rate']:.0%} hits)"
            )
        lines.append(f"| {batch:,} | " + " | ".join(cells) + " |")
    if long:
        first, last = long[0], long[-1]
        lines += [
            "",
            f"## Long drain: {len(long)}M distinct transactions, 1 worker",
            "",
            "Machine CPU: both cores' time in that million (`/proc/stat`), the scorer's share and "
            "everyone else's (the broker, the bench's reader, the kernel); iowait: cores idle "
            "waiting on the disk. Page cache and dirty (+ writeback) pages from `/proc/meminfo` at "
            "the million's end. Partitions left: of the topic's partitions, those still holding "
            "input at the million's end (card ids are Zipf-distributed, so the keyed partitions "
            "differ in size and the small ones run dry first).",
            "",
            "| million | tx/s | CPU µs/message | scorer RSS MiB | machine CPU: scorer | others "
            "| iowait | page cache GiB | dirty GiB | partitions left |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(
                f"| {r['million']} | {r['tx_per_s']:,.0f} | {r['cpu_us_per_message']:.2f} | "
                f"{r['rss_mib']:.0f} | {r['scorer_cpu_share']:.0%} | {r['others_cpu_share']:.0%} "
                f"| {r['iowait_share']:.0%} | {r['page_cache_gib']:.1f} | {r['dirty_gib']:.2f} "
                f"| {r['partitions_left']} |"
                for r in long
            ),
            "",
            f"First million -> last: throughput {last['tx_per_s'] / first['tx_per_s'] - 1:+.1%}, "
            f"RSS {last['rss_mib'] - first['rss_mib']:+.0f} MiB.",
        ]
    return [*lines, ""]
