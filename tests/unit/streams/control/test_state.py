"""The fold of the control log: hostile records, replay protection, key rotation, determinism."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.control.commands import MAX_COMMAND_BYTES, new_command
from streams.control.state import ControlLog, Outcome
from tests.unit.streams.control.test_commands import FakeLoader, model_args, sha

KEYS = {"2026-11": b"old-secret", "2026-12": b"new-secret"}
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def signed(name: str, key_id: str = "2026-12", at: datetime = T0, **args: Any) -> bytes:
    if name in ("reload", "ab_setup"):
        args = model_args(str(args.pop("version")), name) | args
    return new_command(
        name, args, "ops@host", signing_key=KEYS[key_id], issued_at=at, key_id=key_id
    ).encode()


def fold(
    records: list[bytes | None], keys: dict[str, bytes] | None = KEYS
) -> tuple[ControlLog, list[Outcome]]:
    log, outcomes, loader = ControlLog(), [], FakeLoader()
    for offset, record in enumerate(records):
        log, outcome = log.step(record, offset, loader, keys)
        outcomes.append(outcome)
    return log, outcomes


HOSTILE: list[tuple[bytes | None, str]] = [
    (b"[" * 5000 + b"]" * 5000, "nested"),
    (b'{"a":' * 2000 + b"1" + b"}" * 2000, "nested"),
    (b"{" * 100_000, "at most"),
    (b"x" * (10 * 1024 * 1024), "at most"),
    (b"\xff\xfe\xfd", "not UTF-8"),
    (b"\xc3\x28", "not UTF-8"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b'"status"', "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b"42", "must be a JSON object"),
    (b'{"command": "status", "command": "promote"}', "duplicate key"),
    (b'{"percent": 1' + b"0" * 400 + b"}", "beyond 64 bits"),
    (b'{"percent": NaN}', "not a JSON number"),
    (b'{"percent": Infinity}', "not a JSON number"),
    (b'{"percent": 1e999}', "not finite"),
    (b"", "empty message"),
    (None, "empty message"),
    (b"\x00\x01\x02", "unparseable"),
]


@pytest.mark.parametrize(("record", "reason"), HOSTILE, ids=range(len(HOSTILE)))
def test_any_bytes_are_at_worst_a_refusal_with_a_reason(record: bytes | None, reason: str) -> None:
    for keys in (KEYS, None):
        log, (outcome,) = fold([record], keys)
        assert outcome.result == "refused"
        assert reason in (outcome.reason or ""), outcome.reason
        assert log == ControlLog()  # nothing remembered, nothing served


def test_the_size_bound_is_checked_before_parsing() -> None:
    big = json.dumps({"pad": "x" * MAX_COMMAND_BYTES}).encode()
    _, (outcome,) = fold([big])
    assert outcome.reason and "at most" in outcome.reason


def test_a_republished_signed_command_is_refused_and_the_state_is_kept() -> None:
    reload, setup = signed("reload", version="v1"), signed("ab_setup", version="v2")
    split = signed("ab_split", percent=100)
    log, outcomes = fold([reload, setup, split, signed("abort"), split])
    assert [o.result for o in outcomes] == ["ok", "ok", "ok", "ok", "refused"]
    assert "already applied or refused" in (outcomes[-1].reason or "")
    assert log.serving is not None and log.serving.b is None and log.serving.split_percent == 0


def test_a_signed_command_refused_once_stays_refused_when_replayed_later() -> None:
    split = signed("ab_split", percent=100)  # refused: no B yet
    log, outcomes = fold(
        [signed("reload", version="v1"), split, signed("ab_setup", version="v2"), split]
    )
    assert [o.result for o in outcomes] == ["ok", "refused", "ok", "refused"]
    assert log.serving is not None and log.serving.split_percent == 0


def test_a_command_issued_long_before_the_last_applied_one_is_refused() -> None:
    stale = signed("ab_split", at=T0 - timedelta(hours=1), percent=50)
    skewed = signed("ab_split", at=T0 - timedelta(minutes=2), percent=20)
    log, outcomes = fold(
        [signed("reload", version="v1"), signed("ab_setup", version="v2"), stale, skewed]
    )
    assert [o.result for o in outcomes] == ["ok", "ok", "refused", "ok"]
    assert "older than the last applied command" in (outcomes[2].reason or "")
    assert log.serving is not None and log.serving.split_percent == 20


def test_keys_rotate_by_id_and_unknown_or_retired_keys_are_refused() -> None:
    log, outcomes = fold(
        [signed("reload", key_id="2026-11", version="v1"), signed("ab_setup", version="v2")]
    )
    assert [o.result for o in outcomes] == ["ok", "ok"]
    assert log.serving is not None and log.serving.b is not None
    retired = {"2026-12": KEYS["2026-12"]}
    _, outcomes = fold([signed("reload", key_id="2026-11", version="v1")], retired)
    assert outcomes[0].result == "refused" and "unknown key id '2026-11'" in (
        outcomes[0].reason or ""
    )
    forged = json.loads(signed("reload", version="v1"))
    forged["key_id"] = "2026-11"
    _, outcomes = fold([json.dumps(forged).encode()])
    assert outcomes[0].result == "refused" and "bad signature" in (outcomes[0].reason or "")


# --- determinism: replaying the log from 0 gives what applying it live gave -----------------

COMMANDS = st.one_of(
    st.builds(
        lambda v: ("reload", {"version": v}), st.sampled_from(["v1", "v2", "v3", "v9", "v7"])
    ),
    st.builds(lambda v: ("ab_setup", {"version": v}), st.sampled_from(["v1", "v2", "v3", "v9"])),
    st.builds(lambda p: ("ab_split", {"percent": p}), st.integers(0, 100)),
    st.sampled_from([("promote", {}), ("abort", {}), ("status", {})]),
)
RECORDS = st.one_of(
    st.tuples(COMMANDS, st.integers(-600, 600), st.sampled_from(["2026-11", "2026-12"])).map(
        lambda c: signed(c[0][0], c[2], T0 + timedelta(seconds=c[1]), **c[0][1])
    ),
    st.binary(max_size=64),
    st.sampled_from([b"[" * 300, b'{"command": "reload"}', b"null"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(RECORDS, max_size=25), st.integers(0, 25), st.integers(0, 10))
def test_replaying_the_log_from_zero_equals_applying_it_live(
    records: list[bytes], joined_at: int, republished: int
) -> None:
    # Some records appear twice: operators (or attackers) re-publish old bytes.
    if records:
        records = [*records, *records[: republished % (len(records) + 1)]]
    live_log, live_outcomes = fold(records)
    # An instance that started later: it replayed the first part, then followed the rest live,
    # with a loader of its own (bundles loaded at other times, by another process).
    joined_at = min(joined_at, len(records))
    late, _ = fold(records[:joined_at])
    loader = FakeLoader()
    for offset in range(joined_at, len(records)):
        late, _ = late.step(records[offset], offset, loader, KEYS)
    replayed_log, replayed_outcomes = fold(records)

    def summary(log: ControlLog) -> object:
        return None if log.serving is None else log.serving.summary()

    assert summary(live_log) == summary(replayed_log) == summary(late)
    assert [(o.result, o.reason) for o in live_outcomes] == [
        (o.result, o.reason) for o in replayed_outcomes
    ]
    assert (live_log.seen, live_log.last_issued_ms) == (late.seen, late.last_issued_ms)
    if live_log.serving is not None:
        assert live_log.serving.a.sha256 == sha(live_log.serving.a.version)
