"""Route, look up, score: turn a decoded batch into probabilities and outcomes.

Pure batch logic with no Kafka in it: per batch, cards are routed to variant A or B (sticky by
card id), each variant's cached probabilities are looked up, and the misses of each variant are
scored in ONE ONNX Runtime call. Outcomes come from each variant's own thresholds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from schemas.decision_codec import DECISION_OUTCOMES
from schemas.manifest import Manifest
from streams.scoring.cache import DecisionCache
from streams.scoring.route import variant_b_mask

# Outcome and variant codes index the Decision schema's enums (schemas.decision_codec).
ALLOW, REVIEW, BLOCK = (DECISION_OUTCOMES.index(name) for name in ("ALLOW", "REVIEW", "BLOCK"))


class Model(Protocol):
    """What scoring needs of a model bundle (streams.model.loader.ModelBundle satisfies it)."""

    @property
    def version(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def manifest(self) -> Manifest: ...
    @property
    def block_threshold(self) -> float: ...
    @property
    def review_threshold(self) -> float: ...
    def predict_proba(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]: ...


class Serving(Protocol):
    """The serving state read once per batch: champion A, optional challenger B, B's share."""

    @property
    def a(self) -> Model: ...
    @property
    def b(self) -> Model | None: ...
    @property
    def split_percent(self) -> int: ...


@dataclass
class ScoredBatch:
    """Per-row results, aligned with the decoded batch's rows."""

    probability: npt.NDArray[np.float64]
    outcome: npt.NDArray[np.int8]  # ALLOW / REVIEW / BLOCK
    variant: npt.NDArray[np.int8]  # 0 = A, 1 = B
    cache_hit: npt.NDArray[np.bool_]
    block_threshold: npt.NDArray[np.float64]
    review_threshold: npt.NDArray[np.float64]
    model_versions: list[str]  # index = variant
    inference_seconds: list[float]  # per variant, 0 when nothing was scored


def score_batch(
    serving: Serving,
    cache: DecisionCache,
    digests: npt.NDArray[np.uint64],
    card_ids: Sequence[bytes],
    features: npt.NDArray[np.float32],
) -> ScoredBatch:
    """Score one batch under one serving state. May raise what onnxruntime raises.

    ``digests`` are the rows' feature digests (:func:`streams.scoring.digest.feature_digests`):
    the cache key with each model's sha256, and how repeats inside the batch are found.
    """
    n = len(digests)
    models: list[Model] = [serving.a] if serving.b is None else [serving.a, serving.b]
    variant = np.zeros(n, dtype=np.int8)
    if len(models) == 2 and serving.split_percent > 0:
        variant[variant_b_mask(card_ids, serving.split_percent)] = 1
    probability = np.empty(n, dtype=np.float64)
    cache_hit = np.empty(n, dtype=bool)
    inference_seconds = [0.0] * len(models)
    for v, model in enumerate(models):
        rows = np.arange(n) if len(models) == 1 else np.flatnonzero(variant == v)
        if rows.size == 0:
            continue
        keys = digests if rows.size == n else digests[rows]
        hit, probs = cache.lookup(model.sha256, keys)
        miss = np.flatnonzero(~hit)
        repeats = _repeats_within(keys, miss)
        if repeats is not None:  # repeated inside this very batch: score the first copy only
            later, first = repeats
            hit[later] = True
            miss = np.setdiff1d(miss, later, assume_unique=True)
        if miss.size:
            everything = miss.size == n
            began = time.perf_counter()
            fresh = model.predict_proba(features if everything else features[rows[miss]])
            inference_seconds[v] = time.perf_counter() - began
            probs[miss] = fresh
            cache.store(model.sha256, keys if everything else keys[miss], fresh)
        if repeats is not None:
            probs[later] = probs[first]
        probability[rows] = probs
        cache_hit[rows] = hit
    block = np.array([m.block_threshold for m in models], dtype=np.float64)[variant]
    review = np.array([m.review_threshold for m in models], dtype=np.float64)[variant]
    outcome = np.where(probability >= block, BLOCK, np.where(probability >= review, REVIEW, ALLOW))
    return ScoredBatch(
        probability=probability,
        outcome=outcome.astype(np.int8),
        variant=variant,
        cache_hit=cache_hit,
        block_threshold=block,
        review_threshold=review,
        model_versions=[m.version for m in models],
        inference_seconds=inference_seconds,
    )


def _repeats_within(
    keys: npt.NDArray[np.uint64], miss: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]] | None:
    """Missed rows whose feature digest appeared earlier in the same batch: (later, first).

    None when every missed row is distinct (the usual case), decided by one C-level set build.
    """
    missed = (keys[miss] if miss.size != len(keys) else keys).tolist()
    if len(set(missed)) == len(missed):
        return None
    first_seen: dict[int, int] = {}
    later, first = [], []
    for row, tx in zip(miss.tolist(), missed, strict=True):
        earlier = first_seen.setdefault(tx, row)
        if earlier != row:
            later.append(row)
            first.append(earlier)
    return np.array(later, dtype=np.intp), np.array(first, dtype=np.intp)
