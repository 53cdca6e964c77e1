"""Control commands: parse, validate, sign, and apply them to the serving state. No Kafka here.

A command is one JSON object on the ``control`` topic (``schemas/control_command.schema.json``
documents it; this module validates by hand so the runtime needs no ``jsonschema``). Every
instance applies the same log with :func:`apply`, so refusals must be deterministic: the same
command against the same state and the same bundles on disk is refused with the same reason on
every instance and on every replay.

Signing: HMAC-SHA256 with a shared key over the canonical JSON (sorted keys, no whitespace,
UTF-8) of the command without its ``signature`` field, hex-encoded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal, Protocol, get_args

from schemas.errors import ModelLoadError, SentinelError

if TYPE_CHECKING:
    from streams.model.loader import ModelBundle

CommandName = Literal["reload", "ab_setup", "ab_split", "promote", "abort", "status"]
COMMAND_NAMES: Final[tuple[str, ...]] = get_args(CommandName)
# The arguments each command takes: exactly these, no more, no fewer.
COMMAND_ARGS: Final[Mapping[str, frozenset[str]]] = {
    "reload": frozenset(),
    "ab_setup": frozenset({"candidate_version"}),
    "ab_split": frozenset({"percent"}),
    "promote": frozenset(),
    "abort": frozenset(),
    "status": frozenset(),
}
REQUIRED_FIELDS: Final = ("command_id", "command", "args", "issued_at", "issuer")
ALLOWED_FIELDS: Final = frozenset({*REQUIRED_FIELDS, "signature"})

# Kept in step with the JSON Schema (tests check both agree on a corpus of commands).
UUID_RE: Final = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
ISO_8601_RE: Final = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
# A version names a directory under models/: no separators, no leading dot (no "..").
VERSION_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SIGNATURE_RE: Final = re.compile(r"^[0-9a-f]{64}$")
MAX_ISSUER_CHARS: Final = 200


class CommandRefused(SentinelError):
    """A control command is refused; ``reason`` says why in one line. The state is unchanged."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ControlCommand:
    """A validated control command, as published on the control topic."""

    command_id: str
    command: CommandName
    args: Mapping[str, str | int]
    issued_at: str
    issuer: str
    signature: str | None = None

    def to_json_dict(self) -> dict[str, object]:
        """The command's JSON object (without ``signature`` when unsigned)."""
        fields: dict[str, object] = {
            "command_id": self.command_id,
            "command": self.command,
            "args": dict(self.args),
            "issued_at": self.issued_at,
            "issuer": self.issuer,
        }
        if self.signature is not None:
            fields["signature"] = self.signature
        return fields

    def encode(self) -> bytes:
        """The bytes to publish: canonical JSON of :meth:`to_json_dict`."""
        return canonical_json(self.to_json_dict())

    @property
    def candidate_version(self) -> str:
        """``args.candidate_version`` (only valid for ``ab_setup``)."""
        return str(self.args["candidate_version"])

    @property
    def percent(self) -> int:
        """``args.percent`` (only valid for ``ab_split``)."""
        return int(self.args["percent"])


def canonical_json(fields: Mapping[str, object]) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (non-ASCII kept as is): the bytes that get signed."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def compute_signature(fields: Mapping[str, object], key: bytes) -> str:
    """Hex HMAC-SHA256 of the canonical JSON of ``fields`` minus any ``signature`` field."""
    unsigned = {k: v for k, v in fields.items() if k != "signature"}
    return hmac.new(key, canonical_json(unsigned), hashlib.sha256).hexdigest()


def new_command(
    command: str,
    args: Mapping[str, str | int],
    issuer: str,
    signing_key: bytes | None = None,
    issued_at: datetime | None = None,
    command_id: str | None = None,
) -> ControlCommand:
    """Build a validated command with a fresh id (signed when ``signing_key`` is given).

    Raises CommandRefused if the command or its arguments are invalid, so the CLI refuses a bad
    command before publishing it.
    """
    when = issued_at or datetime.now(UTC)
    fields: dict[str, object] = {
        "command_id": command_id or str(uuid.uuid4()),
        "command": command,
        "args": dict(args),
        "issued_at": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "issuer": issuer,
    }
    if signing_key is not None:
        fields["signature"] = compute_signature(fields, signing_key)
    return validate_command(fields)


def parse_command(raw: bytes | None, signing_key: bytes | None = None) -> ControlCommand:
    """Decode and validate one control-topic message.

    With ``signing_key`` set, a command without a valid signature is refused before its content
    is trusted. Without a key, a signature present is checked for shape only. Raises
    CommandRefused with a one-line reason; never anything else for bad input.
    """
    if not raw:
        raise CommandRefused("empty message: a command is a JSON object")
    try:
        fields = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CommandRefused(f"unparseable JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise CommandRefused(f"a command must be a JSON object, got {type(fields).__name__}")
    if signing_key is not None:
        verify_signature(fields, signing_key)
    return validate_command(fields)


def verify_signature(fields: Mapping[str, object], key: bytes) -> None:
    """Raise CommandRefused unless ``fields`` carries the right signature for ``key``."""
    signature = fields.get("signature")
    if signature is None:
        raise CommandRefused("unsigned command: a signing key is configured")
    if not isinstance(signature, str):
        raise CommandRefused("bad signature: not a hex string")
    expected = compute_signature(fields, key)
    if not hmac.compare_digest(signature, expected):
        raise CommandRefused("bad signature: does not match the command and the shared key")


def validate_command(fields: Mapping[str, object]) -> ControlCommand:
    """Check a decoded command object field by field (the JSON Schema's rules, by hand).

    Raises CommandRefused naming the first problem, in a fixed order (so every instance gives
    the same reason).
    """
    missing = [name for name in REQUIRED_FIELDS if name not in fields]
    if missing:
        raise CommandRefused(f"missing field(s): {', '.join(missing)}")
    extra = sorted(set(fields) - ALLOWED_FIELDS)
    if extra:
        raise CommandRefused(f"unknown field(s): {', '.join(extra)}")
    command_id = fields["command_id"]
    if not isinstance(command_id, str) or not UUID_RE.fullmatch(command_id):
        raise CommandRefused(f"command_id must be a UUID string, got {command_id!r}")
    name = fields["command"]
    if not isinstance(name, str) or name not in COMMAND_ARGS:
        raise CommandRefused(
            f"unknown command {name!r} (expected one of {', '.join(COMMAND_ARGS)})"
        )
    issued_at = fields["issued_at"]
    if not isinstance(issued_at, str) or not ISO_8601_RE.fullmatch(issued_at):
        raise CommandRefused(f"issued_at must be an ISO-8601 time with a zone, got {issued_at!r}")
    try:
        datetime.fromisoformat(issued_at)
    except ValueError:
        raise CommandRefused(f"issued_at is not a valid time: {issued_at!r}") from None
    issuer = fields["issuer"]
    if not isinstance(issuer, str) or not 0 < len(issuer) <= MAX_ISSUER_CHARS:
        raise CommandRefused(f"issuer must be a string of 1-{MAX_ISSUER_CHARS} characters")
    signature = fields.get("signature")
    if signature is not None and not (
        isinstance(signature, str) and SIGNATURE_RE.fullmatch(signature)
    ):
        raise CommandRefused("signature must be 64 lowercase hex characters")
    args = _validate_args(name, fields["args"])
    return ControlCommand(
        command_id=command_id,
        command=name,  # type: ignore[arg-type]  # checked against COMMAND_ARGS above
        args=args,
        issued_at=issued_at,
        issuer=issuer,
        signature=signature,
    )


def _validate_args(name: str, args: object) -> dict[str, str | int]:
    if not isinstance(args, dict):
        raise CommandRefused(f"{name}: args must be a JSON object")
    expected = COMMAND_ARGS[name]
    missing = sorted(expected - set(args))
    if missing:
        raise CommandRefused(f"{name}: missing argument(s): {', '.join(missing)}")
    extra = sorted(set(args) - expected)
    if extra:
        raise CommandRefused(f"{name}: unexpected argument(s): {', '.join(extra)}")
    if name == "ab_setup":
        version = args["candidate_version"]
        if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
            raise CommandRefused(f"ab_setup: candidate_version {version!r} is not a version name")
        return {"candidate_version": version}
    if name == "ab_split":
        percent = args["percent"]
        # JSON has one number type: 30.0 is the integer 30 (as JSON Schema's "integer" says).
        if isinstance(percent, float) and percent.is_integer():
            percent = int(percent)
        if isinstance(percent, bool) or not isinstance(percent, int):
            raise CommandRefused(f"ab_split: percent must be an integer, got {percent!r}")
        if not 0 <= percent <= 100:
            raise CommandRefused(f"ab_split: percent must be within 0-100, got {percent}")
        return {"percent": percent}
    return {}


@dataclass(frozen=True)
class ServingState:
    """What an instance serves: champion A, optional challenger B, B's share of cards.

    Immutable: the control plane swaps the whole object between batches, so a batch always sees
    one consistent state. ``applied_offset`` is the control-log offset of the last command
    applied successfully (-1 = none yet).
    """

    a: ModelBundle
    b: ModelBundle | None = None
    split_percent: int = 0
    applied_offset: int = -1

    def summary(self) -> dict[str, object]:
        """The JSON-able state published in acks and heartbeats."""
        return {
            "a_version": self.a.version,
            "b_version": None if self.b is None else self.b.version,
            "split_percent": self.split_percent,
            "applied_offset": self.applied_offset,
        }


class BundleLoader(Protocol):
    """Where :func:`apply` gets model bundles (``streams.control.plane`` reads ``models/``).

    Both methods may block (disk, ONNX session, parity smoke test) and raise ModelLoadError.
    """

    def current_version(self) -> str: ...
    def load(self, version: str) -> ModelBundle: ...


def apply(
    state: ServingState,
    command: ControlCommand,
    loader: BundleLoader,
    offset: int | None = None,
) -> ServingState:
    """The state after ``command``; ``offset`` (its log position) becomes ``applied_offset``.

    Blocks while a bundle loads. Raises CommandRefused (state unchanged) when the command does
    not apply to ``state`` or its bundle fails to load; the reason is deterministic.
    """
    name = command.command
    if name == "reload":
        try:
            new_state = replace(state, a=loader.load(loader.current_version()))
        except ModelLoadError as exc:
            raise CommandRefused(f"reload: {exc}") from None
    elif name == "ab_setup":
        version = command.candidate_version
        if version == state.a.version:
            raise CommandRefused(f"ab_setup: {version} is already serving as A")
        try:
            candidate = loader.load(version)
        except ModelLoadError as exc:
            raise CommandRefused(f"ab_setup: {exc}") from None
        new_state = replace(state, b=candidate, split_percent=0)
    elif name in ("ab_split", "promote", "abort"):
        if state.b is None:
            raise CommandRefused(f"{name}: no candidate B is set up (run ab_setup first)")
        if name == "ab_split":
            new_state = replace(state, split_percent=command.percent)
        elif name == "promote":
            new_state = replace(state, a=state.b, b=None, split_percent=0)
        else:
            new_state = replace(state, b=None, split_percent=0)
    else:  # status
        new_state = state
    return new_state if offset is None else replace(new_state, applied_offset=offset)
