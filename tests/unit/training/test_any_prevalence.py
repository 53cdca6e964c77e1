"""Training survives real data shapes: any prevalence from 0.05% to 50%, any size from 1,000 rows
with >= 20 frauds (issue 13: 4,000 rows with 364 frauds failed inside SMOTE on main).

Small models (tests.fixtures.models.quick_config) keep this fast; the shapes are what matter.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from streams.model.loader import load_bundle
from tests.fixtures.models import quick_config
from training import data
from training.pipeline import train
from training.report import render_markdown, summary_lines
from training.study import smote_target
from training.synth import generate

SHAPES = [
    (1_000, 0.02),  # the smallest trainable set: 20 frauds
    (4_000, 0.091),  # issue 13's reproduction: 364 frauds, about 10% of the legitimate rows
    (2_000, 0.25),
    (1_000, 0.5),  # as many frauds as legitimate rows: nothing for SMOTE to oversample
    (40_000, 0.0005),  # the rarest: 0.05%, 20 frauds
]


@pytest.mark.parametrize(("rows", "prevalence"), SHAPES, ids=[f"{r}x{p}" for r, p in SHAPES])
def test_a_bundle_is_trained_at_any_prevalence_and_size(
    rows: int, prevalence: float, tmp_path: Path
) -> None:
    dataset = data.from_frame(generate(rows=rows, seed=5, prevalence=prevalence), "synthetic")
    assert dataset.frauds >= 20

    result = train(tmp_path, data_source=dataset, seed=5, config=quick_config())

    manifest = result.manifest
    bundle = load_bundle(tmp_path, result.version)
    test = manifest.metrics["test"]
    assert test["rows"] == round(rows * 0.2) and test["frauds"] == round(dataset.frauds * 0.2)
    assert test["pr_auc"] > 2 * prevalence or test["pr_auc"] > 0.9  # far better than chance
    assert 0 < bundle.review_threshold <= bundle.block_threshold <= 1.0 + 1e-9
    for entry in manifest.imbalance_study:
        assert len(entry["fold_pr_auc"]) == 3 and all(map(math.isfinite, entry["fold_pr_auc"]))
        assert entry["pr_auc_std"] == pytest.approx(np.std(entry["fold_pr_auc"]))
        assert entry["trees"] >= quick_config().model.min_rounds
    assert manifest.training["best_iteration"] + 1 >= quick_config().model.min_rounds
    text = "\n".join(summary_lines(manifest)) + render_markdown(manifest)
    assert f"{manifest.training['params']['method']} won on the highest mean" in text
    assert ("negative saving" in text) == (test["saving"] < 0)


@pytest.mark.parametrize(
    ("frauds", "legit", "target"),
    [
        (10, 1_000, 100),  # rare: up to the ratio
        (218, 2_182, 219),  # just below the ratio (main's ValueError): one more fraud
        (219, 2_182, 2_182),  # at the ratio already: up to 1:1
        (300, 700, 700),
        (500, 500, None),  # balanced: nothing to oversample
        (600, 400, None),  # frauds are the majority
        (1, 1_000, None),  # SMOTE needs two frauds to interpolate between
    ],
)
def test_smote_targets_are_always_above_the_fraud_count(
    frauds: int, legit: int, target: int | None
) -> None:
    assert smote_target(frauds, legit, 0.1) == target
