"""`sentinel score` flags: the event-time window reaches the scorer's config, from flags or env."""

from __future__ import annotations

import pytest

from streams.cli import build_parser
from streams.cli.score import build_config


def test_the_event_time_window_defaults_to_a_week_back_and_five_minutes_ahead() -> None:
    args = build_parser().parse_args(["score", "--bootstrap-servers=localhost:9092"])
    window = build_config(args, "scorer-1").event_time_window
    assert (window.max_age_ms, window.max_ahead_ms) == (7 * 24 * 3600 * 1000, 300_000)


def test_flags_and_environment_set_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_MAX_EVENT_AHEAD_S", "2.5")
    args = build_parser().parse_args(
        ["score", "--bootstrap-servers=localhost:9092", "--max-event-age-s=3600"]
    )
    window = build_config(args, "scorer-1").event_time_window
    assert (window.max_age_ms, window.max_ahead_ms) == (3_600_000, 2_500)


def test_an_invalid_environment_value_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SENTINEL_MAX_EVENT_AGE_S", "-1")
    with pytest.raises(SystemExit) as exit_:
        build_parser()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "SENTINEL_MAX_EVENT_AGE_S='-1' is invalid" in err[-1]
