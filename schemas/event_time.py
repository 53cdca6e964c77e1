"""Which event times the scorer believes: a window around its own clock.

A transaction's ``event_time`` (epoch milliseconds) is where end-to-end latency is measured from.
A value far in the past or future (0, -1, the year 10000, +-2**63) is corrupt input, not a late
or early payment: scored, it would poison the latency histogram and the decision's
``latency_ms``. The scorer refuses such rows as ``absurd_value`` before scoring. Inside the
window, ``latency_ms`` is bounded by ``[-max_ahead_ms, max_age_ms]``: a negative latency is at
most the tolerated clock skew between producer and scorer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from schemas.errors import ConfigError

DEFAULT_MAX_AGE_MS: Final[int] = 7 * 24 * 3600 * 1000  # a week: replays of recent traffic pass
DEFAULT_MAX_AHEAD_MS: Final[int] = 5 * 60 * 1000  # five minutes of producer clock skew
_LIMIT_MS: Final[int] = 100 * 365 * 24 * 3600 * 1000  # a century: keeps the bounds in int64


@dataclass(frozen=True)
class EventTimeWindow:
    """Event times older than ``max_age_ms`` or more than ``max_ahead_ms`` ahead of the scorer's
    clock are refused. Raises ConfigError for a negative or over-a-century bound."""

    max_age_ms: int = DEFAULT_MAX_AGE_MS
    max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS

    def __post_init__(self) -> None:
        for name, value in (("max age", self.max_age_ms), ("max ahead", self.max_ahead_ms)):
            if not 0 <= value <= _LIMIT_MS:
                raise ConfigError(
                    f"event time {name} must be within 0..{_LIMIT_MS} ms, got {value}"
                )

    def outside(self, event_time_ms: npt.NDArray[np.int64], now_ms: int) -> npt.NDArray[np.bool_]:
        """Mask of the event times outside the window around ``now_ms`` (vectorised, no overflow:
        the bounds are computed on Python ints and compared, never subtracted per row)."""
        oldest = max(now_ms - self.max_age_ms, -(2**63))
        newest = min(now_ms + self.max_ahead_ms, 2**63 - 1)
        return (event_time_ms < oldest) | (event_time_ms > newest)

    def reason(self, event_time_ms: int, now_ms: int) -> str:
        """Why one event time was refused, in words."""
        ahead = event_time_ms - now_ms
        if ahead > 0:
            return (
                f"event_time={event_time_ms} is {ahead} ms ahead of the scorer's clock "
                f"(limit {self.max_ahead_ms} ms)"
            )
        return (
            f"event_time={event_time_ms} is {-ahead} ms older than the scorer's clock "
            f"(limit {self.max_age_ms} ms)"
        )
