"""Poison messages: route them to the dead-letter topic with their original bytes, and stop
loudly when too many arrive (a bad deploy upstream must not drain a whole topic into the DLQ)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from schemas.errors import ConfigError, DlqLimitExceeded, PoisonMessage

Header = tuple[str, str | bytes | None]


@dataclass(frozen=True)
class DlqLimit:
    """Stop when more than ``max_share`` of the last ``window_messages`` messages were poison."""

    max_share: float = 0.5
    window_messages: int = 1_000

    def __post_init__(self) -> None:
        if not 0 < self.max_share <= 1:
            raise ConfigError(f"DLQ max share must be in (0, 1], got {self.max_share}")
        if self.window_messages < 1:
            raise ConfigError(f"DLQ window must be >= 1 message, got {self.window_messages}")


class DlqGuard:
    """Rolling count of good and poison messages over about the last ``window_messages``."""

    def __init__(self, limit: DlqLimit) -> None:
        self.limit = limit
        self._batches: deque[tuple[int, int]] = deque()
        self._total = 0
        self._bad = 0

    def check(self, total: int, bad: int) -> None:
        """Account for one batch; raise :class:`DlqLimitExceeded` if the share is over the limit.

        Called before the batch's records are produced, so a tripping batch is never committed.
        """
        self._batches.append((total, bad))
        self._total += total
        self._bad += bad
        while self._batches and self._total - self._batches[0][0] >= self.limit.window_messages:
            old_total, old_bad = self._batches.popleft()
            self._total -= old_total
            self._bad -= old_bad
        if self._total >= self.limit.window_messages and self._bad > self.limit.max_share * (
            self._total
        ):
            raise DlqLimitExceeded(
                f"{self._bad} of the last {self._total} messages were poison "
                f"(limit {self.limit.max_share:.0%}); stopping instead of draining the topic "
                "into the DLQ. Fix the producer, then restart: nothing was committed past "
                "the last good batch."
            )


def dlq_headers(
    poison: PoisonMessage,
    *,
    topic: str,
    partition: int,
    offset: int,
    scorer_id: str,
    failed_at_ms: int,
    original: list[Header] | dict[str, str | bytes | None] | None,
) -> list[Header]:
    """The headers of a DLQ record: the original ones first, then what went wrong and where."""
    headers: list[Header] = list(original.items() if isinstance(original, dict) else original or [])
    headers += [
        ("sentinel.error.kind", poison.kind.encode()),
        ("sentinel.error.reason", poison.reason.encode()[:1024]),
        ("sentinel.source.topic", topic.encode()),
        ("sentinel.source.partition", str(partition).encode()),
        ("sentinel.source.offset", str(offset).encode()),
        ("sentinel.scorer.id", scorer_id.encode()),
        ("sentinel.failed.at", str(failed_at_ms).encode()),
    ]
    return headers
