"""The training report written next to a model version: JSON, markdown and two PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "plot_contact_sheet",
    "plot_kind_confusion",
    "plot_unknown_curve",
    "unknown_curve",
    "write_report",
]


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


_TWO_LEVEL_COLUMNS = (
    ("kind_right", "kind right"),
    ("variety_right", "variety right"),
    ("kind_right_variety_not_sure", "kind right, variety not sure"),
    ("answered_unknown", "unknown"),
    ("confidently_wrong", "confidently wrong"),
)


def _two_level_lines(metrics: dict[str, Any]) -> list[str]:
    """The answers at both levels (fruits/model/answers.py), per split and for the classes
    left out of training (whose right answers are "unknown" or their kind, not sure)."""
    rows = [
        (split, (metrics.get(split) or {}).get("two_level"))
        for split in ("train", "validation", "test")
    ]
    unseen = ((metrics.get("test") or {}).get("unseen") or {}).get("two_level")
    rows.append(("test, left-out classes", unseen))
    shown = [(name, scores) for name, scores in rows if scores and scores.get("n_images")]
    if not shown:
        return []
    lines = [
        "",
        "## Answers at two levels: kind and variety",
        "",
        "| photos | images | " + " | ".join(title for _, title in _TWO_LEVEL_COLUMNS) + " |",
        "|---|---|" + "---|" * len(_TWO_LEVEL_COLUMNS),
    ]
    for name, scores in shown:
        cells = " | ".join(f"{scores[key]:.4f}" for key, _ in _TWO_LEVEL_COLUMNS)
        lines.append(f"| {name} | {scores['n_images']} | {cells} |")
    return lines


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


def plot_kind_confusion(path: Path, answers: Sequence[dict[str, Any]], title: str) -> None:
    """True kind (rows) against the answered kind, "unknown" its own column: counts, shaded by
    the share of each true kind. Only the kinds that occur are drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    truths = sorted({a["true_kind"] for a in answers})
    said = sorted({a["kind"] for a in answers if not a["is_unknown"]} | set(truths))
    columns = [*said, "unknown"]
    index = {k: i for i, k in enumerate(columns)}
    counts = np.zeros((len(truths), len(columns)))
    for a in answers:
        answered = "unknown" if a["is_unknown"] else a["kind"]
        counts[truths.index(a["true_kind"]), index[answered]] += 1
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fontsize = 8 if len(columns) <= 30 else 5
    fig, ax = plt.subplots(
        figsize=(min(4 + 0.28 * len(columns), 24), min(3 + 0.28 * max(len(truths), 1), 20))
    )
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (i, j), count in np.ndenumerate(counts):
        if count:
            color = "white" if shares[i, j] > 0.6 else "black"
            ax.text(j, i, f"{count:.0f}", ha="center", va="center", fontsize=fontsize, color=color)
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(len(truths)), truths, fontsize=fontsize)
    ax.set_xlabel("answered kind")
    ax.set_ylabel("true kind")
    ax.set_title(f"{title}: kinds (counts; shade: share of the true kind)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_contact_sheet(path: Path, answers: Sequence[dict[str, Any]], title: str) -> None:
    """The photos of ``answers`` (the worst confident mistakes, surest first) in a grid, each
    with its truth and its answer; a photo that is not a local file is a grey tile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image, ImageOps

    columns = 5
    rows = max(1, -(-len(answers) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.6, rows * 3.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, answer in zip(axes.flat, answers, strict=False):
        local = answer["path"].removeprefix("file:")
        try:
            with Image.open(local) as image:
                tile = ImageOps.exif_transpose(image).convert("RGB")
                tile.thumbnail((240, 240))
                pixels = np.asarray(tile)
        except (OSError, ValueError):
            pixels = np.full((8, 8, 3), 200, dtype=np.uint8)
        ax.imshow(pixels)
        said = (
            f"a {answer['kind']}, variety not sure"
            if answer["variety_not_sure"]
            else f"{answer['label']} ({answer['confidence']:.2f})"
        )
        ax.set_title(f"true: {answer['true_label']}\nsaid: {said}", fontsize=7)
    if not answers:
        axes[0][0].text(0.5, 0.5, "no confident mistake", ha="center", va="center")
    fig.suptitle(f"{title}: the surest wrong answers", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
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
    lines += _two_level_lines(metrics)
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
