"""The ``sentinel`` command line: one entry point, one module per command group.

Environment variables and flags are read here and only here; library code receives config
objects. Every deliberate error becomes one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from schemas.errors import SentinelError
from streams.cli import (
    broker,
    console,
    control,
    data,
    demo,
    drift,
    produce,
    score,
    tail,
    topics,
    train,
)
from streams.cli._args import SentinelArgumentParser

COMMAND_GROUPS = [broker, topics, data, train, score, produce, tail, control, console, drift, demo]


def build_parser() -> argparse.ArgumentParser:
    parser = SentinelArgumentParser(
        prog="sentinel",
        description="Sentinel Stream: Kafka-native fraud scoring with ONNX models.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("SENTINEL_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except SentinelError as exc:
        print(f"sentinel: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sentinel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
