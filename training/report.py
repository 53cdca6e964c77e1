"""The human side of a bundle: four plots, ``report.md``, and the summary table ``train`` prints.

Plots (PNG, matplotlib's Agg backend, so no display is needed): the precision-recall curve on
test data, expected cost against threshold on the calibration split (exact and smoothed: the
block threshold minimises the smoothed one), XGBoost gain importance per feature, and the score
histogram by class on test data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas.manifest import DECISION_RULE, Manifest
from training.threshold import CostCurve

PLOT_FILES = {
    "pr_curve": "pr_curve.png",
    "threshold_cost": "threshold_cost.png",
    "feature_importance": "feature_importance.png",
    "score_histogram": "score_histogram.png",
}


@dataclass(frozen=True)
class PlotData:
    """What the plots are drawn from."""

    test_probabilities: np.ndarray
    test_labels: np.ndarray
    validation_cost: CostCurve
    smoothed_cost: CostCurve  # what the block threshold minimises
    block: float
    review: float
    importance: dict[str, float]


def write_plots(out_dir: Path, data: PlotData) -> list[str]:
    """Draw the four PNGs into ``out_dir``; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    def save(figure: Any, name: str) -> None:
        figure.tight_layout()
        figure.savefig(out_dir / name, dpi=100)
        plt.close(figure)

    figure, axes = plt.subplots(figsize=(6, 4.5))
    precision, recall, _ = precision_recall_curve(data.test_labels, data.test_probabilities)
    axes.plot(recall, precision, drawstyle="steps-post")
    flagged = data.test_probabilities >= data.block
    fraud = data.test_labels == 1
    tp = int((flagged & fraud).sum())
    if tp:
        axes.scatter(
            [tp / fraud.sum()],
            [tp / flagged.sum()],
            color="red",
            zorder=3,
            label=f"block threshold {data.block:.3g}",
        )
        axes.legend(loc="lower left")
    axes.set(
        xlabel="recall",
        ylabel="precision",
        title="Precision-recall (test)",
        xlim=(0, 1.01),
        ylim=(0, 1.01),
    )
    save(figure, PLOT_FILES["pr_curve"])

    figure, axes = plt.subplots(figsize=(6, 4.5))
    curve = data.validation_cost
    thresholds = np.clip(curve.thresholds[1:], 1e-6, 1.0)
    axes.plot(thresholds, curve.costs[1:], drawstyle="steps-post", label="exact")
    smoothed = data.smoothed_cost
    axes.plot(np.clip(smoothed.thresholds[1:], 1e-6, 1.0), smoothed.costs[1:], label="smoothed")
    axes.axvline(max(data.block, 1e-6), color="red", linestyle="--", label="block")
    if data.review < data.block:
        axes.axvline(max(data.review, 1e-6), color="orange", linestyle=":", label="review")
    axes.set_xscale("log")
    axes.set(
        xlabel="threshold (flag if score >= threshold)",
        ylabel="expected cost",
        title="Expected cost vs threshold (calibration split)",
    )
    axes.legend()
    save(figure, PLOT_FILES["threshold_cost"])

    figure, axes = plt.subplots(figsize=(6, 6))
    ranked = sorted(data.importance.items(), key=lambda item: item[1])
    axes.barh([name for name, _ in ranked], [gain for _, gain in ranked])
    axes.set(xlabel="total gain", title="Feature importance (XGBoost total gain)")
    axes.tick_params(axis="y", labelsize=7)
    save(figure, PLOT_FILES["feature_importance"])

    figure, axes = plt.subplots(figsize=(6, 4.5))
    bins = np.linspace(0.0, 1.0, 51).tolist()
    for label, name in ((0, "legitimate"), (1, "fraud")):
        axes.hist(
            data.test_probabilities[data.test_labels == label],
            bins=bins,
            alpha=0.6,
            label=name,
            density=True,
        )
    axes.axvline(min(data.block, 1.0), color="red", linestyle="--", label="block")
    axes.set_yscale("log")
    axes.set(
        xlabel="fraud probability",
        ylabel="density (log)",
        title="Score distribution by class (test)",
    )
    axes.legend()
    save(figure, PLOT_FILES["score_histogram"])
    return list(PLOT_FILES.values())


def why_it_won(study: Sequence[Mapping[str, Any]], winner: str) -> str:
    """One sentence: which imbalance method won, on what evidence (mean fold PR-AUC and its
    spread against the runner-up), and whether the margin is within the fold spread."""
    best = next(entry for entry in study if entry["method"] == winner)
    folds = len(best.get("fold_pr_auc", [])) or 1
    text = (
        f"{winner} won on the highest mean cross-validated PR-AUC, {best['val_pr_auc']:.4f} "
        f"+- {best.get('pr_auc_std', 0.0):.4f} over {folds} folds"
    )
    others = [entry for entry in study if entry["method"] != winner]
    if others:
        runner_up = max(others, key=lambda entry: entry["val_pr_auc"])
        spread = max(best.get("pr_auc_std", 0.0), runner_up.get("pr_auc_std", 0.0))
        text += (
            f"; runner-up {runner_up['method']} {runner_up['val_pr_auc']:.4f} "
            f"+- {runner_up.get('pr_auc_std', 0.0):.4f}"
        )
        if best["val_pr_auc"] - runner_up["val_pr_auc"] < spread:
            text += " (a margin within the fold spread: the methods are close on this data)"
    return text + "."


def saving_warning(manifest: Manifest) -> str | None:
    """A warning when the block threshold costs more on test than the naive 0.5 threshold."""
    test = manifest.metrics["test"]
    if test["saving"] >= 0:
        return None
    return (
        f"WARNING: negative saving on test ({test['saving']:,.2f}): the block threshold "
        f"{manifest.thresholds.block:.4g} costs more than 0.5 would. The threshold was "
        f"{chosen_on(manifest)}; with {test['frauds']} test frauds the difference may be "
        "noise, but check the threshold-cost plot before serving this model."
    )


def chosen_on(manifest: Manifest) -> str:
    """How the thresholds were chosen, in words, from the manifest's validation block."""
    validation = manifest.metrics["validation"]
    return (
        f"chosen on the calibration split ({validation['rows']:,} rows, {validation['frauds']} "
        "frauds, never trained on) scored by this ONNX model, minimising the smoothed expected "
        "cost"
    )


def summary_lines(manifest: Manifest) -> list[str]:
    """The short summary table (plain text) of a training run, from its manifest."""
    test, validation = manifest.metrics["test"], manifest.metrics["validation"]
    data, parity, training = manifest.data, manifest.parity, manifest.training
    (tn, fp), (fn, tp) = test["confusion_matrix"]
    rows = [
        ("version", manifest.version),
        ("data", f"{data.source}: {data.rows:,} rows, {data.frauds:,} frauds"),
        ("imbalance winner", training["params"]["method"]),
        ("trees (best iteration)", f"{training['best_iteration'] + 1}"),
        (
            "thresholds",
            f"block >= {manifest.thresholds.block:.4g}, review >= {manifest.thresholds.review:.4g}",
        ),
        (
            "thresholds chosen on",
            f"calibration split: {validation['rows']:,} rows, {validation['frauds']} frauds, "
            "scored by this model (smoothed cost)",
        ),
        ("test PR-AUC / ROC-AUC", f"{test['pr_auc']:.4f} / {test['roc_auc']:.4f}"),
        (
            "precision / recall @block",
            f"{test['precision_at_block']:.3f} / {test['recall_at_block']:.3f}",
        ),
        ("confusion [[tn fp] [fn tp]]", f"[[{tn} {fp}] [{fn} {tp}]]"),
        (
            "cost @block vs @0.5",
            f"{test['cost_at_block']:,.2f} vs {test['cost_at_0_5']:,.2f} "
            f"(saving {test['saving']:,.2f})",
        ),
        (
            "ONNX parity (max abs diff)",
            f"{parity.max_abs_diff:.3g} over {parity.rows:,} rows (bound {parity.bound:.3g})",
        ),
        ("training time", f"{training['seconds']:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name.ljust(width)}  {value}" for name, value in rows]
    warning = saving_warning(manifest)
    if warning:
        lines.append(f"  {warning}")
    study = manifest.imbalance_study
    lines.append("  imbalance study (cross-validated PR-AUC: mean +- std over the folds):")
    lines.append(
        f"    {'method':<17} {'PR-AUC':>7} {'+-':>7} {'ROC-AUC':>8} {'trees':>6} {'rows':>9} "
        f"{'seconds':>8}"
    )
    for entry in study:
        lines.append(
            f"    {entry['method']:<17} {entry['val_pr_auc']:>7.4f} "
            f"{entry.get('pr_auc_std', 0.0):>7.4f} {entry['val_roc_auc']:>8.4f} "
            f"{entry.get('trees', 0):>6} {entry['train_rows']:>9,} {entry['seconds']:>8.1f}"
        )
    lines.append(f"  {why_it_won(study, training['params']['method'])}")
    return lines


def render_markdown(manifest: Manifest) -> str:
    """``report.md``: the summary, both metric blocks, and the plots."""
    out = [f"# Model {manifest.version}", "", f"Created {manifest.created_at}.", ""]
    out += ["```", *summary_lines(manifest), "```", ""]
    warning = saving_warning(manifest)
    if warning:
        out += [f"**{warning}**", ""]
    study = manifest.imbalance_study
    out += ["## Imbalance study", "", why_it_won(study, manifest.training["params"]["method"])]
    out += ["", "| method | mean PR-AUC | std | PR-AUC per fold | trees per fold | trees |"]
    out += ["|---|---:|---:|---|---|---:|"]
    for entry in study:
        per_fold = ", ".join(f"{value:.4f}" for value in entry.get("fold_pr_auc", []))
        trees = ", ".join(str(value) for value in entry.get("fold_best_trees", []))
        out.append(
            f"| {entry['method']} | {entry['val_pr_auc']:.4f} | {entry.get('pr_auc_std', 0):.4f}"
            f" | {per_fold} | {trees} | {entry.get('trees', '')} |"
        )
    out += [""]
    out += [
        "## Metrics",
        "",
        f"Thresholds: {chosen_on(manifest)}. validation = that calibration split; test = the "
        "held-out 20%; both scored by the exported ONNX model.",
        "",
        "| metric | validation | test |",
        "|---|---|---|",
    ]
    validation, test = manifest.metrics["validation"], manifest.metrics["test"]
    for key, value in test.items():
        if isinstance(value, float):
            out.append(f"| {key} | {validation[key]:.6g} | {value:.6g} |")
        else:
            out.append(f"| {key} | {validation[key]} | {value} |")
    out += [
        "",
        f"Decision rule: {DECISION_RULE}. A missed fraud costs its Amount, a false alarm "
        f"{manifest.thresholds.review_cost:g}; "
        "`saving` is the test-set cost at 0.5 minus the cost at the block threshold.",
        "",
        "## Plots",
        "",
    ]
    out += [f"![{name}]({name})" for name in manifest.plots]
    return "\n".join(out) + "\n"
