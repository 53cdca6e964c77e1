"""Control commands: parse, validate and sign them. No Kafka here.

A command is one JSON object on the ``control`` topic (``schemas/control_command.schema.json``
documents it; this module validates by hand so the runtime needs no ``jsonschema``). Every
instance folds the same log onto its serving state (``streams.control.state``), so refusals must
be deterministic: the same bytes are refused with the same reason on every instance and on every
replay.

Signing: HMAC-SHA256 with a shared key over the canonical JSON (sorted keys, no whitespace,
UTF-8) of the command without its ``signature`` field, hex-encoded. A command names the key it was
signed with (``key_id``, default ``"default"``), so operators can rotate keys without a stop: add
the new key to every scorer, sign with it, then retire the old one.

Any bytes at all may arrive on the control topic. :func:`parse_command` bounds the size and the
nesting depth *before* parsing, refuses duplicate keys, NaN/Infinity and numbers beyond int64, and
turns every failure into :class:`CommandRefused`: a record is at worst a refusal.

A command's effect depends only on the log and on bundle *content*: ``reload`` and ``ab_setup``
name an explicit version and its model sha256 (resolved from ``models/current`` or the bundle when
the command is *published*), and an instance whose bundle has another sha256 refuses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, get_args

from schemas.errors import SentinelError
from schemas.models_dir import is_version_name

CommandName = Literal["reload", "ab_setup", "ab_split", "promote", "abort", "status"]
COMMAND_NAMES: Final[tuple[str, ...]] = get_args(CommandName)
# The arguments each command takes: exactly these, no more, no fewer.
COMMAND_ARGS: Final[Mapping[str, frozenset[str]]] = {
    "reload": frozenset({"version", "model_sha256"}),
    "ab_setup": frozenset({"candidate_version", "model_sha256"}),
    "ab_split": frozenset({"percent"}),
    "promote": frozenset(),
    "abort": frozenset(),
    "status": frozenset(),
}
REQUIRED_FIELDS: Final = ("command_id", "command", "args", "issued_at", "issuer")
ALLOWED_FIELDS: Final = frozenset({*REQUIRED_FIELDS, "signature", "key_id"})
DEFAULT_KEY_ID: Final = "default"
# Bounds checked on the raw bytes before any parsing: a command is a small, flat object.
MAX_COMMAND_BYTES: Final = 16_384
MAX_NESTING: Final = 4
INT64_MAX: Final = 2**63 - 1

# Kept in step with the JSON Schema (tests check both agree on a corpus of commands).
UUID_RE: Final = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
ISO_8601_RE: Final = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
SIGNATURE_RE: Final = re.compile(r"^[0-9a-f]{64}$")
SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")
KEY_ID_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
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
    key_id: str | None = None

    @property
    def issued_at_ms(self) -> int:
        """``issued_at`` as epoch milliseconds (validated on construction)."""
        return int(datetime.fromisoformat(self.issued_at).timestamp() * 1000)

    def to_json_dict(self) -> dict[str, object]:
        """The command's JSON object (without ``signature`` when unsigned)."""
        fields: dict[str, object] = {
            "command_id": self.command_id,
            "command": self.command,
            "args": dict(self.args),
            "issued_at": self.issued_at,
            "issuer": self.issuer,
        }
        if self.key_id is not None:
            fields["key_id"] = self.key_id
        if self.signature is not None:
            fields["signature"] = self.signature
        return fields

    def encode(self) -> bytes:
        """The bytes to publish: canonical JSON of :meth:`to_json_dict`."""
        return canonical_json(self.to_json_dict())

    @property
    def version(self) -> str:
        """The model version a ``reload`` (``version``) or ``ab_setup`` (``candidate_version``)
        names."""
        return str(self.args.get("version", self.args.get("candidate_version")))

    @property
    def candidate_version(self) -> str:
        """``args.candidate_version`` (only valid for ``ab_setup``)."""
        return str(self.args["candidate_version"])

    @property
    def model_sha256(self) -> str:
        """``args.model_sha256`` (``reload`` and ``ab_setup``): the bundle content it means."""
        return str(self.args["model_sha256"])

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
    key_id: str | None = None,
) -> ControlCommand:
    """Build a validated command with a fresh id (signed when ``signing_key`` is given, naming
    ``key_id`` when given).

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
    if key_id is not None:
        fields["key_id"] = key_id
    if signing_key is not None:
        fields["signature"] = compute_signature(fields, signing_key)
    return validate_command(fields)


def _nesting_depth(text: str) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text, outside strings (one pass, no parse)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    fields: dict[str, object] = {}
    for key, value in pairs:
        if key in fields:
            raise CommandRefused(f"duplicate key {key!r:.40} in the command")
        fields[key] = value
    return fields


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) > INT64_MAX:
        raise CommandRefused(f"number {text[:24]}... is beyond 64 bits")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise CommandRefused(f"number {text[:24]} is not finite")
    return value


def _no_constant(name: str) -> object:
    raise CommandRefused(f"{name} is not a JSON number")


def decode_json_object(raw: bytes | None) -> dict[str, object]:
    """The JSON object in ``raw``, or CommandRefused with a one-line reason. Never anything else.

    Size and nesting are bounded on the bytes before parsing, so no input can exhaust memory or
    the recursion limit; duplicate keys, NaN/Infinity and integers beyond int64 are refused.
    """
    if not raw:
        raise CommandRefused("empty message: a command is a JSON object")
    if len(raw) > MAX_COMMAND_BYTES:
        raise CommandRefused(f"a command is at most {MAX_COMMAND_BYTES} bytes, got {len(raw)}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandRefused(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    depth = _nesting_depth(text)
    if depth > MAX_NESTING:
        raise CommandRefused(f"JSON nested {depth} deep; a command nests at most {MAX_NESTING}")
    try:
        fields = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError) as exc:
        raise CommandRefused(f"unparseable JSON: {str(exc)[:120]}") from None
    if not isinstance(fields, dict):
        raise CommandRefused(f"a command must be a JSON object, got {type(fields).__name__}")
    return fields


def parse_command(raw: bytes | None, keys: Mapping[str, bytes] | None = None) -> ControlCommand:
    """Decode and validate one control-topic message.

    With ``keys`` (key id -> secret) given, a command without a valid signature by the key it
    names is refused before its content is trusted. Without keys, a signature present is checked
    for shape only. Raises CommandRefused with a one-line reason; never anything else.
    """
    fields = decode_json_object(raw)
    if keys:
        verify_signature(fields, keys)
    return validate_command(fields)


def verify_signature(fields: Mapping[str, object], keys: Mapping[str, bytes]) -> None:
    """Raise CommandRefused unless ``fields`` carries the right signature for the key it names."""
    signature = fields.get("signature")
    if signature is None:
        raise CommandRefused("unsigned command: a signing key is configured")
    if not isinstance(signature, str):
        raise CommandRefused("bad signature: not a hex string")
    key_id = fields.get("key_id", DEFAULT_KEY_ID)
    key = keys.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        raise CommandRefused(f"bad signature: unknown key id {key_id!r:.70}")
    expected = compute_signature(fields, key)
    if not hmac.compare_digest(signature, expected):
        raise CommandRefused(f"bad signature: does not match the command and key {key_id!r}")


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
    key_id = fields.get("key_id")
    if key_id is not None and not (isinstance(key_id, str) and KEY_ID_RE.fullmatch(key_id)):
        raise CommandRefused("key_id must be 1-64 letters, digits, '.', '_' or '-'")
    args = _validate_args(name, fields["args"])
    return ControlCommand(
        command_id=command_id,
        command=name,  # type: ignore[arg-type]  # checked against COMMAND_ARGS above
        args=args,
        issued_at=issued_at,
        issuer=issuer,
        signature=signature,
        key_id=key_id,
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
    if name in ("reload", "ab_setup"):
        version_arg = "version" if name == "reload" else "candidate_version"
        version, sha = args[version_arg], args["model_sha256"]
        if not is_version_name(version):
            raise CommandRefused(f"{name}: {version_arg} {version!r:.70} is not a version name")
        if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
            raise CommandRefused(f"{name}: model_sha256 must be 64 lowercase hex characters")
        return {version_arg: str(version), "model_sha256": sha}
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
