"""Micro-benchmark of the decision cache's key: the feature-row digest, per message.

Digests ``--rows`` feature rows (float64, the scorer's ``features_f64``) in micro-batches of each
``--batch`` size with :func:`streams.scoring.digest.feature_digests`, and prints µs per row. The
goal (issue 13) is that keying the cache by content costs <= ~0.3 µs per message. For reference
it also times what the key replaced: building the per-row Python list the cache looks up
(``digests.tolist()``), which both keys pay.

Times are CPU time of this process (``time.process_time``), best of ``--repeat`` runs, as in
bench/codec_bench.py (the cores are shared).

    .venv/bin/python -m bench.digest_bench --rows 200000 --batch 10 100 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from schemas.features import N_FEATURES
from streams.scoring.digest import feature_digests


def per_row_us(rows: np.ndarray, batch: int, repeat: int) -> float:
    """Best-of-``repeat`` CPU µs per row to digest ``rows`` in batches of ``batch``."""
    batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    best = float("inf")
    for _ in range(repeat):
        began = time.process_time()
        for chunk in batches:
            feature_digests(chunk)
        best = min(best, time.process_time() - began)
    return best / len(rows) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[10, 100, 500, 2000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(args.rows, N_FEATURES))
    print("| batch | digest µs/row |")
    print("|---:|---:|")
    for batch in args.batch:
        print(f"| {batch:,} | {per_row_us(rows, batch, args.repeat):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
