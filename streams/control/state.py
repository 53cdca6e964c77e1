"""The serving state and the fold of the control log onto it. No Kafka here.

Every instance runs :class:`ControlLog.step` over the same records in log order, live or replayed,
so the state after any log is the same everywhere: it depends on the records and on bundle
*content* only (a command names the model sha256 it means), never on the clock, on
``models/current`` or on when a record is applied.

Replay protection lives here because it must be part of the fold: a command id is applied at
most once (a re-published command is refused), and a command issued more than
:data:`ISSUED_AT_TOLERANCE_MS` before the last applied one is refused. Both rules read only the
log, so the refusal comes out the same on every instance and on every replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final, Protocol

from schemas.errors import ModelLoadError
from streams.control.commands import (
    CommandRefused,
    ControlCommand,
    decode_json_object,
    parse_command,
)

if TYPE_CHECKING:
    from streams.model.loader import ModelBundle

ISSUED_AT_TOLERANCE_MS: Final = 5 * 60 * 1000  # clock skew between operators' machines


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
        """The JSON-able state published in acks and heartbeats (compared across instances)."""
        return {
            "a_version": self.a.version,
            "a_sha256": self.a.sha256,
            "b_version": None if self.b is None else self.b.version,
            "b_sha256": None if self.b is None else self.b.sha256,
            "split_percent": self.split_percent,
            "applied_offset": self.applied_offset,
        }


class BundleLoader(Protocol):
    """Where :func:`apply` gets model bundles (``streams.control.plane`` reads ``models/``).

    ``load`` may block (disk, ONNX session, parity smoke test) and raises ModelLoadError.
    """

    def load(self, version: str) -> ModelBundle: ...


def _load_exact(command: ControlCommand, loader: BundleLoader) -> ModelBundle:
    """The bundle the command names, refused unless its content is the command's sha256."""
    try:
        bundle = loader.load(command.version)
    except ModelLoadError as exc:
        raise CommandRefused(f"{command.command}: {exc}") from None
    if bundle.sha256 != command.model_sha256:
        raise CommandRefused(
            f"{command.command}: bundle {command.version} here has model sha256 "
            f"{bundle.sha256[:12]}..., the command names {command.model_sha256[:12]}... "
            "(this instance cannot serve what the fleet serves)"
        )
    return bundle


def apply(
    state: ServingState | None,
    command: ControlCommand,
    loader: BundleLoader,
    offset: int | None = None,
) -> ServingState:
    """The state after ``command``; ``offset`` (its log position) becomes ``applied_offset``.

    ``state`` is None before the first successful ``reload`` of the log. Blocks while a bundle
    loads. Raises CommandRefused (state unchanged) when the command does not apply to ``state``
    or its bundle fails to load or has another content; the reason is deterministic.
    """
    name = command.command
    if name == "reload":
        bundle = _load_exact(command, loader)
        new_state = ServingState(a=bundle) if state is None else replace(state, a=bundle)
    elif state is None:
        raise CommandRefused(f"{name}: no model A is served yet (publish a reload first)")
    elif name == "ab_setup":
        if command.version == state.a.version:
            raise CommandRefused(f"ab_setup: {command.version} is already serving as A")
        new_state = replace(state, b=_load_exact(command, loader), split_percent=0)
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


@dataclass(frozen=True)
class Outcome:
    """What one control record did: its identity (best effort), ok or refused, and why."""

    offset: int
    command_id: str | None
    command: str | None
    result: str  # "ok" | "refused"
    reason: str | None = None
    parsed: ControlCommand | None = None


@dataclass(frozen=True)
class ControlLog:
    """The fold of the control log: the serving state plus what replay protection remembers.

    ``serving`` is None until a ``reload`` succeeds. ``seen`` holds the id of every authentic
    command (parsed, and signed when keys are configured), applied or refused; ``last_issued_ms``
    is the ``issued_at`` of the last applied command. ``reloads`` counts authentic reloads seen,
    so a scorer can tell a brand-new log from one whose reloads it cannot reproduce.
    """

    serving: ServingState | None = None
    seen: frozenset[str] = field(default_factory=frozenset)
    last_issued_ms: int | None = None
    reloads: int = 0

    def step(
        self,
        raw: bytes | None,
        offset: int,
        loader: BundleLoader,
        keys: Mapping[str, bytes] | None = None,
    ) -> tuple[ControlLog, Outcome]:
        """The fold after the record ``raw`` at ``offset``, and what it did. Never raises for
        any input: bad bytes, bad signatures, replays and unloadable bundles are refusals."""
        try:
            command = parse_command(raw, keys)
        except CommandRefused as exc:
            command_id, name = _identity(raw)
            return self, Outcome(offset, command_id, name, "refused", exc.reason)
        ident = (command.command_id, command.command)
        if command.command_id in self.seen:
            reason = f"command {command.command_id} was already applied or refused (a replay)"
            return self, Outcome(offset, *ident, "refused", reason, command)
        after = replace(
            self,
            seen=self.seen | {command.command_id},
            reloads=self.reloads + (command.command == "reload"),
        )
        issued, last = command.issued_at_ms, self.last_issued_ms
        if last is not None and issued < last - ISSUED_AT_TOLERANCE_MS:
            reason = (
                f"issued_at {command.issued_at} is more than {ISSUED_AT_TOLERANCE_MS // 1000} s "
                "older than the last applied command (a replay or a stale command)"
            )
            return after, Outcome(offset, *ident, "refused", reason, command)
        try:
            serving = apply(self.serving, command, loader, offset)
        except CommandRefused as exc:
            return after, Outcome(offset, *ident, "refused", exc.reason, command)
        newest = issued if last is None else max(issued, last)
        return replace(after, serving=serving, last_issued_ms=newest), Outcome(
            offset, *ident, "ok", None, command
        )


def _identity(raw: bytes | None) -> tuple[str | None, str | None]:
    """Best-effort command id and name of a refused record, so even its ack is findable."""
    try:
        fields = decode_json_object(raw)
    except CommandRefused:
        return None, None
    command_id, name = fields.get("command_id"), fields.get("command")
    return (
        command_id if isinstance(command_id, str) else None,
        name if isinstance(name, str) else None,
    )
