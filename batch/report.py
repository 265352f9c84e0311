"""The training report written next to a model version: JSON, markdown and two PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_report"]


def write_report(folder: Path, metrics: dict[str, Any], cumulative_variance: list[float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _plot_variance(folder / "pca_variance.png", cumulative_variance, metrics)
    test = metrics.get("test")
    if test:
        _plot_confusion(
            folder / "confusion_matrix.png", test["confusion_matrix"], metrics["classes"]
        )
    (folder / "report.md").write_text(_markdown(metrics))


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
        f"- unknown threshold (max class probability): {metrics['unknown_threshold']:.4f}",
        f"- features: {metrics['features']['computed']} computed, "
        f"{metrics['features']['cached']} from cache, "
        f"{metrics['features']['rejected']} unreadable photos skipped",
        "",
        "## Accuracy per split",
        "",
        "| split | images | accuracy |",
        "|---|---|---|",
    ]
    for split in ("train", "validation", "test"):
        scores = metrics.get(split)
        if scores:
            lines.append(f"| {split} | {scores['n_images']} | {scores['accuracy']:.4f} |")
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
