"""``sentinel produce``: replay a Kaggle-format CSV into the transactions topic."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streams.cli._args import (
    add_kafka_flags,
    add_models_dir_flag,
    add_topic_flags,
    env_flag,
    kafka_settings,
    topic_names,
)

DEFAULT_CSV = "data/synthetic.csv"


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "produce",
        help="replay a CSV (Kaggle columns) into the transactions topic",
        description=(
            "Replay a CSV with the Kaggle credit-card columns as transactions: card ids from a "
            "skewed distribution (cards recur), unique transaction ids, event time = now. "
            f"Default source: data/creditcard.csv if present, else {DEFAULT_CSV} (made by "
            "'sentinel data synth')."
        ),
    )
    add_kafka_flags(parser)
    add_topic_flags(parser)
    env_flag(parser, "--csv", "SENTINEL_REPLAY_CSV", None, "CSV to replay")
    parser.add_argument(
        "--count", type=int, default=None, help="transactions to send (default: every row)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="transactions/s (0 = as fast as possible)"
    )
    parser.add_argument("--format", choices=("avro", "json"), default="avro", help="wire format")
    parser.add_argument(
        "--bad-fraction", type=float, default=0.0, help="share of malformed messages mixed in"
    )
    parser.add_argument(
        "--duplicate-fraction",
        type=float,
        default=0.0,
        help="share of redeliveries of recent transactions (exercises the decision cache)",
    )
    parser.add_argument("--cards", type=int, default=20_000, help="distinct cards")
    parser.add_argument("--seed", type=int, default=1, help="random seed (cards, bad messages)")
    parser.add_argument(
        "--drift",
        default=None,
        metavar="FEATURE=SHIFT[,...]",
        help="shift features, e.g. V14=+1.5sd,Amount=x3 (sd = the active model's baseline std)",
    )
    add_models_dir_flag(parser, "model bundles (for --drift sd)")
    parser.set_defaults(run=_run)


def default_csv() -> Path:
    real = Path("data/creditcard.csv")
    return real if real.exists() else Path(DEFAULT_CSV)


def _run(args: argparse.Namespace) -> int:
    from streams.tools.replayer import ReplayOptions, load_csv, replay

    source = Path(args.csv) if args.csv else default_csv()
    features, labels = load_csv(source)
    shift = None
    if args.drift:
        shift = drift_shift(args.drift, Path(args.models_dir))
    options = ReplayOptions(
        count=args.count,
        rate=args.rate,
        fmt=args.format,
        bad_fraction=args.bad_fraction,
        duplicate_fraction=args.duplicate_fraction,
        n_cards=args.cards,
        seed=args.seed,
        shift=shift,
    )
    topics = topic_names(args)
    result = replay(kafka_settings(args), topics.transactions, features, labels, options, True)
    print(
        f"sent {result.sent:,} transactions to {topics.transactions} from {source} in "
        f"{result.seconds:.1f} s ({result.sent / max(result.seconds, 1e-9):,.0f}/s): "
        f"{result.good:,} good, {result.bad:,} malformed, {result.duplicates:,} redelivered"
    )
    return 0


def drift_shift(spec: str, models_dir: Path) -> Any:
    """A function shifting a feature matrix per ``spec``, in units of the active baseline's std."""
    from schemas.manifest import read_manifest
    from schemas.models_dir import current_version
    from streams.tools.shift import apply_shifts, parse_shift_spec, stds_from_baseline

    shifts = parse_shift_spec(spec)
    baseline = read_manifest(models_dir, current_version(models_dir)).drift_baseline
    stds = stds_from_baseline(baseline)
    return lambda matrix: apply_shifts(matrix, shifts, stds)
