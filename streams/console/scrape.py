"""Scrape the scorers' Prometheus endpoints and turn counters into the console's traffic view.

The console asks every scorer's ``/metrics`` once per refresh (what Prometheus would do), keeps a
few minutes of scrapes, and computes rates over a short window the way PromQL's ``rate`` and
``histogram_quantile`` do: per-target counter deltas (a counter that went down means the scorer
restarted, so its current value is the delta), summed across targets; latency quantiles by linear
interpolation inside the histogram bucket that holds the rank. Scraping costs the scorers one HTTP
request per refresh; nothing here touches their hot path.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]  # sample name -> labels -> value
OUTCOMES = ("ALLOW", "REVIEW", "BLOCK")
RATE_WINDOW_S = 5.0
HISTORY_S = 600.0
SERIES_POINTS = 180
LATENCY = "sentinel_end_to_end_latency_seconds"


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by sample name and sorted labels."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = float(sample.value)
    return samples


@dataclass(frozen=True)
class Scrape:
    """One target's answer at one moment (``samples`` empty and ``error`` set when it failed)."""

    url: str
    at: float
    samples: Samples = field(default_factory=dict)
    error: str | None = None


def fetch(url: str, timeout_s: float = 2.0) -> Scrape:
    """GET ``url`` and parse it; never raises (a failed scrape is a Scrape with ``error``)."""
    at = time.time()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", errors="replace")
        return Scrape(url, at, parse_metrics(text))
    except (OSError, urllib.error.URLError, ValueError) as exc:
        return Scrape(url, at, error=f"{type(exc).__name__}: {exc}")


def summed(samples: Samples, name: str, by: Sequence[str] = ()) -> dict[tuple[str, ...], float]:
    """Values of ``name`` summed over every label not in ``by``."""
    out: dict[tuple[str, ...], float] = {}
    for labels, value in samples.get(name, {}).items():
        named = dict(labels)
        key = tuple(named.get(label, "") for label in by)
        out[key] = out.get(key, 0.0) + value
    return out


def counter_delta(
    new: Samples, old: Samples | None, name: str, by: Sequence[str] = ()
) -> dict[tuple[str, ...], float]:
    """Increase of counter ``name`` from ``old`` to ``new`` by ``by`` labels (reset-aware).

    Empty without a baseline (``old`` None): a first scrape says nothing about a rate.
    """
    if old is None:
        return {}
    now = summed(new, name, by)
    before = summed(old, name, by)
    return {
        key: (value - before.get(key, 0.0)) if value >= before.get(key, 0.0) else value
        for key, value in now.items()
    }


def buckets(samples: Samples, name: str) -> dict[float, float]:
    """Cumulative bucket counts of histogram ``name`` (summed over other labels), by bound."""
    out: dict[float, float] = {}
    for labels, value in samples.get(f"{name}_bucket", {}).items():
        bound = float(dict(labels)["le"])
        out[bound] = out.get(bound, 0.0) + value
    return out


def quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """``histogram_quantile``: the q-quantile of cumulative bucket counts; None if empty."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # in the +Inf bucket: the highest finite bound, as Prometheus does
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, count
    return lower


def bucket_delta(new: Mapping[float, float], old: Mapping[float, float]) -> dict[float, float]:
    """Bucket-wise increase (a decrease means a restart: the new counts are the increase)."""
    if any(new.get(b, 0.0) < old.get(b, 0.0) for b in old):
        return dict(new)
    return {bound: count - old.get(bound, 0.0) for bound, count in new.items()}


@dataclass(frozen=True)
class Totals:
    """Fleet-wide cumulative counters at one moment (what the load tester diffs)."""

    at: float
    decisions: float
    latency_buckets: Mapping[float, float]


class TrafficMonitor:
    """Scrapes ``urls`` every ``interval_s`` on its own thread; :meth:`snapshot` is the view.

    Thread-safe: the scraping thread appends, request handlers read under a lock.
    """

    def __init__(self, urls: Iterable[str], interval_s: float = 1.0) -> None:
        self.urls = tuple(urls)
        self.interval_s = interval_s
        self._history: deque[dict[str, Scrape]] = deque(maxlen=int(HISTORY_S / interval_s) + 1)
        self._series: deque[dict[str, float | None]] = deque(maxlen=SERIES_POINTS)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-scrape", daemon=True)

    def start(self) -> None:
        """Start scraping (returns at once)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop scraping; returns within about one scrape timeout."""
        self._stopping.set()
        self._thread.join(5)

    def scrape_once(self) -> None:
        """Scrape every target now and append a point to the series (blocks up to 2 s/target)."""
        scrapes = {url: fetch(url) for url in self.urls}
        with self._lock:
            self._history.append(scrapes)
            point = self._rates_locked()
            self._series.append(
                {"t": time.time(), **point["decisions_per_s"], **point["latency_ms"]}
            )

    def _run(self) -> None:
        while not self._stopping.is_set():
            began = time.monotonic()
            self.scrape_once()
            self._stopping.wait(max(self.interval_s - (time.monotonic() - began), 0.05))

    def totals(self) -> Totals:
        """The fleet's cumulative decision count and latency buckets at the latest scrape."""
        with self._lock:
            latest = self._history[-1] if self._history else {}
        decisions, latency = 0.0, dict[float, float]()
        for scrape in latest.values():
            decisions += sum(summed(scrape.samples, "sentinel_decisions_total").values())
            for bound, count in buckets(scrape.samples, LATENCY).items():
                latency[bound] = latency.get(bound, 0.0) + count
        at = max((s.at for s in latest.values()), default=time.time())
        return Totals(at, decisions, latency)

    def snapshot(self) -> dict[str, Any]:
        """The traffic view (JSON-able): rates over the last few seconds, targets, series."""
        with self._lock:
            view = self._rates_locked()
            view["series"] = list(self._series)
        return view

    def _base_locked(self) -> tuple[dict[str, Scrape], dict[str, Scrape], float]:
        if not self._history:  # before the first scrape: no rates yet (and no division by 0)
            return {}, {}, 1e-9
        latest = self._history[-1]
        newest = max((s.at for s in latest.values()), default=time.time())
        older = self._history[0]
        for scrapes in reversed(self._history):
            if any(newest - s.at >= RATE_WINDOW_S for s in scrapes.values()):
                older = scrapes
                break
        oldest = min((s.at for s in older.values()), default=newest)
        return latest, older, max(newest - oldest, 1e-9)

    def _rates_locked(self) -> dict[str, Any]:
        latest, older, span = self._base_locked()
        outcome: dict[str, float] = dict.fromkeys(OUTCOMES, 0.0)
        variants: dict[tuple[str, str], dict[str, float]] = {}
        dlq_rate: dict[str, float] = {}
        dlq_total: dict[str, float] = {}
        lag: dict[str, float] = {}
        latency: dict[float, float] = {}
        hits = misses = consumed = batch_sum = batch_count = decisions_total = 0.0
        targets = []
        for url, scrape in latest.items():
            before = older.get(url)
            usable = before is not None and before is not scrape and before.error is None
            old = before.samples if usable and before is not None else None
            new = scrape.samples
            for (variant, version, decision), n in counter_delta(
                new, old, "sentinel_decisions_total", ("variant", "model_version", "decision")
            ).items():
                outcome[decision] = outcome.get(decision, 0.0) + n / span
                cell = variants.setdefault((variant, version), {"n": 0.0, "block": 0.0})
                cell["n"] += n
                cell["block"] += n if decision == "BLOCK" else 0.0
            decisions_total += sum(summed(new, "sentinel_decisions_total").values())
            cache = counter_delta(new, old, "sentinel_cache_lookups_total", ("result",))
            hits += cache.get(("hit",), 0.0)
            misses += cache.get(("miss",), 0.0)
            consumed += sum(counter_delta(new, old, "sentinel_consumed_messages_total").values())
            batch_sum += sum(counter_delta(new, old, "sentinel_batch_size_messages_sum").values())
            batch_count += sum(
                counter_delta(new, old, "sentinel_batch_size_messages_count").values()
            )
            for (reason,), n in counter_delta(
                new, old, "sentinel_dlq_messages_total", ("reason",)
            ).items():
                dlq_rate[reason] = dlq_rate.get(reason, 0.0) + n / span
            for (reason,), n in summed(new, "sentinel_dlq_messages_total", ("reason",)).items():
                dlq_total[reason] = dlq_total.get(reason, 0.0) + n
            for (partition,), n in summed(
                new, "sentinel_consumer_lag_messages", ("partition",)
            ).items():
                lag[partition] = max(lag.get(partition, 0.0), n)
            if old is not None:
                for bound, n in bucket_delta(buckets(new, LATENCY), buckets(old, LATENCY)).items():
                    latency[bound] = latency.get(bound, 0.0) + n
            models = [
                dict(labels)
                for labels, value in new.get("sentinel_model_info", {}).items()
                if value > 0
            ]
            split = summed(new, "sentinel_ab_split_percent").get((), None)
            targets.append(
                {
                    "url": url,
                    "up": scrape.error is None,
                    "error": scrape.error,
                    "models": sorted(models, key=lambda m: m.get("variant", "")),
                    "split": split,
                }
            )

        def ms(q: float) -> float | None:
            value = quantile(q, latency)
            return None if value is None else round(value * 1000, 3)

        total_rate = sum(outcome.values())
        return {
            "window_s": round(span, 2),
            "targets": targets,
            "decisions_per_s": {
                **{k: round(v, 1) for k, v in outcome.items()},
                "total": round(total_rate, 1),
            },
            "decisions_total": int(decisions_total),
            "consumed_per_s": round(consumed / span, 1),
            "latency_ms": {"p50": ms(0.5), "p95": ms(0.95), "p99": ms(0.99)},
            # A quantile in the +Inf bucket reads as this bound: the page shows it as ">=".
            "latency_top_ms": max((b for b in latency if not math.isinf(b)), default=0.0) * 1000,
            "cache_hit_rate": hits / (hits + misses) if hits + misses else None,
            "batch_size_mean": batch_sum / batch_count if batch_count else None,
            "lag": dict(sorted(lag.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)),
            "dlq_per_s": {k: round(v, 2) for k, v in sorted(dlq_rate.items())},
            "dlq_total": {k: int(v) for k, v in sorted(dlq_total.items())},
            "variants": [
                {
                    "variant": variant,
                    "model_version": version,
                    "per_s": round(cell["n"] / span, 1),
                    "block_rate": cell["block"] / cell["n"] if cell["n"] else None,
                }
                for (variant, version), cell in sorted(variants.items())
            ],
        }


def latency_quantiles_ms(
    new: Mapping[float, float], old: Mapping[float, float]
) -> dict[str, float | None]:
    """p50/p95/p99 in ms of the latencies observed between two bucket snapshots."""
    delta = bucket_delta(new, old)
    out: dict[str, float | None] = {}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        value = quantile(q, delta)
        out[name] = None if value is None else round(value * 1000, 3)
    return out
