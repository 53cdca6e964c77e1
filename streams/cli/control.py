"""``sentinel control reload|ab-setup|ab-split|promote|abort|status|history``: steer the fleet.

Publishes one command on the control topic (signed when a control key is configured), finds the
live instances from their heartbeats on control-events, waits a bounded time for each one's ack
of that command, and prints one row per instance with what it serves. Exit 0 only if every live
instance applied it and they all serve the same thing afterwards; 1 if any refused it, did not
answer, or diverges from the others, or if no instance is live (then nothing is published: a
command nobody applies now would still be applied by every future instance).

``reload`` and ``ab-setup`` are resolved here, at publish time (``streams.control.client``): the
command names the version and its model sha256. After a successful ``promote``,
``models/current`` is pointed at the promoted version, so a later ``reload`` keeps it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streams.cli._args import (
    add_kafka_flags,
    add_models_dir_flag,
    add_topic_flags,
    control_keys,
    default_issuer,
    env_flag,
    kafka_settings,
    positive_float,
    topic_names,
)

ACTIONS: dict[str, tuple[str, str]] = {
    "reload": (
        "reload",
        "serve VERSION (default: the one models/current names) as variant A on every instance; "
        "B is kept",
    ),
    "ab-setup": ("ab_setup", "load models/VERSION as candidate B, routing no cards to it yet"),
    "ab-split": ("ab_split", "route PERCENT percent of cards (sticky by card id) to B"),
    "promote": ("promote", "B becomes A (and models/current names it); B cleared, split 0"),
    "abort": ("abort", "discard B; all traffic to A"),
    "status": (
        "status",
        "print each instance's state and decision counts; exit 1 if instances diverge",
    ),
}


def percent_arg(text: str) -> int:
    """An integer 0..100 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer 0-100, got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be within 0-100, got {value}")
    return value


def register(commands: Any) -> None:
    """Add ``sentinel control ACTION`` (one sub-command per control command) to ``commands``."""
    parser = commands.add_parser(
        "control",
        help="steer every scorer instance: reload, A/B setup/split, promote, abort, status",
        description=(
            "Publish a command on the control topic (signed when SENTINEL_CONTROL_KEY or "
            "SENTINEL_CONTROL_KEYS is set), wait for the ack of every live scorer instance "
            "(known from heartbeats on control-events in the last 10 s) and print one row per "
            "instance. Exit 0 only if every live instance applied it and all serve the same "
            "models; 1 if any refused, did not answer or diverges, or if no instance is live "
            "(then nothing is published). 'history' lists the applied commands instead."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, (command, text) in ACTIONS.items():
        sub = actions.add_parser(
            action,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. The command is signed when a control key "
            "is configured (required when the scorers have keys).",
        )
        if command == "reload":
            sub.add_argument(
                "version", metavar="VERSION", nargs="?", help="model version (default: current)"
            )
        if command == "ab_setup":
            sub.add_argument("version", metavar="VERSION", help="model version, e.g. v2")
        if command == "ab_split":
            sub.add_argument("percent", metavar="PERCENT", type=percent_arg, help="0-100")
        _add_common_flags(sub)
        env_flag(
            sub, "--issuer", "SENTINEL_CONTROL_ISSUER", default_issuer(),
            "who issues the command (recorded in the control log)",
        )  # fmt: skip
        sub.set_defaults(run=_run, command_name=command)
    history = actions.add_parser(
        "history",
        help="the commands in the control log, with issuer, time and each instance's result",
        description="Read the control log from its start and the acks on control-events, and "
        "print one row per command: offset, command, arguments, issuer, issued_at, and the "
        "result of every instance that answered (acks are kept as long as control-events is).",
    )
    _add_common_flags(history)
    history.set_defaults(run=_history)


def _add_common_flags(sub: argparse.ArgumentParser) -> None:
    add_kafka_flags(sub)
    add_topic_flags(sub)
    add_models_dir_flag(sub)
    env_flag(
        sub, "--timeout", "SENTINEL_CONTROL_TIMEOUT", 15.0,
        "seconds to wait for every live instance's ack", type=positive_float,
    )  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from streams.control.client import LIVE_WINDOW_S, issue_command, model_args
    from streams.control.commands import new_command

    name: str = args.command_name
    models_dir = Path(args.models_dir)
    command_args: dict[str, str | int] = {}
    if name in ("reload", "ab_setup"):
        command_args = model_args(name, models_dir, args.version)
    elif name == "ab_split":
        command_args["percent"] = args.percent
    keys, key_id = control_keys()  # the secrets are read here and never printed
    command = new_command(
        name, command_args, args.issuer, keys.get(key_id) if key_id else None, key_id=key_id
    )
    topics = topic_names(args)
    outcome = issue_command(kafka_settings(args), topics, command, args.timeout, models_dir)
    if outcome.offset is None:
        print(
            f"no live scorer instance: no heartbeat on {topics.control_events!r} in the "
            f"last {LIVE_WINDOW_S:.0f} s; nothing published"
        )
        return 1
    print(f"{name} {command.command_id} published at control offset {outcome.offset}")
    _print_acks(list(outcome.live), outcome.acks, outcome.latest)
    if name == "status":
        _print_counts(outcome.stats)
    if outcome.missing:
        print(f"no answer within {args.timeout:g} s from: {', '.join(outcome.missing)}")
    if outcome.refused:
        print(f"refused by: {', '.join(outcome.refused)}")
    for line in outcome.diverging:
        print(f"DIVERGENCE: {line}")
    if outcome.activated:
        print(f"models/current -> {outcome.activated} (a later reload keeps the promoted model)")
    return 0 if outcome.applied_by_all else 1


def _history(args: argparse.Namespace) -> int:
    from streams.control.client import read_history

    rows: list[tuple[str, ...]] = [("OFFSET", "COMMAND", "ARGS", "ISSUER", "ISSUED_AT", "RESULTS")]
    for entry in read_history(kafka_settings(args), topic_names(args), args.timeout):
        results = ", ".join(
            f"{scorer}={ack.get('result')}"
            + (f" ({ack.get('reason')})" if ack.get("reason") else "")
            for scorer, ack in sorted(entry.acks.items())
        )
        rows.append(
            (
                str(entry.offset),
                entry.command or "(unreadable)",
                json.dumps(entry.args, sort_keys=True) if entry.args is not None else "-",
                entry.issuer or "-",
                entry.issued_at or "-",
                results or "no ack seen",
            )
        )
    if len(rows) == 1:
        print("the control log is empty")
        return 0
    _print_table(rows)
    return 0


def _print_acks(
    live: list[str], acks: Mapping[str, Mapping[str, Any]], latest: Mapping[str, Mapping[str, Any]]
) -> None:
    rows: list[tuple[str, ...]] = [
        ("SCORER", "RESULT", "A", "A_SHA256", "B", "SPLIT", "APPLIED", "REASON")
    ]
    for scorer in sorted(set(live) | set(acks)):
        ack = acks.get(scorer)
        state = (ack or latest.get(scorer) or {}).get("state") or {}
        result = str(ack.get("result")) if ack else "no answer"
        reason = str(ack.get("reason") or "-") if ack else "-"
        rows.append(
            (
                scorer,
                result,
                str(state.get("a_version", "?")),
                str(state.get("a_sha256") or "?")[:12],
                str(state.get("b_version") or "-"),
                f"{state.get('split_percent', '?')}%",
                str(state.get("applied_offset", "?")),
                reason,
            )
        )
    _print_table(rows)


def _print_counts(stats: Mapping[str, Mapping[str, Any]]) -> None:
    """Per-variant decision counts from each instance's latest heartbeat, and fleet totals.

    The scorer's stats are ``{"<variant>/<version>/<outcome>": count}``.
    """
    per_instance: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    for scorer, counters in sorted(stats.items()):
        for key, count in counters.items():
            parts = str(key).split("/")
            if len(parts) == 3 and isinstance(count, int):
                cell = per_instance[(scorer, parts[0], parts[1])]
                cell[parts[2]] = cell.get(parts[2], 0) + count
    if not per_instance:
        print("no decision counts in the latest heartbeats yet")
        return
    outcomes = ("ALLOW", "REVIEW", "BLOCK")
    rows: list[tuple[str, ...]] = [("SCORER", "VARIANT", "VERSION", *outcomes, "TOTAL")]
    totals: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for (scorer, variant, version), counts in sorted(per_instance.items()):
        rows.append((scorer, variant, version, *(str(counts.get(o, 0)) for o in outcomes),
                     str(sum(counts.values()))))  # fmt: skip
        for outcome, count in counts.items():
            totals[(variant, version)][outcome] = totals[(variant, version)].get(outcome, 0) + count
    for (variant, version), counts in sorted(totals.items()):
        rows.append(("(fleet)", variant, version, *(str(counts.get(o, 0)) for o in outcomes),
                     str(sum(counts.values()))))  # fmt: skip
    print()
    _print_table(rows)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
