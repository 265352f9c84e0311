"""``fruits evaluate``: score a ``<Class>/*.jpg`` folder with the champion (or a given) version.

The folder may mix classes the model knows with classes it does not: the latter measure how
well "unknown" catches what the model was never taught.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batch.report import plot_unknown_curve, unknown_curve
from fruits.config import Config
from fruits.console import Stages, log, progress_printer
from fruits.errors import ConfigError
from fruits.features.featurizer import ExtractorSpec, ship_backend
from fruits.features.store import featurize_labelled
from fruits.model.metrics import classification_report, open_set_report
from fruits.model.registry import ModelRegistry
from fruits.sinks.delta import open_lake
from fruits.sources.training import check_labelled_tree
from fruits.spark import get_spark

__all__ = ["run_evaluation"]


def run_evaluation(
    config: Config, data: str, *, version: int | None = None, report: str | None = None
) -> dict[str, Any]:
    """Scores of a model version on ``data``; ``report``: a folder for ``evaluation.json`` and,
    when ``data`` holds classes the model does not know, ``unknown_curve.png`` (default
    ``{root}/reports/evaluate-v<version>``)."""
    check_labelled_tree(data)
    registry = ModelRegistry(config)
    entry = registry.files(version)  # fails early, before Spark starts, if there is no model
    spec = ExtractorSpec.for_model(config, entry.meta)
    if spec.extractor_id != entry.meta["extractor"]:
        raise ConfigError(
            f"config key 'featurizer.weights' gives extractor {spec.extractor_id} but model "
            f"version {entry.version} was trained on {entry.meta['extractor']}"
        )
    stages = Stages()
    with stages("spark start"):
        spark = get_spark(config)
    ship_backend(spark, spec)  # the ONNX export (made once) to every executor, through Spark
    model = entry.model()
    with stages("features"):
        features, run = featurize_labelled(
            spark,
            open_lake(config),
            data,
            split="evaluate",
            spec=spec,
            images=config.images,
            azure=config.azure,
            chunk_size=config.training.feature_chunk_size,
            progress=progress_printer("features"),
        )
    with stages("predict"):
        rows = (
            model.predict(features.withColumnRenamed("label", "true_label"), with_scores=True)
            .select("true_label", "label", "confidence", "unknown_distance", "is_unknown")
            .collect()
        )
    true = [r.true_label for r in rows]
    predicted = [r.label for r in rows]
    summary = open_set_report(true, predicted, [r.is_unknown for r in rows], model.classes)
    known = [i for i, t in enumerate(true) if t in set(model.classes)]
    per_class = classification_report(
        [true[i] for i in known], [predicted[i] for i in known], model.classes
    )["per_class"]
    log(
        f"{summary['n_images']} photos: accuracy {summary['accuracy']} on the "
        f"{summary['n_known_class']} of known classes; known photos rejected (answered "
        f"unknown) {summary['known_rejected']}; unseen photos caught {summary['unseen_caught']} "
        f"of {summary['n_unknown_class']}"
    )
    folder = Path(report or f"{config.root.rstrip('/')}/reports/evaluate-v{entry.version}")
    folder.mkdir(parents=True, exist_ok=True)
    curve = None
    if summary["n_known_class"] and summary["n_unknown_class"]:
        curve = unknown_curve(rows, model.classes, model.unknown_rule)
        plot_unknown_curve(
            folder / "unknown_curve.png", curve, f"model v{entry.version} on {Path(data).name}"
        )
    result = {
        **summary,
        "model_version": entry.version,
        "rejected_files": len(run.rejected),
        "rejected": [f"{r.path}: {r.reason}" for r in run.rejected],
        "per_class_recall": {c: v["recall"] for c, v in per_class.items() if v["support"]},
        "timings_s": stages.seconds,
        "report": str(folder),
    }
    (folder / "evaluation.json").write_text(
        json.dumps({**result, "unknown_curve": curve}, indent=2)
    )
    return result
