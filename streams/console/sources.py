"""The console's view of the product's topics: one assign-based consumer, one thread.

The console reads ``control-events``, ``drift``, ``transactions-dlq`` and ``decisions`` as its own
consumer (a group id of its own that is never joined: partitions are assigned and nothing is
committed), so it takes nothing from the scorers' group and changes no offset anyone relies on.
Where it starts: control-events from ten minutes ago (heartbeats come every few seconds), drift
and the DLQ from their last few hundred records, decisions at their end.

Decisions are the heavy topic. The console samples them: each second it reads and decodes at
most :data:`DECODE_PER_S`, then pauses the decisions partitions and, when the second is over,
jumps to their end and resumes, so under a burst the rest are never even fetched. It keeps the
last 30 s of that sample for the A/B panel's per-variant card share, block rate and score
distribution; exact rates come from the scorers' metrics (``streams.console.scrape``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, Message, TopicPartition

from schemas.confluent import WriterLookup
from schemas.decision_codec import decode_decision
from schemas.drift_codec import DriftSnapshot, decode_snapshot
from schemas.errors import PoisonMessage, SchemaError, SchemaRegistryUnavailable
from schemas.features import FEATURE_NAMES
from streams.config import KafkaSettings, TopicNames
from streams.control.client import COMPARED, LIVE_WINDOW_S
from streams.drift.monitor import merge_snapshots

log = logging.getLogger(__name__)

DECODE_PER_S = 1_000
SAMPLE_WINDOW_S = 30.0
EVENTS_LOOKBACK_S = 600.0
DRIFT_TAIL = 500
DLQ_TAIL = 300
DLQ_KEPT = 100
ACKS_KEPT = 200
PREVIEW_BYTES = 64
SCORE_BINS = 20


@dataclass(frozen=True)
class DecisionSample:
    """The fields of one sampled decision that the A/B panel needs."""

    at: float
    variant: str
    model_version: str
    decision: str
    probability: float
    card_id: str


class TopicFollower:
    """Follows the four topics on a daemon thread; the ``*_view`` methods are thread-safe."""

    def __init__(
        self, settings: KafkaSettings, topics: TopicNames, registry: WriterLookup | None = None
    ) -> None:
        self.topics = topics
        self._registry = registry  # for Confluent-framed decisions and drift
        self._consumer = Consumer(
            settings.client_config(
                {
                    "group.id": f"sentinel-console-{uuid.uuid4().hex[:12]}",  # never joined
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "latest",
                    "client.id": "sentinel-console",
                }
            )
        )
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-topics", daemon=True)
        self.error: str | None = None
        # control-events
        self._latest: dict[str, dict[str, Any]] = {}
        self._stats: dict[str, object] = {}  # acks carry no stats: keep the last heartbeat's
        self._acks: deque[dict[str, Any]] = deque(maxlen=ACKS_KEPT)
        # drift: latest snapshot per (model version, scorer), and the latest with enough rows
        self._drift_latest: dict[tuple[str, str], DriftSnapshot] = {}
        self._drift_full: dict[tuple[str, str], DriftSnapshot] = {}
        # dlq
        self._dlq: deque[dict[str, Any]] = deque(maxlen=DLQ_KEPT)
        self._dlq_kinds: Counter[str] = Counter()
        self._dlq_read = 0
        # decisions
        self._samples: deque[DecisionSample] = deque()
        self._decisions_seen = 0
        self._decoded = 0
        self._decision_partitions: list[TopicPartition] = []
        self._window_start = time.monotonic()
        self._window_taken = 0
        self._paused = False

    def start(self) -> None:
        """Assign the partitions (blocks up to ~15 s on metadata) and start following."""
        self._consumer.assign(self._positions())
        self._thread.start()

    def stop(self) -> None:
        """Stop following and close the consumer (commits nothing)."""
        self._stopping.set()
        self._thread.join(10)
        self._consumer.close()

    @property
    def alive(self) -> bool:
        """The following thread is running."""
        return self._thread.is_alive()

    def _positions(self) -> list[TopicPartition]:
        consumer = self._consumer
        metadata = consumer.list_topics(timeout=15).topics
        positions: list[TopicPartition] = []
        topics = self.topics
        for topic in (topics.control_events, topics.drift, topics.dlq, topics.decisions):
            info = metadata.get(topic)
            if info is None or info.error is not None:
                log.warning("console: topic %s does not exist (yet); not shown", topic)
                continue
            for partition in sorted(info.partitions):
                tp = TopicPartition(topic, partition)
                low, high = consumer.get_watermark_offsets(tp, timeout=15)
                if topic == topics.control_events:
                    since = int((time.time() - EVENTS_LOOKBACK_S) * 1000)
                    found = consumer.offsets_for_times([TopicPartition(topic, partition, since)])
                    start = found[0].offset if found[0].offset >= 0 else high
                elif topic == topics.drift:
                    start = max(low, high - DRIFT_TAIL)
                elif topic == topics.dlq:
                    start = max(low, high - DLQ_TAIL)
                else:
                    start = OFFSET_END
                    self._decision_partitions.append(TopicPartition(topic, partition))
                positions.append(TopicPartition(topic, partition, start))
        return positions

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self._paused and time.monotonic() - self._window_start >= 1.0:
                self._skip_to_end()
            try:
                messages = self._consumer.consume(500, timeout=0.2)
            except KafkaException as exc:
                self.error = str(exc)
                log.warning("console: reading topics: %s", exc)
                time.sleep(1)
                continue
            for message in messages:
                if message.error() is not None:
                    continue
                topic = message.topic()
                if topic == self.topics.decisions:
                    self._on_decision(message)
                elif topic == self.topics.control_events:
                    self._on_event(message)
                elif topic == self.topics.drift:
                    self._on_drift(message)
                elif topic == self.topics.dlq:
                    self._on_dlq(message)

    # -- handlers (consumer thread) -------------------------------------------------------

    def _on_event(self, message: Message) -> None:
        try:
            event = json.loads(message.value() or b"")
        except ValueError:
            return  # not a scorer's event; control-events carries only JSON from scorers
        if not isinstance(event, dict) or not isinstance(event.get("scorer_id"), str):
            return
        with self._lock:
            self._latest[event["scorer_id"]] = event
            if isinstance(event.get("stats"), dict):
                self._stats[event["scorer_id"]] = event["stats"]
            if event.get("type") == "ack":
                self._acks.append(event)

    def _on_drift(self, message: Message) -> None:
        try:
            snapshot = decode_snapshot(message.value() or b"", self._registry)
        except (SchemaError, SchemaRegistryUnavailable) as exc:
            log.warning("console: drift offset %s: %s", message.offset(), exc)
            return
        key = (snapshot.model_version, snapshot.scorer_id)
        with self._lock:
            self._drift_latest[key] = snapshot
            if snapshot.count >= snapshot.min_count:
                self._drift_full[key] = snapshot

    def _on_dlq(self, message: Message) -> None:
        raw = message.headers() or []  # a consumed message's headers are a list of pairs
        pairs = raw.items() if isinstance(raw, dict) else raw
        headers = {
            name: value.decode("utf-8", errors="replace")
            if isinstance(value, bytes)
            else str(value)
            for name, value in pairs
        }
        value = message.value() or b""
        head = value[:PREVIEW_BYTES]
        kind = headers.get("sentinel.error.kind", "?")
        record: dict[str, Any] = {
            "kind": kind,
            "reason": headers.get("sentinel.error.reason", ""),
            "source_topic": headers.get("sentinel.source.topic"),
            "source_partition": _int(headers.get("sentinel.source.partition")),
            "source_offset": _int(headers.get("sentinel.source.offset")),
            "scorer_id": headers.get("sentinel.scorer.id"),
            "failed_at_ms": _int(headers.get("sentinel.failed.at")),
            "dlq_partition": message.partition(),
            "dlq_offset": message.offset(),
            "key": (message.key() or b"").decode("utf-8", errors="replace"),
            "size": len(value),
            "hex": head.hex(" "),
            "text": "".join(chr(b) if 32 <= b < 127 else "." for b in head),
        }
        with self._lock:
            self._dlq.appendleft(record)
            self._dlq_kinds[kind] += 1
            self._dlq_read += 1

    def _skip_to_end(self) -> None:
        """A new sampling second: jump the paused decisions partitions to their end, resume."""
        for tp in self._decision_partitions:
            try:
                self._consumer.seek(TopicPartition(tp.topic, tp.partition, OFFSET_END))
            except KafkaException as exc:  # not fetched yet: it resumes where it was
                log.info("console: cannot skip %s[%d] to its end: %s", tp.topic, tp.partition, exc)
        self._consumer.resume(self._decision_partitions)
        self._paused = False
        self._window_start, self._window_taken = time.monotonic(), 0

    def _on_decision(self, message: Message) -> None:
        now = time.monotonic()
        with self._lock:
            self._decisions_seen += 1
        if now - self._window_start >= 1.0 and not self._paused:
            self._window_start, self._window_taken = now, 0
        if self._window_taken >= DECODE_PER_S:
            if not self._paused:
                self._consumer.pause(self._decision_partitions)
                self._paused = True
            return
        self._window_taken += 1
        try:
            d = decode_decision(message.value() or b"", self._registry)
        except (PoisonMessage, SchemaRegistryUnavailable):  # a sample less, never a dead thread
            return
        sample = DecisionSample(
            time.time(),
            str(d["variant"]),
            str(d["model_version"]),
            str(d["decision"]),
            float(d["fraud_probability"]),
            str(d["card_id"]),
        )
        with self._lock:
            self._decoded += 1
            self._samples.append(sample)
            horizon = sample.at - SAMPLE_WINDOW_S
            while self._samples and self._samples[0].at < horizon:
                self._samples.popleft()

    # -- views (any thread) ---------------------------------------------------------------

    def fleet_view(self) -> dict[str, Any]:
        """Every instance seen in the last ten minutes, its state, liveness and divergence."""
        now = time.time()
        with self._lock:
            latest = {k: dict(v) for k, v in self._latest.items()}
            stats = dict(self._stats)
        instances: list[dict[str, Any]] = []
        for scorer_id, event in sorted(latest.items()):
            age = now - _event_time(event)
            status = (
                "stopped"
                if event.get("type") == "stopped"
                else ("live" if age <= LIVE_WINDOW_S else "silent")
            )
            state = event.get("state") if isinstance(event.get("state"), dict) else {}
            instances.append(
                {
                    "scorer_id": scorer_id,
                    "status": status,
                    "last_event": event.get("type"),
                    "last_seen": event.get("time"),
                    "age_s": round(age, 1),
                    "state": state,
                    "decisions": _count_stats(stats.get(scorer_id)),
                }
            )
        live = [i for i in instances if i["status"] == "live"]
        keys = Counter(_state_key(i["state"]) for i in live)
        majority = keys.most_common(1)[0][0] if keys else None
        for instance in instances:
            instance["diverged"] = (
                instance["status"] == "live"
                and len(keys) > 1
                and _state_key(instance["state"]) != majority
            )
        return {
            "instances": instances,
            "live": len(live),
            "divergent": len(keys) > 1,
            "state": dict(_state_dict(majority)) if majority is not None else None,
        }

    def acks_of(self, command_id: str) -> list[dict[str, Any]]:
        """Acks seen for ``command_id`` (most recent first)."""
        with self._lock:
            return [a for a in reversed(self._acks) if a.get("command_id") == command_id]

    def recent_acks(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest acks of live commands (replayed ones left out), newest first."""
        with self._lock:
            acks = [a for a in reversed(self._acks) if not a.get("replayed")]
        return acks[:limit]

    def drift_view(self, variants: Mapping[str, str]) -> dict[str, Any]:
        """Per model version: every instance's latest full window (>= min_count rows, else its
        latest) merged exactly; ``variants`` maps a version to the variant serving it."""
        with self._lock:
            chosen: dict[tuple[str, str], DriftSnapshot] = dict(self._drift_latest)
            chosen.update(self._drift_full)
        by_version: dict[str, list[DriftSnapshot]] = {}
        for (version, _), snapshot in chosen.items():
            by_version.setdefault(version, []).append(snapshot)
        versions: list[dict[str, Any]] = []
        for version, snapshots in by_version.items():
            merged = merge_snapshots(snapshots)
            order = {name: i for i, name in enumerate(FEATURE_NAMES)}
            features = sorted(merged.features, key=lambda f: order.get(f.name, len(order)))
            p = merged.prediction
            versions.append(
                {
                    "model_version": version,
                    "variant": variants.get(version),
                    "instances": sorted({s.scorer_id for s in snapshots}),
                    "count": merged.count,
                    "window_start_ms": merged.window_start_ms,
                    "window_end_ms": merged.window_end_ms,
                    "psi_threshold": merged.psi_threshold,
                    "z_threshold": merged.z_threshold,
                    "min_count": merged.min_count,
                    "drifted": merged.drifted,
                    "drifted_features": list(merged.drifted_features),
                    "features": [
                        {
                            "name": f.name,
                            "psi": _finite(f.psi),
                            "z": _finite(f.z_score),
                            "mean": _finite(f.mean),
                            "baseline_mean": _finite(f.baseline_mean),
                            "drifted": f.drifted,
                        }
                        for f in features
                    ],
                    "prediction": {
                        "psi": _finite(p.psi),
                        "mean": _finite(p.mean),
                        "baseline_mean": _finite(p.baseline_mean),
                        "drifted": p.drifted,
                        "share_above_threshold": _finite(p.share_above_threshold),
                    },
                }
            )
        versions.sort(key=lambda v: -int(v["window_end_ms"]))
        return {"versions": versions}

    def dlq_view(self, limit: int = 50) -> dict[str, Any]:
        """The latest poison messages (newest first) and counts by kind of those read."""
        with self._lock:
            return {
                "latest": list(self._dlq)[:limit],
                "by_kind": dict(self._dlq_kinds.most_common()),
                "read": self._dlq_read,
            }

    def ab_view(self) -> dict[str, Any]:
        """Per variant/version in the last 30 s of decoded sample: decisions, card share, block
        rate and a histogram of fraud probability (20 bins over [0, 1])."""
        with self._lock:
            samples = list(self._samples)
            seen, decoded = self._decisions_seen, self._decoded
        cards_all = {s.card_id for s in samples}
        groups: dict[tuple[str, str], list[DecisionSample]] = {}
        for s in samples:
            groups.setdefault((s.variant, s.model_version), []).append(s)
        variants = []
        for (variant, version), rows in sorted(groups.items()):
            histogram = [0] * SCORE_BINS
            for s in rows:
                histogram[min(int(s.probability * SCORE_BINS), SCORE_BINS - 1)] += 1
            cards = {s.card_id for s in rows}
            variants.append(
                {
                    "variant": variant,
                    "model_version": version,
                    "decisions": len(rows),
                    "share_of_decisions": len(rows) / len(samples),
                    "cards": len(cards),
                    "share_of_cards": len(cards) / len(cards_all),
                    "block_rate": sum(s.decision == "BLOCK" for s in rows) / len(rows),
                    "score_histogram": histogram,
                }
            )
        return {
            "sample_window_s": SAMPLE_WINDOW_S,
            "sampled": len(samples),
            "decisions_seen": seen,
            "decoded": decoded,
            "variants": variants,
        }

    def clear_sample(self) -> None:
        """Forget the decision sample (after a split change, so shares describe the new split)."""
        with self._lock:
            self._samples.clear()


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _finite(value: float) -> float | None:
    return value if value == value and abs(value) != float("inf") else None


def _event_time(event: Mapping[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(event.get("time"))).timestamp()
    except ValueError:
        return 0.0


STATE_FIELDS = (*COMPARED, "applied_offset")  # what live instances must agree on


def _state_key(state: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(state.get(name) for name in STATE_FIELDS)


def _state_dict(key: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(STATE_FIELDS, key, strict=True))


def _count_stats(stats: object) -> dict[str, int]:
    """``{"A/v1": n, ...}`` from a heartbeat's ``variant/version/outcome`` counts."""
    out: dict[str, int] = {}
    if isinstance(stats, dict):
        for key, count in stats.items():
            parts = str(key).split("/")
            if len(parts) == 3 and isinstance(count, int):
                label = f"{parts[0]}/{parts[1]}"
                out[label] = out.get(label, 0) + count
    return out
