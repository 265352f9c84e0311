"""The classifier on top of the features: Spark ML standardise -> PCA -> classifier.

:func:`train` compares the configured classifiers on a validation split carved from the
training photos and calibrates the "unknown" threshold there; :class:`FruitModel` is what the
registry stores and what the batch evaluation and the stream call to predict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fruits.config import TrainingConfig
from fruits.errors import DataError
from fruits.model.metrics import (
    cumulative_components,
    standardized_variance_shares,
    unknown_threshold,
)

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import Column, DataFrame

    from fruits.model.scoring import LinearScorer

__all__ = ["ClassifierScore", "FruitModel", "TrainedModel", "train"]

Log = Callable[[str], None]

# Prediction columns (the predictions table's contract) added by FruitModel.predict.
PREDICTION_COLUMNS = ("label", "confidence", "top_k", "is_unknown")


@dataclass(frozen=True)
class FruitModel:
    """A fitted pipeline with what it needs to turn probabilities into answers."""

    pipeline: PipelineModel
    classes: tuple[str, ...]
    threshold: float
    extractor: str
    top_k: int = 3

    def predict(self, df: DataFrame) -> DataFrame:
        """``df`` with a ``features`` array column -> the same rows plus label, confidence,
        top_k (array<struct<label, prob>>) and is_unknown (confidence below the threshold).

        A ``label`` column already in ``df`` is replaced: rename ground truth beforehand.
        """
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql import functions as F

        kept = [c for c in df.columns if c not in PREDICTION_COLUMNS]
        scored = self.pipeline.transform(_with_vector(df))
        probs = vector_to_array(F.col("probability")).cast("array<double>")
        ranked = F.sort_array(
            F.arrays_zip(probs.alias("prob"), _class_array(self.classes).alias("label")),
            asc=False,
        )
        top = F.slice(ranked, 1, self.top_k)
        return scored.withColumn("_top", top).select(
            *kept,
            F.col("_top")[0]["label"].alias("label"),
            F.col("_top")[0]["prob"].alias("confidence"),
            F.transform(
                "_top",
                lambda s: F.struct(s["label"].alias("label"), s["prob"].alias("prob")),
            ).alias("top_k"),
            (F.col("_top")[0]["prob"] < F.lit(self.threshold)).alias("is_unknown"),
        )

    def linear_scorer(self) -> LinearScorer | None:
        """The whole pipeline as one numpy map when the classifier is a logistic regression
        (fruits/model/scoring.py); None for the trees, which only Spark ML scores."""
        from pyspark.ml.classification import LogisticRegressionModel
        from pyspark.ml.feature import PCAModel, StandardScalerModel

        from fruits.model.scoring import LinearScorer

        scaler, pca, classifier = self.pipeline.stages
        if not isinstance(classifier, LogisticRegressionModel):
            return None
        assert isinstance(scaler, StandardScalerModel) and isinstance(pca, PCAModel)
        return LinearScorer.fold(
            mean=scaler.mean.toArray(),
            std=scaler.std.toArray(),
            components=pca.pc.toArray(),
            coefficients=classifier.coefficientMatrix.toArray(),
            intercepts=classifier.interceptVector.toArray(),
            classes=self.classes,
            threshold=self.threshold,
            top_k=self.top_k,
        )


@dataclass(frozen=True)
class ClassifierScore:
    name: str
    validation_accuracy: float
    fit_seconds: float


@dataclass
class TrainedModel:
    model: FruitModel
    classifier: str
    pca_components: int
    explained_variance: float  # cumulative share kept by pca_components
    cumulative_variance: list[float]  # per number of components, for the report's plot
    comparison: list[ClassifierScore]
    n_train: int
    n_validation: int
    timings: dict[str, float] = field(default_factory=dict)


def train(
    features: DataFrame,
    settings: TrainingConfig,
    *,
    extractor: str,
    log: Log = lambda message: None,
) -> TrainedModel:
    """Fit on (label, features) rows; returns the chosen model with how it was chosen."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import PCA, StandardScaler
    from pyspark.ml.stat import Correlation
    from pyspark.sql import functions as F

    classes = tuple(sorted(r.label for r in features.select("label").distinct().collect()))
    if len(classes) < 2:
        raise DataError(f"training needs at least 2 classes with usable photos, got {len(classes)}")
    # Nominal metadata tells the classifiers the number of classes; without it, trees infer it
    # from the data and refuse more than 100 (Fruits-360 has 114+).
    label_meta = {"ml_attr": {"type": "nominal", "name": "label_index", "vals": list(classes)}}
    data = _with_vector(features).withColumn(
        "label_index",
        (F.array_position(_class_array(classes), F.col("label")) - 1)
        .cast("double")
        .alias("label_index", metadata=label_meta),
    )
    train_df, validation_df = _stratified_split(data, settings.validation_fraction, settings.seed)
    train_df = train_df.persist()
    validation_df = validation_df.persist()
    n_train, n_validation = train_df.count(), validation_df.count()
    timings: dict[str, float] = {}

    started = time.perf_counter()
    scaler = StandardScaler(inputCol="vector", outputCol="scaled", withMean=True, withStd=True)
    scaler_model = scaler.fit(train_df)
    # The whole explained-variance curve comes from the correlation matrix's eigenvalues
    # (one distributed pass + a fast eigvalsh), so Spark's PCA (a full SVD) is fitted once.
    correlation = Correlation.corr(train_df, "vector").head()[0].toArray()  # type: ignore[index]
    shares = standardized_variance_shares(correlation, scaler_model.std.toArray() == 0)
    k = cumulative_components(shares, settings.explained_variance)
    pca_model = PCA(k=k, inputCol="scaled", outputCol="pca").fit(scaler_model.transform(train_df))
    cumulative = [float(v) for v in np.cumsum(shares)]
    timings["pca"] = time.perf_counter() - started
    log(
        f"PCA: {k} components keep {cumulative[k - 1]:.3f} of the variance (target "
        f"{settings.explained_variance})"
    )

    prepare = PipelineModel(stages=[scaler_model, pca_model])
    train_pca = prepare.transform(train_df).select("label_index", "pca").persist()
    validation_pca = prepare.transform(validation_df).select("label_index", "pca").persist()

    comparison: list[ClassifierScore] = []
    fitted: dict[str, Any] = {}
    for name in settings.classifiers:
        started = time.perf_counter()
        estimator = _classifier(name, settings.seed)
        fitted[name] = Pipeline(stages=[estimator]).fit(train_pca)
        seconds = time.perf_counter() - started
        accuracy = _accuracy(fitted[name].transform(validation_pca))
        comparison.append(ClassifierScore(name, accuracy, seconds))
        timings[f"fit_{name}"] = seconds
        log(f"{name}: validation accuracy {accuracy:.4f} ({seconds:.1f} s)")

    chosen = (
        max(comparison, key=lambda s: s.validation_accuracy).name
        if settings.classifier == "best"
        else settings.classifier
    )
    classifier_model = fitted[chosen].stages[0]
    pipeline = PipelineModel(stages=[scaler_model, pca_model, classifier_model])

    # Calibrate "unknown" on the validation photos: all are of known classes.
    probe = FruitModel(pipeline, classes, threshold=0.0, extractor=extractor, top_k=1)
    max_probs = [
        r.confidence
        for r in probe.predict(validation_df.select("features")).select("confidence").collect()
    ]
    threshold = unknown_threshold(max_probs, settings.unknown_reject_share)
    log(f"chosen: {chosen}; unknown below max probability {threshold:.4f}")

    for df in (train_df, validation_df, train_pca, validation_pca):
        df.unpersist()
    return TrainedModel(
        model=FruitModel(pipeline, classes, threshold, extractor, settings.top_k),
        classifier=chosen,
        pca_components=k,
        explained_variance=cumulative[k - 1],
        cumulative_variance=cumulative,
        comparison=comparison,
        n_train=n_train,
        n_validation=n_validation,
        timings=timings,
    )


def _classifier(name: str, seed: int) -> Any:
    from pyspark.ml.classification import (
        DecisionTreeClassifier,
        LogisticRegression,
        RandomForestClassifier,
    )

    features, label = "pca", "label_index"
    if name == "logistic_regression":
        return LogisticRegression(
            featuresCol=features, labelCol=label, maxIter=200, regParam=1e-3, family="multinomial"
        )
    # Trees: Spark keeps (features x bins x classes) statistics per node being split, so with
    # 114 classes a deep tree needs many passes; depth 10 and 16 bins keep a fit to minutes.
    # Depth 5 (the default) would have fewer leaves than Fruits-360 has classes.
    if name == "decision_tree":
        return DecisionTreeClassifier(
            featuresCol=features,
            labelCol=label,
            maxDepth=10,
            maxBins=16,
            maxMemoryInMB=512,
            seed=seed,
        )
    if name == "random_forest":
        return RandomForestClassifier(
            featuresCol=features,
            labelCol=label,
            numTrees=20,
            maxDepth=10,
            maxBins=16,
            maxMemoryInMB=512,
            seed=seed,
        )
    raise ValueError(f"unknown classifier {name}")


def _accuracy(predictions: DataFrame) -> float:
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    evaluator = MulticlassClassificationEvaluator(
        labelCol="label_index", predictionCol="prediction", metricName="accuracy"
    )
    return float(evaluator.evaluate(predictions))


def _stratified_split(data: DataFrame, fraction: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """Per class, the first ``fraction`` of photos in a seeded hash order go to validation.

    Hash order (not rand()) makes the split the same whatever the partitioning.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("label").orderBy(F.xxhash64("image_id", F.lit(seed)), "path")
    ranked = data.withColumn("_rank", F.percent_rank().over(order))
    validation = ranked.where(F.col("_rank") < fraction).drop("_rank")
    training = ranked.where(F.col("_rank") >= fraction).drop("_rank")
    return training, validation


def _with_vector(df: DataFrame) -> DataFrame:
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    return df.withColumn("vector", array_to_vector(F.col("features")))


def _class_array(classes: Sequence[str]) -> Column:
    from pyspark.sql import functions as F

    return F.array(*[F.lit(c) for c in classes])
