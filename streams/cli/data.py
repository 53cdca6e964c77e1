"""``sentinel data synth``: write the synthetic transaction set as a CSV (training extras).

The file has the Kaggle credit-card columns, so ``sentinel train --data`` and the replayer read it
like the real data. pandas is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError
from streams.cli._args import positive_int


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "data",
        help="generate data sets",
        description="Data-set tools.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    synth = actions.add_parser(
        "synth",
        help="write a synthetic credit-card transaction set as CSV",
        description=(
            "Write a synthetic set with the Kaggle credit-card columns (Time, V1..V28, Amount, "
            "Class), 0.1727% fraud, drawn per class from the real data's means and covariances "
            "(training/reference/creditcard_moments.json). The same --rows and --seed always "
            "give the same bytes."
        ),
    )
    synth.add_argument("--out", required=True, metavar="PATH", help="CSV file to write")
    synth.add_argument(
        "--rows", type=positive_int, default=284_807, help="number of rows [default 284807]"
    )
    synth.add_argument("--seed", type=int, default=7, help="generator seed [default 7]")
    synth.set_defaults(run=_synth)


def write_atomically(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temp file in the same directory and os.replace.

    Raises ConfigError naming the path if it cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        try:
            os.fchmod(handle, 0o644)
            with os.fdopen(handle, "wb") as temp:
                temp.write(payload)
            os.replace(temp_name, path)
        finally:
            if os.path.exists(temp_name):
                os.unlink(temp_name)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def _synth(args: argparse.Namespace) -> int:
    from training.synth import generate, to_csv_bytes

    frame = generate(rows=args.rows, seed=args.seed)
    payload = to_csv_bytes(frame)
    out = Path(args.out)
    write_atomically(out, payload)
    print(
        f"wrote {len(frame):,} rows ({int(frame['Class'].sum()):,} frauds) to {out} "
        f"(sha256 {hashlib.sha256(payload).hexdigest()})"
    )
    return 0
