"""``fruits train``: labelled photos -> features -> PCA + classifiers -> evaluation -> a version.

The same :func:`run_training` is what a Databricks job calls.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batch.report import write_report
from fruits.config import Config, is_url
from fruits.console import Stages, log, progress_printer
from fruits.features.featurizer import ExtractorSpec, ship_backend
from fruits.features.store import FeatureRun, featurize_labelled
from fruits.model.classifier import FruitModel, train
from fruits.model.metrics import classification_report
from fruits.model.registry import ModelRegistry
from fruits.sinks.delta import open_lake
from fruits.sources.training import check_labelled_tree
from fruits.spark import get_spark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["run_training"]


def run_training(config: Config, data: str, *, promote: bool = True) -> dict[str, Any]:
    """Train from ``data/Training`` (and score ``data/Test`` when present); returns the summary."""
    started = time.perf_counter()
    training_dir, test_dir = f"{data.rstrip('/')}/Training", f"{data.rstrip('/')}/Test"
    check_labelled_tree(training_dir)
    has_test = is_url(data) or Path(test_dir).is_dir()
    spec = ExtractorSpec.from_config(config)
    stages = Stages()
    with stages("spark start"):
        spark = get_spark(config)
    ship_backend(spark, spec)  # the ONNX export (made once) to every executor, through Spark
    lake = open_lake(config)

    def features_of(location: str, split: str) -> tuple[DataFrame, FeatureRun]:
        return featurize_labelled(
            spark,
            lake,
            location,
            split=split,
            spec=spec,
            images=config.images,
            azure=config.azure,
            chunk_size=config.training.feature_chunk_size,
            progress=progress_printer(f"features {split}"),
        )

    with stages("features Training"):
        train_features, train_run = features_of(training_dir, "Training")
        # Used by several Spark jobs below (classes, split, scoring): build the join once.
        train_features = train_features.persist()
        log(
            f"Training photos: {train_run.images} ({train_run.cached} cached, "
            f"{train_run.computed} computed, {len(train_run.rejected)} unreadable)"
        )
    with stages("train"):
        trained = train(train_features, config.training, extractor=spec.extractor_id, log=log)
    runs = [train_run]
    test_scores = None
    with stages("evaluate"):
        train_scores = _score(trained.model, train_features)
        if has_test:
            test_features, test_run = features_of(test_dir, "Test")
            runs.append(test_run)
            test_scores = _score(trained.model, test_features)
            log(f"Test accuracy {test_scores['accuracy']:.4f} on {test_scores['n_images']} photos")

    train_features.unpersist()
    chosen = next(s for s in trained.comparison if s.name == trained.classifier)
    metrics: dict[str, Any] = {
        "n_classes": len(trained.model.classes),
        "classes": list(trained.model.classes),
        "classifier": trained.classifier,
        "extractor": spec.extractor_id,
        "image_size": spec.image_size,
        "layer": spec.layer,
        "pca_components": trained.pca_components,
        "explained_variance": round(trained.explained_variance, 6),
        "explained_variance_target": config.training.explained_variance,
        "unknown_threshold": trained.model.threshold,
        "comparison": [dataclasses.asdict(s) for s in trained.comparison],
        "train": train_scores,
        "validation": {"n_images": trained.n_validation, "accuracy": chosen.validation_accuracy},
        "test": test_scores,
        "features": _feature_counts(runs),
        "rejected_files": [dataclasses.asdict(r) for run in runs for r in run.rejected],
        "data": data,
    }
    registry = ModelRegistry(config.path("models"))
    with stages("register"):
        metrics["timings"] = {
            **stages.seconds,
            **{k: round(v, 2) for k, v in trained.timings.items()},
        }
        version = registry.register(
            trained.model,
            {
                key: metrics[key]
                for key in (
                    "classifier",
                    "image_size",
                    "layer",
                    "pca_components",
                    "explained_variance",
                    "data",
                )
            }
            | {
                "metrics": {
                    s: (metrics[s] or {}).get("accuracy") for s in ("train", "validation", "test")
                }
            },
            write_extras=lambda folder: write_report(
                folder / "report", metrics, trained.cumulative_variance
            ),
        )
        if promote:
            registry.promote(version.version)
    log(
        f"model version {version.version} registered{' and promoted' if promote else ''}; "
        f"report: {version.report_dir / 'report.md'}"
    )
    return {
        "model_version": version.version,
        "promoted": promote,
        "n_classes": metrics["n_classes"],
        "pca_components": trained.pca_components,
        "explained_variance": metrics["explained_variance"],
        "classifier": trained.classifier,
        "accuracy_train": train_scores["accuracy"],
        "accuracy_validation": chosen.validation_accuracy,
        "accuracy_test": test_scores["accuracy"] if test_scores else None,
        "unknown_threshold": trained.model.threshold,
        "features_computed": metrics["features"]["computed"],
        "features_cached": metrics["features"]["cached"],
        "rejected_files": metrics["features"]["rejected"],
        "timings_s": {**stages.seconds},
        "seconds_total": round(time.perf_counter() - started, 1),
        "report": str(version.report_dir / "report.md"),
    }


def _score(model: FruitModel, features: DataFrame) -> dict[str, Any]:
    """Accuracy, per-class report and confusion matrix of ``model`` on labelled features."""
    rows = (
        model.predict(features.withColumnRenamed("label", "true_label"))
        .select("true_label", "label")
        .collect()
    )
    return classification_report(
        [r.true_label for r in rows], [r.label for r in rows], model.classes
    )


def _feature_counts(runs: list[FeatureRun]) -> dict[str, int]:
    return {
        "images": sum(r.images for r in runs),
        "computed": sum(r.computed for r in runs),
        "cached": sum(r.cached for r in runs),
        "rejected": sum(len(r.rejected) for r in runs),
    }
