"""The training report written next to a model version: JSON, markdown and two PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_unknown_curve", "unknown_curve", "write_report"]


def write_report(folder: Path, metrics: dict[str, Any], cumulative_variance: list[float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _plot_variance(folder / "pca_variance.png", cumulative_variance, metrics)
    test = metrics.get("test")
    if test:
        _plot_confusion(
            folder / "confusion_matrix.png", test["confusion_matrix"], metrics["classes"]
        )
    if metrics.get("unknown_curve"):
        plot_unknown_curve(folder / "unknown_curve.png", metrics["unknown_curve"])
    (folder / "report.md").write_text(_markdown(metrics))


def plot_unknown_curve(path: Path, curve: dict[str, Any], title: str | None = None) -> None:
    """Known photos rejected (x) against unseen photos caught (y), with the operating point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = zip(*curve["points"], strict=True)
    x0, y0 = curve["operating_point"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(xs, ys, lw=1.5, label="thresholds moved together")
    ax.plot([x0], [y0], "o", color="tab:red", label=f"model: {x0:.1%} rejected, {y0:.1%} caught")
    ax.axvline(0.03, color="grey", ls=":", lw=1)
    ax.axhline(0.80, color="grey", ls=":", lw=1)
    ax.set_xlabel("known photos answered unknown (rejected)")
    ax.set_ylabel("photos of unseen classes answered unknown (caught)")
    ax.set_title(title or '"unknown": known rejected vs unseen caught')
    ax.set_xlim(0, max(0.1, max(xs)))
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_variance(path: Path, cumulative: list[float], metrics: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = metrics["pca_components"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(cumulative) + 1), cumulative, lw=1.5)
    ax.axhline(metrics["explained_variance_target"], color="grey", ls="--", lw=1)
    ax.axvline(k, color="tab:red", ls=":", lw=1)
    ax.set_xlabel("principal components")
    ax.set_ylabel("cumulative explained variance")
    ax.set_title(f"PCA: {k} components keep {metrics['explained_variance']:.3f}")
    ax.set_xlim(1, max(len(cumulative), 2))
    ax.set_ylim(0, 1.01)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_confusion(path: Path, matrix: list[list[int]], classes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix, dtype=np.float64)
    # Row-normalised so classes with different test counts compare.
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = min(max(4.0, n * 0.14), 18.0)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fontsize = 9 if n <= 20 else 4
    ax.set_xticks(range(n), classes, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), classes, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Test confusion matrix (share of each true class)")
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(metrics: dict[str, Any]) -> str:
    lines = [
        f"# Model report: {metrics['classifier']}, {metrics['n_classes']} classes",
        "",
        f"- extractor: `{metrics['extractor']}`",
        f"- PCA: {metrics['pca_components']} components, "
        f"{metrics['explained_variance']:.4f} of the variance (target "
        f"{metrics['explained_variance_target']})",
        f"- validation: {metrics.get('validation_split', 'random photos')}; the final model "
        f"{'refitted on all of Training' if metrics.get('refit_all') else 'fitted without it'}",
        *_unknown_lines(metrics),
        f"- features: {metrics['features']['computed']} computed, "
        f"{metrics['features']['cached']} from cache, "
        f"{metrics['features']['rejected']} unreadable photos skipped",
        "",
        "## Accuracy per split",
        "",
        "| split | images | accuracy | answered unknown |",
        "|---|---|---|---|",
    ]
    for split in ("train", "validation", "test"):
        scores = metrics.get(split)
        if scores:
            rejected = scores.get("known_rejected")
            shown = f"{rejected:.4f}" if rejected is not None else "-"
            lines.append(f"| {split} | {scores['n_images']} | {scores['accuracy']:.4f} | {shown} |")
    test = metrics.get("test") or {}
    if "unseen" in test:
        unseen = test["unseen"]
        lines += [
            "",
            f"## Classes left out of training ({len(unseen['classes'])})",
            "",
            f"{unseen['n_images']} Test photos of classes the model never saw: "
            f"**{unseen['caught']:.4f} answered unknown**, while "
            f"{test['known_rejected']:.4f} of the known classes' Test photos were.",
            "",
            "| left-out class | caught |",
            "|---|---|",
            *[f"| {name} | {share:.3f} |" for name, share in unseen["caught_per_class"].items()],
            "",
            "![unknown curve](unknown_curve.png)",
        ]
    lines += [
        "",
        "## Classifiers compared on validation",
        "",
        "| classifier | accuracy | fit (s) |",
        "|---|---|---|",
    ]
    for row in metrics["comparison"]:
        lines.append(
            f"| {row['name']} | {row['validation_accuracy']:.4f} | {row['fit_seconds']:.1f} |"
        )
    answers = (metrics.get("validation") or {}).get("answers")
    if answers:
        lines += _answer_lines(answers)
    lines += ["", "## Time per stage (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in metrics["timings"].items()]
    if metrics.get("rejected_files"):
        lines += ["", "## Unreadable photos (skipped)", ""]
        lines += [
            f"- `{r['path']}`: {r['reason']} ({r['detail']})" for r in metrics["rejected_files"]
        ]
    test = metrics.get("test")
    if test:
        lines += [
            "",
            "## Per class (Test)",
            "",
            "| class | precision | recall | f1 | support |",
            "|---|---|---|---|---|",
        ]
        for name, row in test["per_class"].items():
            lines.append(
                f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | "
                f"{row['f1']:.3f} | {row['support']} |"
            )
        lines += ["", "![confusion matrix](confusion_matrix.png)"]
    lines += ["", "![PCA explained variance](pca_variance.png)", ""]
    return "\n".join(lines)


def _unknown_lines(metrics: dict[str, Any]) -> list[str]:
    unknown = metrics.get("unknown")
    if not unknown:
        return [f"- unknown threshold (max class probability): {metrics['unknown_threshold']:.4f}"]
    distance = unknown["distance_above"]
    where = (
        f"cosine distance to the nearest training photo of the answered class, in the "
        f"{unknown['dims']} leading directions of the features"
    )
    if unknown["rule"] == "fused":
        rule = (
            f"the p-values of the top probability and of the {where}, among validation "
            f"photos, multiplied: -log of the product above {distance:.3f}"
        )
    else:
        rule = f"top probability below {unknown['probability_below']:.4f}" + (
            f", or {where} above {distance:.4f}" if distance is not None else ""
        )
    return [
        f"- unknown ({unknown['rule']}): {rule}; calibrated to reject at most "
        f"{unknown['reject_share_target']:.0%} of validation",
    ]


def unknown_curve(rows: Sequence[Any], known_classes: Sequence[str], rule: str) -> dict[str, Any]:
    """Known photos rejected against unseen photos caught as the thresholds move, and the
    model's own operating point. ``rows``: (true_label, confidence, unknown_distance,
    is_unknown) of photos of known and of unseen classes."""
    from fruits.model.metrics import open_set_curve

    known_set = set(known_classes)

    def scores(rows: list[Any]) -> tuple[list[float], list[float] | None]:
        distances = [r.unknown_distance for r in rows]
        return [r.confidence for r in rows], None if None in distances else distances

    known = [r for r in rows if r.true_label in known_set]
    unseen = [r for r in rows if r.true_label not in known_set]
    points = open_set_curve(scores(known), scores(unseen), rule)
    return {
        "rule": rule,
        "points": [[round(x, 4), round(y, 4)] for x, y in points],
        "operating_point": [
            round(sum(r.is_unknown for r in known) / len(known), 4),
            round(sum(r.is_unknown for r in unseen) / len(unseen), 4),
        ],
    }


def _answer_lines(answers: dict[str, Any]) -> list[str]:
    """The validation answers' distribution: what drift is measured against."""
    from fruits.observe.drift import CONFIDENCE_BINS

    width = 1 / CONFIDENCE_BINS
    return [
        "",
        "## Answers on validation (the reference of drift)",
        "",
        f"{answers['n']} validation photos, answered by the calibrated held-out model; the "
        "dashboard and `fruits status --check` compare live answers with these shares "
        "(fruits/observe/drift.py).",
        "",
        "| answer | share |",
        "|---|---|",
        *[f"| {label} | {share:.3f} |" for label, share in answers["answers"].items()],
        "",
        "| top probability | share |",
        "|---|---|",
        *[
            f"| {i * width:.1f}-{(i + 1) * width:.1f} | {share:.3f} |"
            for i, share in enumerate(answers["confidence"])
        ],
    ]
