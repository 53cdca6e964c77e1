"""Control commands without Kafka: parsing, validation (agreeing with the JSON Schema), signing,
and the serving-state machine every instance runs over the same log."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest

from schemas.errors import ModelLoadError
from streams.control.commands import (
    CommandRefused,
    ControlCommand,
    compute_signature,
    new_command,
    parse_command,
)
from streams.control.state import ServingState, apply
from streams.model.loader import ModelBundle

SCHEMAS = Path(__file__).resolve().parents[4] / "schemas"
KEY = b"shared-secret"
KEYS = {"default": KEY}
COMMAND_ID = "6f1c1d2e-8a4b-4c5d-9e6f-7a8b9c0d1e2f"


def sha(version: str) -> str:
    """The model sha256 of a fake bundle: derived from its version, so content differs."""
    return hashlib.sha256(version.encode()).hexdigest()


@dataclass(frozen=True)
class FakeBundle:
    version: str
    sha256: str


def bundle(version: str) -> ModelBundle:
    """A stand-in for a loaded bundle: the state machine only looks at version and sha256."""
    return cast(ModelBundle, FakeBundle(version, sha(version)))


class FakeLoader:
    """``models/`` in memory: versions that load and versions whose checks fail."""

    def __init__(self, broken: dict[str, str] | None = None) -> None:
        self.good = {"v1", "v2", "v3"}
        self.broken = broken or {"v9": "v9: model.onnx sha256 does not match the manifest"}
        self.loads: list[str] = []

    def load(self, version: str) -> ModelBundle:
        self.loads.append(version)
        if version in self.broken:
            raise ModelLoadError(self.broken[version])
        if version not in self.good:
            raise ModelLoadError(f"no model bundle models/{version}")
        return bundle(version)


def command_dict(command: str = "status", args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "command_id": COMMAND_ID,
        "command": command,
        "args": args or {},
        "issued_at": "2025-01-31T12:00:00.000Z",
        "issuer": "ops@host",
    }


def raw(fields: Any) -> bytes:
    return json.dumps(fields).encode()


def model_args(version: str, name: str = "ab_setup") -> dict[str, Any]:
    """A model command's arguments: the version and the sha256 of its (fake) bundle."""
    key = "version" if name == "reload" else "candidate_version"
    return {key: version, "model_sha256": sha(version)}


def refusal(data: bytes | None, key: bytes | None = None) -> str:
    with pytest.raises(CommandRefused) as caught:
        parse_command(data, None if key is None else {"default": key})
    return caught.value.reason


# --- parsing and validation -----------------------------------------------------------------


def test_a_built_command_round_trips_through_the_topic_bytes() -> None:
    command = new_command("ab_setup", model_args("v2"), "ops@host")
    parsed = parse_command(command.encode())
    assert parsed == command
    assert parsed.candidate_version == "v2"
    assert parsed.signature is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty message"),
        (None, "empty message"),
        (b"{not json", "unparseable JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (raw({**command_dict(), "command": "reboot"}), "unknown command 'reboot'"),
        (
            raw({k: v for k, v in command_dict().items() if k != "issuer"}),
            "missing field(s): issuer",
        ),
        (raw({**command_dict(), "priority": 1}), "unknown field(s): priority"),
        (raw({**command_dict(), "command_id": "42"}), "command_id must be a UUID"),
        (raw({**command_dict(), "issued_at": "yesterday"}), "issued_at must be an ISO-8601"),
        (raw({**command_dict(), "issued_at": "2025-13-01T00:00:00Z"}), "not a valid time"),
        (raw({**command_dict(), "issuer": ""}), "issuer must be a string"),
        (raw({**command_dict(), "signature": "xyz"}), "signature must be 64 lowercase hex"),
        (raw(command_dict("ab_setup")), "ab_setup: missing argument(s): candidate_version"),
        (
            raw(command_dict("ab_setup", {**model_args("v2"), "candidate_version": "../etc"})),
            "not a version name",
        ),
        (raw(command_dict("ab_setup", {"candidate_version": "v2"})), "missing argument(s): model"),
        (raw(command_dict("reload")), "reload: missing argument(s): model_sha256, version"),
        (
            raw(command_dict("reload", {**model_args("v2", "reload"), "model_sha256": "ab"})),
            "model_sha256 must be 64 lowercase hex",
        ),
        (raw(command_dict("ab_split")), "ab_split: missing argument(s): percent"),
        (raw(command_dict("ab_split", {"percent": 150})), "percent must be within 0-100, got 150"),
        (raw(command_dict("ab_split", {"percent": -1})), "percent must be within 0-100, got -1"),
        (raw(command_dict("ab_split", {"percent": 30.5})), "percent must be an integer"),
        (raw(command_dict("ab_split", {"percent": "30"})), "percent must be an integer"),
        (raw(command_dict("ab_split", {"percent": True})), "percent must be an integer"),
        (raw(command_dict("promote", {"force": True})), "promote: unexpected argument(s): force"),
        (raw({**command_dict(), "args": []}), "status: args must be a JSON object"),
    ],
)
def test_bad_commands_are_refused_with_a_reason(data: bytes | None, reason: str) -> None:
    assert reason in refusal(data)


def test_a_whole_number_written_as_float_is_a_valid_split() -> None:
    parsed = parse_command(raw(command_dict("ab_split", {"percent": 30.0})))
    assert parsed.percent == 30
    assert parsed.args == {"percent": 30}


def test_the_cli_side_refuses_a_bad_command_before_it_is_published() -> None:
    with pytest.raises(CommandRefused, match="within 0-100, got 150"):
        new_command("ab_split", {"percent": 150}, "ops@host")
    with pytest.raises(CommandRefused, match="unknown command"):
        new_command("explode", {}, "ops@host")


def schema_corpus() -> list[Any]:
    """Commands, valid and not, on which the JSON Schema and the runtime must agree."""
    named_args: list[tuple[str, dict[str, Any]]] = [
        ("reload", model_args("v1", "reload")),
        ("status", {}),
        ("promote", {}),
        ("abort", {}),
        ("ab_setup", model_args("v2")),
        ("ab_setup", model_args("2025-01.rc_1")),
        ("ab_split", {"percent": 0}),
        ("ab_split", {"percent": 100}),
        ("ab_split", {"percent": 30.0}),
    ]
    good = [command_dict(name, args) for name, args in named_args]
    good.append({**command_dict(), "issued_at": "2025-01-31T12:00:00+05:30"})
    good.append({**command_dict(), "signature": "ab" * 32})
    good.append({**command_dict(), "signature": "ab" * 32, "key_id": "2026-12"})
    bad: list[Any] = [
        [],
        "status",
        {**command_dict(), "command": "reboot"},
        {**command_dict(), "extra": 1},
        {**command_dict(), "command_id": "not-a-uuid"},
        {**command_dict(), "command_id": 7},
        {**command_dict(), "issued_at": "2025-01-31 12:00"},
        {**command_dict(), "issued_at": "2025-01-31T12:00:00"},
        {**command_dict(), "issuer": ""},
        {**command_dict(), "issuer": None},
        {**command_dict(), "signature": "AB" * 32},
        {**command_dict(), "args": None},
        command_dict("ab_setup"),
        command_dict("ab_setup", {**model_args("v1"), "candidate_version": "../v1"}),
        command_dict("ab_setup", {**model_args("v1"), "candidate_version": ".hidden"}),
        command_dict("ab_setup", {**model_args("v1"), "candidate_version": 2}),
        command_dict("ab_setup", {**model_args("v2"), "percent": 3}),
        command_dict("ab_setup", {"candidate_version": "v2"}),
        command_dict("ab_setup", {**model_args("v2"), "model_sha256": "A" * 64}),
        {**command_dict(), "key_id": ""},
        {**command_dict(), "key_id": "has space"},
        command_dict("ab_split", {"percent": 101}),
        command_dict("ab_split", {"percent": -5}),
        command_dict("ab_split", {"percent": 2.5}),
        command_dict("ab_split", {"percent": "50"}),
        command_dict("ab_split", {"percent": False}),
        command_dict("ab_split", {}),
        command_dict("reload", {"version": "v2"}),
        command_dict("reload", {}),
        command_dict("status", {"verbose": True}),
    ]
    for name in ("command_id", "command", "args", "issued_at", "issuer"):
        bad.append({k: v for k, v in command_dict().items() if k != name})
    return [(c, True) for c in good] + [(c, False) for c in bad]


@pytest.mark.parametrize(("fields", "valid"), schema_corpus())
def test_runtime_validation_agrees_with_the_json_schema(fields: Any, valid: bool) -> None:
    schema = json.loads((SCHEMAS / "control_command.schema.json").read_text())
    schema_says = jsonschema.Draft202012Validator(schema).is_valid(fields)
    try:
        parse_command(raw(fields))
        runtime_says = True
    except CommandRefused:
        runtime_says = False
    assert (schema_says, runtime_says) == (valid, valid)


def test_acks_and_heartbeats_match_the_event_schema() -> None:
    schema = json.loads((SCHEMAS / "control_event.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    state = ServingState(a=bundle("v1"), b=bundle("v2"), split_percent=30, applied_offset=4)
    ack = {
        "type": "ack",
        "scorer_id": "scorer-1",
        "time": "2025-01-31T12:00:00.123Z",
        "command_id": COMMAND_ID,
        "command": "ab_split",
        "offset": 4,
        "result": "ok",
        "reason": None,
        "replayed": False,
        "issuer": "ops@host",
        "issued_at": "2025-01-31T12:00:00.000Z",
        "state": state.summary(),
    }
    heartbeat = {k: ack[k] for k in ("scorer_id", "time", "state")} | {
        "type": "heartbeat",
        "stats": {"A/v1/ALLOW": 7},
    }
    validator.validate(ack)
    validator.validate(heartbeat)
    validator.validate({**ack, "state": None})  # a record before the log's first reload
    stopped = {**heartbeat, "type": "stopped", "reason": "control thread died: RuntimeError()"}
    validator.validate(stopped)
    assert not validator.is_valid({k: v for k, v in ack.items() if k != "result"})


# --- signing --------------------------------------------------------------------------------


def test_the_signature_is_hmac_sha256_over_sorted_compact_utf8_json() -> None:
    fields = command_dict("ab_split", {"percent": 20}) | {"issuer": "opé"}
    canonical = (
        '{"args":{"percent":20},"command":"ab_split",'
        f'"command_id":"{COMMAND_ID}","issued_at":"2025-01-31T12:00:00.000Z","issuer":"opé"}}'
    ).encode()
    expected = hmac.new(KEY, canonical, hashlib.sha256).hexdigest()
    assert compute_signature(fields, KEY) == expected
    assert compute_signature({**fields, "signature": "f" * 64}, KEY) == expected


def test_with_a_key_a_signed_command_is_accepted_however_it_is_formatted() -> None:
    command = new_command("ab_split", {"percent": 30}, "ops@host", signing_key=KEY)
    reformatted = json.dumps(dict(reversed(command.to_json_dict().items())), indent=2).encode()
    assert parse_command(reformatted, KEYS) == command


def test_with_a_key_unsigned_tampered_or_foreign_commands_are_refused() -> None:
    signed = new_command("ab_split", {"percent": 30}, "ops@host", signing_key=KEY)
    unsigned = new_command("ab_split", {"percent": 30}, "ops@host")
    assert "unsigned command" in refusal(unsigned.encode(), KEY)
    tampered = signed.to_json_dict() | {"args": {"percent": 100}}
    assert "bad signature" in refusal(raw(tampered), KEY)
    foreign = new_command("ab_split", {"percent": 30}, "ops@host", signing_key=b"other-key")
    assert "bad signature" in refusal(foreign.encode(), KEY)
    assert "bad signature" in refusal(raw(signed.to_json_dict() | {"signature": 5}), KEY)
    # Refused before its content is even looked at: garbage from a stranger stays "unsigned".
    assert "unsigned command" in refusal(raw({"command": "reboot"}), KEY)


def test_without_a_key_signed_and_unsigned_commands_are_both_accepted() -> None:
    signed = new_command("promote", {}, "ops@host", signing_key=KEY)
    assert parse_command(signed.encode()).signature == signed.signature
    assert parse_command(new_command("promote", {}, "ops@host").encode()).signature is None


# --- the state machine ----------------------------------------------------------------------


def cmd(name: str, **args: Any) -> ControlCommand:
    """A command; ``version=`` on reload/ab_setup becomes the version and its fake sha256."""
    if name in ("reload", "ab_setup"):
        args = model_args(str(args.pop("version")), name) | args
    return new_command(name, args, "ops@host")


def v1_state() -> ServingState:
    return ServingState(a=bundle("v1"))


def test_an_ab_cycle_from_setup_to_promote() -> None:
    loader = FakeLoader()
    state = apply(v1_state(), cmd("ab_setup", version="v2"), loader, offset=0)
    assert state.summary() == {
        "a_version": "v1",
        "a_sha256": sha("v1"),
        "b_version": "v2",
        "b_sha256": sha("v2"),
        "split_percent": 0,
        "applied_offset": 0,
    }
    state = apply(state, cmd("ab_split", percent=30), loader, offset=1)
    assert (state.split_percent, state.applied_offset) == (30, 1)
    state = apply(state, cmd("promote"), loader, offset=2)
    assert state.summary() == {
        "a_version": "v2",
        "a_sha256": sha("v2"),
        "b_version": None,
        "b_sha256": None,
        "split_percent": 0,
        "applied_offset": 2,
    }


def test_abort_discards_the_candidate_and_sends_everything_to_a() -> None:
    loader = FakeLoader()
    state = apply(v1_state(), cmd("ab_setup", version="v2"), loader)
    state = apply(state, cmd("ab_split", percent=50), loader)
    state = apply(state, cmd("abort"), loader, offset=9)
    assert (state.a.version, state.b, state.split_percent, state.applied_offset) == (
        "v1",
        None,
        0,
        9,
    )


def test_reload_serves_the_named_version_as_a_and_keeps_b() -> None:
    loader = FakeLoader()
    with_b = apply(v1_state(), cmd("ab_setup", version="v2"), loader)
    with_b = apply(with_b, cmd("ab_split", percent=20), loader)
    state = apply(with_b, cmd("reload", version="v3"), loader, offset=5)
    assert (state.a.version, state.b and state.b.version, state.split_percent) == ("v3", "v2", 20)
    assert state.applied_offset == 5


def test_the_first_reload_of_a_log_starts_serving_and_nothing_else_can() -> None:
    with pytest.raises(CommandRefused, match="no model A is served yet"):
        apply(None, cmd("ab_split", percent=5), FakeLoader())
    state = apply(None, cmd("reload", version="v2"), FakeLoader(), offset=0)
    assert (state.a.version, state.applied_offset) == ("v2", 0)


def test_a_bundle_with_other_content_than_the_command_names_is_refused() -> None:
    other = new_command("reload", {"version": "v2", "model_sha256": sha("v3")}, "ops@host")
    with pytest.raises(CommandRefused, match=r"bundle v2 here has model sha256 .* names"):
        apply(v1_state(), other, FakeLoader())


def test_a_new_ab_setup_replaces_the_candidate_and_resets_the_split() -> None:
    loader = FakeLoader()
    state = apply(v1_state(), cmd("ab_setup", version="v2"), loader)
    state = apply(state, cmd("ab_split", percent=40), loader)
    state = apply(state, cmd("ab_setup", version="v3"), loader)
    assert (state.a.version, state.b and state.b.version, state.split_percent) == ("v1", "v3", 0)


def test_status_changes_nothing_but_the_applied_offset() -> None:
    state = ServingState(a=bundle("v1"), b=bundle("v2"), split_percent=10)
    after = apply(state, cmd("status"), FakeLoader(), offset=3)
    assert (after.a, after.b, after.split_percent, after.applied_offset) == (
        state.a,
        state.b,
        10,
        3,
    )


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (cmd("ab_split", percent=30), "ab_split: no candidate B is set up"),
        (cmd("promote"), "promote: no candidate B is set up"),
        (cmd("abort"), "abort: no candidate B is set up"),
        (cmd("ab_setup", version="v1"), "ab_setup: v1 is already serving as A"),
        (cmd("ab_setup", version="v7"), "ab_setup: no model bundle models/v7"),
        (cmd("ab_setup", version="v9"), "ab_setup: v9: model.onnx sha256 does not"),
    ],
)
def test_refused_commands_leave_the_state_unchanged(command: ControlCommand, reason: str) -> None:
    state = v1_state()
    with pytest.raises(CommandRefused) as caught:
        apply(state, command, FakeLoader(), offset=1)
    assert caught.value.reason.startswith(reason)
    assert state.summary()["applied_offset"] == -1


def test_reload_of_a_broken_bundle_is_refused_and_a_keeps_serving() -> None:
    with pytest.raises(CommandRefused, match=r"reload: v9: model\.onnx sha256"):
        apply(v1_state(), cmd("reload", version="v9"), FakeLoader())


# --- the CLI refuses bad input before publishing anything (no broker needed) -----------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ab-split", "150"], "must be within 0-100, got 150"),
        (["ab-split", "thirty"], "must be an integer 0-100, got 'thirty'"),
        (["ab-setup"], "the following arguments are required: VERSION"),
    ],
)
def test_cli_rejects_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from streams.cli import main

    with pytest.raises(SystemExit) as exit_code:
        main(["control", *argv, "--bootstrap-servers=127.0.0.1:1"])
    assert exit_code.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_an_unsafe_version_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from streams.cli import main

    assert main(["control", "ab-setup", "../v1", "--bootstrap-servers=127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sentinel: error: ") and "'../v1'" in err and err.count("\n") == 1
