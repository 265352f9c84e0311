"""``fruits train``: labelled photos -> features -> PCA + classifiers -> evaluation -> a version.

The same :func:`run_training` is what a Databricks job calls.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from batch.report import unknown_curve, write_report
from fruits.config import Config, is_url
from fruits.console import Stages, log, progress_printer
from fruits.features.featurizer import ExtractorSpec, ship_backend
from fruits.features.store import FeatureRun, featurize_labelled
from fruits.model.classifier import FruitModel, train
from fruits.model.metrics import classification_report, two_level_report
from fruits.model.registry import ModelRegistry
from fruits.model.splits import left_out_classes
from fruits.model.taxonomy import default_taxonomy
from fruits.sinks.delta import open_lake
from fruits.sources.datasets import LabelledDataset, Split, labelled_datasets
from fruits.sources.training import check_labelled_tree
from fruits.spark import get_spark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["run_training"]


def run_training(
    config: Config, data: str | Sequence[str], *, promote: bool = True
) -> dict[str, Any]:
    """Train on one or several labelled datasets (fruits/sources/datasets.py: a Fruits-360
    folder's ``Training``, a Grocery folder's ``train`` and ``val``; comma-separated in a
    string), scoring their test photos when they have some, as one MLflow run; register the
    model (``champion`` unless ``promote`` is false); returns the summary."""
    import mlflow

    datasets = labelled_datasets(data)
    registry = ModelRegistry(config)
    registry.use()
    name = "+".join(d.root.rsplit("/", 1)[-1] for d in datasets)
    with mlflow.start_run(run_name=f"train {name}"):
        _log_settings(config, _data_spec(datasets))
        return _train(config, datasets, registry, promote=promote)


def _data_spec(datasets: Sequence[LabelledDataset]) -> str:
    return ",".join(d.root for d in datasets)


def _train(
    config: Config, datasets: list[LabelledDataset], registry: ModelRegistry, *, promote: bool
) -> dict[str, Any]:
    started = time.perf_counter()
    for dataset in datasets:
        for split in dataset.training:
            check_labelled_tree(split.location)
    tests = [(d, d.test) for d in datasets if d.test is not None]
    spec = ExtractorSpec.from_config(config)
    stages = Stages()
    with stages("spark start"):
        spark = get_spark(config)
    ship_backend(spark, spec)  # the ONNX export (made once) to every executor, through Spark
    lake = open_lake(config)

    def features_of(
        dataset: LabelledDataset, split: Split, augmentation: int = 0
    ) -> tuple[DataFrame, FeatureRun]:
        copy = f" augmented-{augmentation}" if augmentation else ""
        features, run = featurize_labelled(
            spark,
            lake,
            split.location,
            split=split.name,
            spec=dataclasses.replace(spec, augmentation=augmentation),
            images=config.images,
            azure=config.azure,
            chunk_size=config.training.feature_chunk_size,
            progress=progress_printer(f"features {dataset.name} {split.name}{copy}"),
        )
        return _as_varieties(features, dataset, split, augmented=augmentation > 0), run

    with stages("features Training"):
        train_features, train_run = _union(
            [features_of(d, split) for d in datasets for split in d.training]
        )
        augmented = [
            features_of(d, split, n)
            for n in range(1, config.training.augmentations + 1)
            for d in datasets
            if d.is_studio
            for split in d.training
        ]
        augmented_run = None
        if augmented:
            augmented_features, augmented_run = _union(augmented)
            augmented_run.rejected.clear()  # the same photos as the real ones', counted there
            train_features = train_features.unionByName(augmented_features)
            log(
                f"synthetic phone photos of the studio photos: {augmented_run.images} "
                f"({augmented_run.cached} cached, {augmented_run.computed} computed)"
            )
        # Used by several Spark jobs below (classes, split, scoring): build the join once.
        train_features = train_features.persist()
        log(
            f"Training photos: {train_run.images} ({train_run.cached} cached, "
            f"{train_run.computed} computed, {len(train_run.rejected)} unreadable)"
        )
        left_out = _leave_classes_out(train_features, config)
        if left_out:
            from pyspark.sql import functions as F

            train_features = train_features.where(~F.col("label").isin(left_out)).persist()
            log(f"left out of training ({len(left_out)} classes): {', '.join(left_out)}")
    with stages("train"):
        trained = train(train_features, config.training, extractor=spec.extractor_id, log=log)
    runs = [train_run, *([augmented_run] if augmented_run else [])]
    test_scores = None
    curve = None
    with stages("evaluate"):
        train_scores, _ = _score(trained.model, train_features)
        if tests:
            test_features, test_run = _union([features_of(d, split) for d, split in tests])
            runs.append(test_run)
            test_scores, scored = _score(trained.model, test_features)
            log(
                f"Test accuracy {test_scores['accuracy']:.4f} on {test_scores['n_images']} "
                f"photos of known classes, {test_scores['known_rejected']:.4f} of them "
                "answered unknown"
            )
            if "unseen" in test_scores:
                log(
                    f"Test photos of the left-out classes answered unknown: "
                    f"{test_scores['unseen']['caught']:.4f} of {test_scores['unseen']['n_images']}"
                )
                curve = unknown_curve(scored, trained.model.classes, trained.model.unknown_rule)

    training_dir = datasets[0].training[0].location
    _log_datasets(
        {"Training": (",".join(s.location for d in datasets for s in d.training), train_features)}
        | ({"Test": (",".join(s.location for _, s in tests), test_features)} if test_scores else {})
    )
    train_features.unpersist()
    chosen = next(s for s in trained.comparison if s.name == trained.classifier)
    metrics: dict[str, Any] = {
        "n_classes": len(trained.model.classes),
        "classes": list(trained.model.classes),
        "classifier": trained.classifier,
        **spec.identity,
        "pca_components": trained.pca_components,
        "explained_variance": round(trained.explained_variance, 6),
        "explained_variance_target": config.training.explained_variance,
        "unknown_threshold": trained.model.threshold,
        "unknown": {
            "rule": config.training.unknown_detector,
            "reject_share_target": config.training.unknown_reject_share,
            "probability_below": trained.model.threshold,
            "distance_above": trained.model.detector.threshold if trained.model.detector else None,
            "neighbours": config.training.unknown_neighbours,
            "dims": config.training.unknown_dims,
        },
        "validation_split": _validation_split(datasets, config.training.validation_fraction),
        "datasets": {d.root: d.layout for d in datasets},
        "refit_all": config.training.refit_all,
        "augmentations": config.training.augmentations,
        "augmented_photos": augmented_run.images if augmented_run else 0,
        "n_train": trained.n_train,
        "left_out_classes": left_out,
        "comparison": [dataclasses.asdict(s) for s in trained.comparison],
        "train": train_scores,
        "validation": {
            "n_images": trained.n_validation,
            "accuracy": chosen.validation_accuracy,
            "known_rejected": trained.validation_rejected,
            # Per domain: its varieties are "not sure" below this probability.
            "variety_thresholds": trained.variety_thresholds,
            # The answers' distribution: the reference of drift (fruits/observe/drift.py).
            "answers": trained.validation_answers.as_dict(),
        },
        "test": test_scores,
        "unknown_curve": curve,
        "features": _feature_counts(runs),
        "rejected_files": [dataclasses.asdict(r) for run in runs for r in run.rejected],
        "data": _data_spec(datasets),
    }
    with stages("register"):
        metrics["timings"] = {
            **stages.seconds,
            **{k: round(v, 2) for k, v in trained.timings.items()},
        }
        _log_results(metrics, trained.cumulative_variance)
        version = registry.register(
            trained.model,
            spec,
            tags={
                **{k: metrics[k] for k in ("classifier", "pca_components", "explained_variance")},
                **{f"accuracy_{s}": (metrics[s] or {}).get("accuracy") for s in _SPLITS},
            },
            example=_example_photo(training_dir),
        )
        if promote:
            registry.promote(version.version)
    import mlflow

    mlflow.log_metrics(
        {
            "seconds_register": stages.seconds["register"],
            "seconds_total": round(time.perf_counter() - started, 1),
        }
    )
    report = _local_artifact(mlflow.get_artifact_uri("report/report.md"))
    log(
        f"model version {version.version} of {registry} registered"
        f"{' and made champion' if promote else ''}; run {version.run_id}; report: {report}"
    )
    return {
        "model_version": version.version,
        "promoted": promote,
        "run_id": version.run_id,
        "n_classes": metrics["n_classes"],
        "pca_components": trained.pca_components,
        "explained_variance": metrics["explained_variance"],
        "classifier": trained.classifier,
        "accuracy_train": train_scores["accuracy"],
        "accuracy_validation": chosen.validation_accuracy,
        "accuracy_test": test_scores["accuracy"] if test_scores else None,
        "kind_accuracy_test": test_scores["two_level"].get("kind_right") if test_scores else None,
        "validation_known_rejected": trained.validation_rejected,
        "test_known_rejected": test_scores["known_rejected"] if test_scores else None,
        "test_unseen_caught": test_scores["unseen"]["caught"]
        if test_scores and "unseen" in test_scores
        else None,
        "left_out_classes": left_out,
        "unknown_threshold": trained.model.threshold,
        "unknown_distance": trained.model.detector.threshold if trained.model.detector else None,
        "n_train": trained.n_train,
        "n_validation": trained.n_validation,
        "augmented_photos": metrics["augmented_photos"],
        "features_computed": metrics["features"]["computed"],
        "features_cached": metrics["features"]["cached"],
        "rejected_files": metrics["features"]["rejected"],
        "timings_s": {**stages.seconds},
        "seconds_total": round(time.perf_counter() - started, 1),
        "report": report,
    }


_SPLITS = ("train", "validation", "test")


def _key(name: str) -> str:
    """A stage or classifier name as part of an MLflow metric key."""
    return name.replace(" ", "_")


def _log_settings(config: Config, data: str) -> None:
    """The run's parameters known before training."""
    import mlflow

    spec = ExtractorSpec.from_config(config)
    settings = config.training
    mlflow.log_params(
        {
            **spec.identity,
            "backend": spec.backend,
            "pca_explained_variance_target": settings.explained_variance,
            "classifiers": ",".join(settings.classifiers),
            "classifier_choice": settings.classifier,
            "validation_fraction": settings.validation_fraction,
            "unknown_reject_share": settings.unknown_reject_share,
            "unknown_detector": settings.unknown_detector,
            "unknown_neighbours": settings.unknown_neighbours,
            "unknown_dims": settings.unknown_dims,
            "regularization": settings.regularization,
            "refit_all": settings.refit_all,
            "leave_out_share": settings.leave_out_share,
            "augmentations": settings.augmentations,
            "top_k": settings.top_k,
            "seed": settings.seed,
            "data": data,
        }
    )


def _log_datasets(splits: dict[str, tuple[str, DataFrame]]) -> None:
    """Each split's photos (path, label, image_id) as an MLflow input dataset of the run."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    for name, (location, features) in splits.items():
        frame = features.select("path", "label", "image_id").orderBy("path").toPandas()
        try:
            with warnings.catch_warnings():  # "can be interpreted in multiple ways": a folder
                warnings.simplefilter("ignore", UserWarning)
                dataset = from_pandas(frame, source=location, name=name, targets="label")
        except Exception:  # a location MLflow has no dataset source for (az://...)
            dataset = from_pandas(frame, name=name, targets="label")
        mlflow.log_input(dataset, context="training" if name == "Training" else "testing")


def _log_results(metrics: dict[str, Any], cumulative_variance: list[float]) -> None:
    """The run's results: what PCA kept, accuracy per split and per classifier, time per stage,
    the report (markdown, metrics.json, PNG plots)."""
    import mlflow

    mlflow.log_params(
        {
            "pca_components": metrics["pca_components"],
            "explained_variance": metrics["explained_variance"],
            "classifier": metrics["classifier"],
            "n_classes": metrics["n_classes"],
        }
    )
    values: dict[str, float] = {
        "explained_variance": metrics["explained_variance"],
        "unknown_threshold": metrics["unknown_threshold"],
        **{f"accuracy_{s}": metrics[s]["accuracy"] for s in _SPLITS if metrics.get(s)},
        **{f"n_images_{s}": metrics[s]["n_images"] for s in _SPLITS if metrics.get(s)},
        **{
            f"known_rejected_{s}": metrics[s]["known_rejected"]
            for s in _SPLITS
            if metrics.get(s) and metrics[s].get("known_rejected") is not None
        },
    }
    for split in _SPLITS:  # the answers at both levels (fruits/model/metrics.py)
        two_level = (metrics.get(split) or {}).get("two_level") or {}
        values |= {f"{k}_{split}": float(v) for k, v in two_level.items() if k != "n_images"}
    if metrics.get("test") and "unseen" in metrics["test"]:
        values["unseen_caught_test"] = metrics["test"]["unseen"]["caught"]
    for row in metrics["comparison"]:
        values[f"validation_accuracy_{row['name']}"] = row["validation_accuracy"]
        values[f"fit_seconds_{row['name']}"] = row["fit_seconds"]
    values |= {f"seconds_{_key(k)}": float(v) for k, v in metrics["timings"].items()}
    mlflow.log_metrics(values)
    with tempfile.TemporaryDirectory() as folder:
        write_report(Path(folder), metrics, cumulative_variance)
        mlflow.log_artifacts(folder, "report")


def _example_photo(training_dir: str) -> bytes | None:
    """One training photo's bytes: the registered model's input example (local data only)."""
    if is_url(training_dir):
        return None
    for photo in sorted(Path(training_dir).rglob("*")):
        if photo.suffix.lower() in (".jpg", ".jpeg") and not photo.parent.name.startswith("."):
            return photo.read_bytes()
    return None


def _as_varieties(
    features: DataFrame, dataset: LabelledDataset, split: Split, *, augmented: bool = False
) -> DataFrame:
    """A split's rows labelled with the taxonomy's varieties (fruits/model/taxonomy.py), with
    the side of the validation split the dataset decides (``held_out``; null: by video), the
    dataset (``dataset``: its layout; a domain the variety threshold is calibrated for) and
    whether they are synthetic phone photos (``augmented``; a copy shares its photo's path,
    so it lands on its photo's side of the validation split)."""
    from pyspark.sql import functions as F

    taxonomy = default_taxonomy()
    renamed = {c: v for (d, c), v in taxonomy.varieties.items() if d == dataset.layout and c != v}
    label = F.col("label")
    if renamed:
        mapping = F.create_map(*[F.lit(x) for pair in renamed.items() for x in pair])
        label = F.coalesce(mapping[F.col("label")], F.col("label"))
    held_out = F.lit(split.held_out).cast("boolean")
    return (
        features.withColumn("label", label)
        .withColumn("held_out", held_out)
        .withColumn("augmented", F.lit(augmented))
        .withColumn("dataset", F.lit(dataset.layout))
    )


def _union(parts: list[tuple[DataFrame, FeatureRun]]) -> tuple[DataFrame, FeatureRun]:
    """The rows of several splits, and what their feature passes did, as one."""
    frames = [frame for frame, _ in parts]
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    runs = [run for _, run in parts]
    merged = FeatureRun(
        images=sum(r.images for r in runs),
        cached=sum(r.cached for r in runs),
        computed=sum(r.computed for r in runs),
        rejected=[x for r in runs for x in r.rejected],
    )
    return union, merged


def _validation_split(datasets: Sequence[LabelledDataset], fraction: float) -> str:
    parts = []
    for dataset in datasets:
        own = [s.name for s in dataset.training if s.held_out]
        how = (
            f"its own {', '.join(own)} split"
            if own
            else f"per class and video, one contiguous run of {fraction:.0%} of the frames"
        )
        parts.append(f"{dataset.layout}: {how}" if len(datasets) > 1 else how)
    return "; ".join(parts)


def _local_artifact(uri: str) -> str:
    """A local path for a file: artifact URI (the default store), else the URI itself."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def _score(model: FruitModel, features: DataFrame) -> tuple[dict[str, Any], list[Any]]:
    """Accuracy, per-class report and confusion matrix of ``model`` on the photos of classes it
    knows, with the share of them answered "unknown"; photos of other classes (left out of
    training) under ``unseen``: how many were caught. Also the rows (true label, confidence,
    distance, is_unknown), for the curve."""
    rows = model.answer_labelled(features)
    known_classes = set(model.classes)
    known = [r for r in rows if r.true_label in known_classes]
    unseen = [r for r in rows if r.true_label not in known_classes]
    report = classification_report(
        [r.true_label for r in known], [r.label for r in known], model.classes
    )
    report["known_rejected"] = sum(r.is_unknown for r in known) / len(known) if known else None
    report["two_level"] = _two_level(known)
    if unseen:
        report["unseen"] = {
            "n_images": len(unseen),
            "caught": sum(r.is_unknown for r in unseen) / len(unseen),
            "two_level": _two_level(unseen),
            "classes": sorted({r.true_label for r in unseen}),
            "caught_per_class": {
                label: round(
                    sum(r.is_unknown for r in unseen if r.true_label == label)
                    / sum(1 for r in unseen if r.true_label == label),
                    4,
                )
                for label in sorted({r.true_label for r in unseen})
            },
        }
    return report, rows


def _two_level(rows: list[Any]) -> dict[str, Any]:
    """The answers at both levels against the truth (fruits/model/metrics.py), the true kind
    from the taxonomy."""
    taxonomy = default_taxonomy()
    return two_level_report(
        [taxonomy.kind(r.true_label) for r in rows],
        [r.true_label for r in rows],
        [r.kind for r in rows],
        [r.label for r in rows],
        [bool(r.is_unknown) for r in rows],
        [bool(r.variety_not_sure) for r in rows],
    )


def _leave_classes_out(features: DataFrame, config: Config) -> list[str]:
    """``training.leave_out_share`` of the classes, drawn with ``training.seed``."""
    if config.training.leave_out_share <= 0:
        return []
    classes = [r.label for r in features.select("label").distinct().collect()]
    return left_out_classes(classes, config.training.leave_out_share, config.training.seed)


def _feature_counts(runs: list[FeatureRun]) -> dict[str, int]:
    return {
        "images": sum(r.images for r in runs),
        "computed": sum(r.computed for r in runs),
        "cached": sum(r.cached for r in runs),
        "rejected": sum(len(r.rejected) for r in runs),
    }
