"""The drift baseline: what the training data looked like, for the scorer's drift monitor.

The binning itself is :func:`schemas.drift_baseline.build_baseline`, the monitor's own code, so
training and serving cannot bin differently: decile edges (outer edges = min and max, outer bins
open-ended), float32 values compared with ``x >= edge``. Features are summarised on the training
rows; the score on held-out test rows, because live scores should look like scores on unseen data,
not like the (over-confident) scores of the rows the model was fit on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from schemas.drift_baseline import build_baseline


def drift_baseline(
    train_features: np.ndarray, test_features: np.ndarray, test_scores: np.ndarray
) -> dict[str, Any]:
    """The manifest's ``drift_baseline``: ``features`` from training rows, ``score`` (mean,
    bin_edges, proportions) from test rows and their ONNX scores."""
    train_rows = len(train_features)
    # The feature half ignores the scores; any (n,) array of the right length will do.
    baseline = build_baseline(train_features, np.zeros(train_rows, dtype=np.float64))
    score = build_baseline(test_features, np.asarray(test_scores, dtype=np.float64))["score"]
    score["std"] = float(np.std(test_scores))
    return {
        "features": baseline["features"],
        "score": {**score, "rows": len(test_scores), "source": "test"},
        "rows": train_rows,
    }
