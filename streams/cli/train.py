"""``sentinel train``: train, verify and publish a model bundle (training extras required).

The training stack (xgboost, scikit-learn, pandas, matplotlib) is imported only when the command
runs, so the scorer's CLI never loads it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Final

from schemas.errors import ConfigError
from streams.cli._args import add_models_dir_flag, positive_float, positive_int

DEFAULT_CSV: Final[Path] = Path("data/creditcard.csv")
SYNTHETIC: Final[str] = "synthetic"


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _prevalence(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text!r}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "train",
        help="train an XGBoost fraud model and publish it as a verified ONNX bundle",
        description=(
            "Train on a CSV with the Kaggle credit-card columns (Time, V1..V28, Amount, Class) "
            f"or on synthetic data; compare imbalance handling, pick a cost-optimal threshold, "
            "export to ONNX, check parity against XGBoost on the whole test set, and write "
            "<models-dir>/<version>/ (model.onnx, manifest.json, report.md, plots). Without "
            f"--data: synthetic data if --rows is given, else {DEFAULT_CSV} if present, else "
            "synthetic data."
        ),
    )
    parser.add_argument(
        "--data",
        metavar="PATH",
        help=f"training CSV, or '{SYNTHETIC}' to generate one [default: {DEFAULT_CSV} if "
        "present, else synthetic]",
    )
    parser.add_argument(
        "--rows",
        type=positive_int,
        help="rows of synthetic data (implies synthetic data) [default 284807]",
    )
    parser.add_argument(
        "--prevalence",
        type=_prevalence,
        help="fraud share of synthetic data (implies synthetic data) [default 0.001727, the "
        "Kaggle set's]",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="seed of the generator, split and models [default 7]"
    )
    add_models_dir_flag(parser, "model bundles directory")
    parser.add_argument(
        "--version", help="bundle version name [default: next free vN]; never overwritten"
    )
    parser.add_argument(
        "--activate", action="store_true", help="point <models-dir>/current at the new bundle"
    )
    parser.add_argument(
        "--review-cost",
        type=positive_float,
        default=5.0,
        help="cost of one false alarm, in Amount units (a missed fraud costs its Amount) "
        "[default 5.0]",
    )
    parser.add_argument(
        "--parity-bound",
        type=_non_negative_float,
        default=5e-7,
        help="refuse the export if max |ONNX - XGBoost| on the test set exceeds this "
        "[default 5e-7]",
    )
    parser.add_argument(
        "--review-budget",
        type=_share,
        default=0.001,
        help="share of traffic just below the block threshold sent to REVIEW [default 0.001]",
    )
    parser.set_defaults(run=_run)


def _data_source(args: argparse.Namespace) -> Path | None:
    """The CSV to train on, or None for synthetic data."""
    if args.data == SYNTHETIC:
        return None
    if args.data is not None:
        if args.rows is not None or args.prevalence is not None:
            raise ConfigError(
                "--rows and --prevalence shape synthetic data; they cannot be used with a CSV"
            )
        return Path(args.data)
    if args.rows is None and args.prevalence is None and DEFAULT_CSV.exists():
        return DEFAULT_CSV
    return None


def _run(args: argparse.Namespace) -> int:
    from training.pipeline import TrainConfig, train
    from training.report import summary_lines
    from training.synth import DEFAULT_ROWS, PREVALENCE

    source = _data_source(args)
    config = TrainConfig(
        review_cost=args.review_cost,
        parity_bound=args.parity_bound,
        review_budget=args.review_budget,
    )
    began = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - began:7.1f}s] {message}", flush=True)

    result = train(
        Path(args.models_dir),
        data_source=source,
        rows=args.rows or DEFAULT_ROWS,
        prevalence=args.prevalence or PREVALENCE,
        seed=args.seed,
        version=args.version,
        activate=args.activate,
        config=config,
        progress=progress,
    )
    print(f"\ntrained {result.version} in {result.seconds:.1f} s")
    print("\n".join(summary_lines(result.manifest)))
    print(f"  report: {result.path / 'report.md'}")
    if not result.activated:
        print(
            f"  not active: run with --activate, or write {result.version} to "
            f"{Path(args.models_dir) / 'current'}"
        )
    return 0
