"""The console's load tester: replay N transactions at R tx/s through ``streams.tools.replayer``
on a background thread, report progress, then what the fleet did with them (from the scorers'
metrics: decisions counted and end-to-end latency between the start and the end of the run).

One run at a time. The replay source is loaded once, on the first run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import KafkaException

from schemas.errors import ConfigError, SentinelError
from schemas.manifest import read_manifest
from schemas.models_dir import current_version
from streams.config import KafkaSettings
from streams.console.scrape import Totals, latency_quantiles_ms
from streams.tools.replayer import ReplayOptions, load_csv, replay
from streams.tools.shift import apply_shifts, parse_shift_spec, stds_from_baseline

log = logging.getLogger(__name__)

MAX_COUNT = 2_000_000
MAX_RATE = 200_000.0
MAX_BAD_FRACTION = 0.5
SETTLE_TIMEOUT_S = 60.0


class LoadTestBusy(SentinelError):
    """A load test is already running."""


@dataclass(frozen=True)
class LoadRequest:
    """One load test: ``count`` transactions at ``rate`` tx/s (0 = as fast as possible), a share
    ``bad_fraction`` malformed, and an optional drift spec (``V14=+1.5sd``).

    ConfigError names the first bad value.
    """

    count: int
    rate: float = 0.0
    bad_fraction: float = 0.0
    drift: str | None = None
    seed: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_COUNT:
            raise ConfigError(f"count must be 1-{MAX_COUNT:,}, got {self.count}")
        if not 0 <= self.rate <= MAX_RATE:
            raise ConfigError(f"rate must be 0-{MAX_RATE:,.0f} tx/s, got {self.rate}")
        if not 0 <= self.bad_fraction <= MAX_BAD_FRACTION:
            raise ConfigError(
                f"bad_fraction must be 0-{MAX_BAD_FRACTION}, got {self.bad_fraction} (the "
                "scorers stop when more than half of recent messages are poison)"
            )
        if self.drift:
            parse_shift_spec(self.drift)  # ConfigError names the bad part


class LoadTester:
    """Runs :class:`LoadRequest` s one at a time; :meth:`view` is thread-safe."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        source: Path | None,
        models_dir: Path,
        totals: Callable[[], Totals],
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._source = source
        self._models_dir = models_dir
        self._totals = totals
        self._lock = threading.Lock()
        self._data: tuple[npt.NDArray[np.float64], npt.NDArray[np.int8] | None] | None = None
        self._run: dict[str, Any] = {"status": "idle", "run": 0}
        self._runs = 0
        self._thread: threading.Thread | None = None

    def start(self, request: LoadRequest) -> dict[str, Any]:
        """Start ``request`` on a thread; LoadTestBusy if one runs, ConfigError if the replay
        source is missing or the drift spec cannot be applied. Returns the run's view."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise LoadTestBusy("a load test is already running; wait for it to finish")
            shift = self._shift(request.drift)
            if self._source is None or not self._source.exists():
                raise ConfigError(
                    f"no replay data at {self._source}: start the console with --replay-csv, "
                    "or make one with 'sentinel data synth --out data/synthetic.csv'"
                )
            self._runs += 1
            self._run = {
                "run": self._runs,
                "status": "loading" if self._data is None else "running",
                "request": {
                    "count": request.count,
                    "rate": request.rate,
                    "bad_fraction": request.bad_fraction,
                    "drift": request.drift,
                },
                "sent": 0,
                "total": request.count,
                "started_at": time.time(),
            }
            self._thread = threading.Thread(
                target=self._execute, args=(request, shift), name="console-load", daemon=True
            )
            self._thread.start()
            return dict(self._run)

    def view(self) -> dict[str, Any]:
        """The current or last run: status (idle/loading/running/settling/done/failed),
        progress, and when done the replay's and the fleet's figures."""
        with self._lock:
            return dict(self._run)

    def _shift(
        self, spec: str | None
    ) -> Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]] | None:
        if not spec:
            return None
        shifts = parse_shift_spec(spec)
        try:
            baseline = read_manifest(self._models_dir, current_version(self._models_dir))
        except SentinelError as exc:
            raise ConfigError(f"drift {spec}: no baseline to shift by ({exc})") from None
        stds = stds_from_baseline(baseline.drift_baseline)

        def shifted(matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            return np.asarray(apply_shifts(matrix, shifts, stds), dtype=np.float64)

        shifted(np.zeros((1, 29)))  # fail now (ConfigError) rather than on the thread
        return shifted

    def _update(self, **fields: Any) -> None:
        with self._lock:
            self._run.update(fields)

    def _execute(
        self,
        request: LoadRequest,
        shift: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]] | None,
    ) -> None:
        try:
            if self._data is None:
                assert self._source is not None
                self._data = load_csv(self._source)
            features, labels = self._data
            self._update(status="running")
            before = self._totals()
            began = time.time()
            options = ReplayOptions(
                count=request.count,
                rate=request.rate,
                bad_fraction=request.bad_fraction,
                seed=request.seed,
                shift=shift,
            )
            result = replay(
                self._settings,
                self._topic,
                features,
                labels,
                options,
                on_progress=lambda sent, total: self._update(sent=sent),
            )
            self._update(
                status="settling",
                sent=result.sent,
                replay={
                    "sent": result.sent,
                    "good": result.good,
                    "malformed": result.bad,
                    "seconds": round(result.seconds, 3),
                    "tx_per_s": round(result.sent / max(result.seconds, 1e-9), 1),
                },
            )
            expected = result.sent - result.bad
            after = self._settle(before, expected)
            decided = after.decisions - before.decisions
            span = max(after.at - began, 1e-9)
            self._update(
                status="done",
                finished_at=time.time(),
                fleet={
                    "decisions": int(decided),
                    "expected": expected,
                    "decisions_per_s": round(decided / span, 1),
                    "latency_ms": latency_quantiles_ms(
                        after.latency_buckets, before.latency_buckets
                    ),
                    "latency_top_ms": max(
                        (b for b in after.latency_buckets if b != float("inf")), default=0.0
                    )
                    * 1000,
                },
            )
        except (SentinelError, KafkaException, OSError, ValueError) as exc:
            log.warning("console load test failed: %s", exc)
            self._update(status="failed", error=str(exc), finished_at=time.time())

    def _settle(self, before: Totals, expected: int) -> Totals:
        """Wait until the metrics count ``expected`` more decisions (or a minute passed)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            now = self._totals()
            if now.decisions - before.decisions >= expected or time.monotonic() > deadline:
                return now
            time.sleep(0.5)


def parse_load_request(body: Mapping[str, Any]) -> LoadRequest:
    """A LoadRequest from a JSON body; ConfigError on unknown fields or wrong types."""
    allowed = {"count", "rate", "bad_fraction", "drift", "seed"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ConfigError(f"unknown field(s): {', '.join(unknown)} (expected {sorted(allowed)})")
    if "count" not in body:
        raise ConfigError("missing field: count")
    count, seed = body["count"], body.get("seed", 1)
    if isinstance(count, bool) or not isinstance(count, int):
        raise ConfigError(f"count must be an integer, got {count!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    numbers = {}
    for name in ("rate", "bad_fraction"):
        value = body.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        numbers[name] = float(value)
    drift = body.get("drift")
    if drift is not None and not isinstance(drift, str):
        raise ConfigError(f"drift must be a string like 'V14=+1.5sd', got {drift!r}")
    return LoadRequest(count=count, drift=drift or None, seed=seed, **numbers)
