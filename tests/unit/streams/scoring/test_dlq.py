"""The DLQ guard stops a flood of poison loudly; DLQ records say what went wrong and where."""

from __future__ import annotations

import pytest

from schemas.errors import ConfigError, DlqLimitExceeded, PoisonMessage
from streams.scoring.dlq import DlqGuard, DlqLimit, dlq_headers


def trips(guard: DlqGuard, total: int, bad: int) -> bool:
    """Feed one batch; True if the guard raised."""
    try:
        guard.check(total, bad)
    except DlqLimitExceeded:
        return True
    return False


def test_a_window_that_is_not_yet_full_never_trips() -> None:
    guard = DlqGuard(DlqLimit(max_share=0.5, window_messages=100))
    assert [trips(guard, 10, 10) for _ in range(9)] == [False] * 9
    assert trips(guard, 10, 10)  # 100 messages seen, all poison


def test_it_trips_only_when_the_poison_share_exceeds_the_limit() -> None:
    at_limit = DlqGuard(DlqLimit(max_share=0.5, window_messages=100))
    assert [trips(at_limit, 10, 5) for _ in range(20)] == [False] * 20

    over = DlqGuard(DlqLimit(max_share=0.5, window_messages=100))
    outcomes = [trips(over, 10, 5) for _ in range(9)] + [trips(over, 10, 6)]
    assert outcomes == [False] * 9 + [True]  # 51 of 100


def test_one_big_batch_fills_the_window_by_itself() -> None:
    guard = DlqGuard(DlqLimit(max_share=0.25, window_messages=100))
    assert not trips(guard, 500, 100)
    assert trips(guard, 500, 200)  # the first batch left the window: 200 of 500 > 25%


def test_it_recovers_as_good_batches_push_the_poison_out_of_the_window() -> None:
    guard = DlqGuard(DlqLimit(max_share=0.5, window_messages=100))
    assert [trips(guard, 10, 10) for _ in range(10)] == [False] * 9 + [True]
    # Each good batch of 10 pushes the oldest batch of 10 out of the window.
    # Poison 90, 80, 70, 60 of the last 100 still trip; 50 does not.
    assert [trips(guard, 10, 0) for _ in range(5)] == [True] * 4 + [False]
    assert not trips(guard, 10, 0)


def test_the_error_says_how_bad_it_is_and_what_to_do() -> None:
    guard = DlqGuard(DlqLimit(max_share=0.2, window_messages=10))
    with pytest.raises(DlqLimitExceeded) as raised:
        guard.check(10, 7)
    message = str(raised.value)
    assert "7 of the last 10 messages were poison" in message
    assert "20%" in message
    assert "Fix the producer, then restart" in message


@pytest.mark.parametrize(
    ("max_share", "window"),
    [(0.0, 100), (-0.1, 100), (1.01, 100), (float("nan"), 100), (0.5, 0), (0.5, -3)],
)
def test_a_dlq_limit_out_of_range_is_a_config_error(max_share: float, window: int) -> None:
    with pytest.raises(ConfigError, match="DLQ"):
        DlqLimit(max_share=max_share, window_messages=window)


def test_a_share_of_one_never_trips() -> None:
    guard = DlqGuard(DlqLimit(max_share=1.0, window_messages=1))
    assert not trips(guard, 50, 50)


POISON = PoisonMessage("not_finite", "V4 is nan (not finite)")
WHERE = {
    "topic": "transactions",
    "partition": 3,
    "offset": 4711,
    "scorer_id": "scorer-a",
    "failed_at_ms": 1_700_000_000_123,
}
SENTINEL_HEADERS = [
    ("sentinel.error.kind", b"not_finite"),
    ("sentinel.error.reason", b"V4 is nan (not finite)"),
    ("sentinel.source.topic", b"transactions"),
    ("sentinel.source.partition", b"3"),
    ("sentinel.source.offset", b"4711"),
    ("sentinel.scorer.id", b"scorer-a"),
    ("sentinel.failed.at", b"1700000000123"),
]


def test_dlq_headers_keep_the_original_list_first_then_say_what_and_where() -> None:
    original = [("traceparent", b"00-abc-01"), ("content-type", "application/json"), ("x", None)]
    headers = dlq_headers(POISON, original=original, **WHERE)  # type: ignore[arg-type]
    assert headers == [*original, *SENTINEL_HEADERS]


def test_dlq_headers_accept_the_original_headers_as_a_dict() -> None:
    original = {"traceparent": b"00-abc-01", "retries": "2"}
    headers = dlq_headers(POISON, original=original, **WHERE)  # type: ignore[arg-type]
    assert headers == [("traceparent", b"00-abc-01"), ("retries", "2"), *SENTINEL_HEADERS]


def test_dlq_headers_without_original_headers() -> None:
    assert dlq_headers(POISON, original=None, **WHERE) == SENTINEL_HEADERS  # type: ignore[arg-type]


def test_a_long_reason_is_cut_to_one_kilobyte() -> None:
    poison = PoisonMessage("undecodable", "x" * 5000)
    headers = dict(dlq_headers(poison, original=None, **WHERE))  # type: ignore[arg-type]
    assert headers["sentinel.error.reason"] == b"x" * 1024
