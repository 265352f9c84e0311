"""``fruits evaluate``: score a ``<Class>/*.jpg`` folder with the champion (or a given) version.

The folder may mix classes the model knows with classes it does not: the latter measure how
well "unknown" catches what the model was never taught.
"""

from __future__ import annotations

from typing import Any

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


def run_evaluation(config: Config, data: str, *, version: int | None = None) -> dict[str, Any]:
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
            model.predict(features.withColumnRenamed("label", "true_label"))
            .select("true_label", "label", "is_unknown")
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
        f"{summary['n_images']} photos: accuracy {summary['accuracy']}, "
        f"unknown rate {summary['unknown_rate']}, unknown recall {summary['unknown_recall']}"
    )
    return {
        **summary,
        "model_version": entry.version,
        "rejected_files": len(run.rejected),
        "rejected": [f"{r.path}: {r.reason}" for r in run.rejected],
        "per_class_recall": {c: v["recall"] for c, v in per_class.items() if v["support"]},
        "timings_s": stages.seconds,
    }
