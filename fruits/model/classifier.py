"""The classifier on top of the features: Spark ML standardise -> PCA -> classifier.

:func:`train` compares the configured classifiers on an honest validation split (held-out runs
of consecutive video frames: fruits/model/splits.py), calibrates "unknown" there (the top
probability and the distance detector of fruits/model/unknown.py), then refits the chosen
settings on all the photos; :class:`FruitModel` is what the registry stores and what the batch
evaluation and the stream call to predict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fruits.config import TrainingConfig
from fruits.errors import DataError
from fruits.model.answers import (
    ANSWER_COLUMNS,
    ANSWER_SCHEMA,
    AnswerRule,
    calibrate_variety_threshold,
    kinds_of,
)
from fruits.model.metrics import (
    cumulative_components,
    standardized_variance_shares,
)
from fruits.model.splits import validation_mask
from fruits.model.unknown import Calibration, UnknownDetector, calibrate_unknown, fit_detector
from fruits.observe.drift import AnswerDistribution, answer_distribution

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import Column, DataFrame

    from fruits.model.scoring import LinearScorer

__all__ = ["ClassifierScore", "FruitModel", "TrainedModel", "train"]

Log = Callable[[str], None]

# Prediction columns (the predictions table's contract) added by FruitModel.predict.
PREDICTION_COLUMNS = ANSWER_COLUMNS


@dataclass(frozen=True)
class FruitModel:
    """A fitted pipeline with what it needs to turn probabilities into answers."""

    pipeline: PipelineModel
    classes: tuple[str, ...]
    threshold: float  # "unknown" below this top probability
    extractor: str
    top_k: int = 3
    # "unknown" also when the features are farther than its threshold from every training
    # photo (fruits/model/unknown.py); None: the probability alone (models before it existed).
    detector: UnknownDetector | None = None
    # Each class's kind (fruits/model/answers.py); empty: the package's taxonomy says.
    kinds: tuple[str, ...] = ()
    # Per class: "variety not sure" below this probability (answers.py); empty: none.
    variety_thresholds: tuple[float, ...] = ()

    @property
    def rule(self) -> AnswerRule:
        return AnswerRule.of(self)

    def predict(self, df: DataFrame, *, with_scores: bool = False) -> DataFrame:
        """``df`` with a ``features`` array column -> the same rows plus the answer's columns
        (fruits/model/answers.py: label, confidence, top_k, is_unknown, kind, kind_confidence,
        variety_not_sure), from Spark ML's probabilities through the same rule as the stream's
        numpy scorer. ``with_scores`` adds the detector's distance, ``unknown_distance`` (null
        without a detector): what calibration and evaluate's curve use, with the confidence.

        A ``label`` column already in ``df`` is replaced: rename ground truth beforehand.
        """
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql import functions as F

        kept = [c for c in df.columns if c not in (*PREDICTION_COLUMNS, "unknown_distance")]
        scored = self.pipeline.transform(_with_vector(df))
        probs = vector_to_array(F.col("probability")).cast("array<double>")
        answer = _answer_udf(self.rule)(F.col("features"), probs)
        distance = F.col("_answer.unknown_distance")
        return scored.withColumn("_answer", answer).select(
            *kept,
            *[F.col(f"_answer.{c}").alias(c) for c in PREDICTION_COLUMNS],
            *[F.when(~F.isnan(distance), distance).alias("unknown_distance")]
            if with_scores
            else [],
        )

    def answer_labelled(self, labelled: DataFrame, *keep: str) -> list[Any]:
        """Labelled photos (``label`` the truth, ``features``) -> one collected row per photo:
        the ``keep`` columns, ``true_label``, the answer without ``top_k`` and
        ``unknown_distance``: what evaluation reports are made of (training's and evaluate's)."""
        answered = self.predict(labelled.withColumnRenamed("label", "true_label"), with_scores=True)
        answer = [c for c in PREDICTION_COLUMNS if c != "top_k"]
        return answered.select(*keep, "true_label", *answer, "unknown_distance").collect()

    @property
    def unknown_rule(self) -> str:
        """What answers "unknown": probability, distance or both (fruits/model/unknown.py)."""
        if self.detector is None:
            return "probability"
        if self.detector.fused:
            return "fused"
        return "both" if self.threshold > 0 else "distance"

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
            detector=self.detector,
            kinds=self.kinds,
            variety_thresholds=self.variety_thresholds,
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
    validation_rejected: float  # share of validation photos answered "unknown"
    validation_answers: AnswerDistribution  # the calibrated held-out model's, for drift
    # Per domain (the dataset teaching a class most): its varieties' "not sure" probability.
    variety_thresholds: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def train(
    features: DataFrame,
    settings: TrainingConfig,
    *,
    extractor: str,
    log: Log = lambda message: None,
) -> TrainedModel:
    """Fit on (label, features) rows; returns the chosen model with how it was chosen."""
    from pyspark.ml import PipelineModel
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
    train_df, validation_df = _block_split(data, settings.validation_fraction, settings.seed)
    train_df = train_df.persist()
    validation_df = validation_df.persist()
    n_train, n_validation = train_df.count(), validation_df.count()
    timings: dict[str, float] = {}

    started = time.perf_counter()
    prepare, shares, k = _fit_prepare(train_df, settings.explained_variance, log)
    cumulative = [float(v) for v in np.cumsum(shares)]
    timings["pca"] = time.perf_counter() - started
    log(
        f"PCA: {k} components keep {cumulative[k - 1]:.3f} of the variance (target "
        f"{settings.explained_variance}); {n_train} training, {n_validation} validation photos"
    )
    train_pca = prepare.transform(train_df).select("label_index", "pca").persist()
    validation_pca = prepare.transform(validation_df).select("label_index", "pca").persist()

    comparison: list[ClassifierScore] = []
    fitted: dict[str, Any] = {}
    for name in settings.classifiers:
        started = time.perf_counter()
        fitted[name] = _classifier(name, settings).fit(train_pca)
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

    # Calibrate "unknown" on the validation photos (all of known classes, none of them near a
    # training frame) with the model that never saw them.
    started = time.perf_counter()
    held_out_model = FruitModel(
        PipelineModel(stages=[*prepare.stages, fitted[chosen]]),
        classes,
        threshold=0.0,
        extractor=extractor,
        top_k=1,
        detector=_fit_detector(train_df, settings),
    )
    truth = [F.col("label").alias("true_label"), _dataset_column(validation_df)]
    scored = held_out_model.predict(validation_df.select("features", *truth), with_scores=True)
    validation_scores = scored.select(
        "label",
        "confidence",
        "kind",
        "kind_confidence",
        "unknown_distance",
        "true_label",
        "dataset",
    ).collect()
    calibration = calibrate_unknown(
        [r.confidence for r in validation_scores],
        [r.unknown_distance for r in validation_scores],
        settings.unknown_reject_share,
        settings.unknown_detector,
    )
    class_domains = _class_domains(train_df, classes)
    domain_thresholds = _calibrate_varieties(
        validation_scores,
        calibration,
        class_domains,
        held_out_model.rule,
        settings.variety_wrong_share,
    )
    timings["calibrate"] = time.perf_counter() - started
    # What the calibrated model answers on photos it never saw: the reference that live answers
    # are compared with (fruits/observe/drift.py).
    validation_answers = answer_distribution(
        [r.label for r in validation_scores],
        [r.confidence for r in validation_scores],
        calibration.rejects(
            np.asarray([r.confidence for r in validation_scores], dtype=np.float64),
            np.asarray([r.unknown_distance for r in validation_scores], dtype=np.float64),
        ).tolist(),
    )
    rule = (
        f"fused score above {calibration.distance:.3f}"
        if settings.unknown_detector == "fused"
        else f"max probability below {calibration.probability:.4f} or distance above "
        f"{calibration.distance:.3f}"
    )
    log(
        f"chosen: {chosen}; unknown: {settings.unknown_detector}, {rule} "
        f"(rejects {calibration.rejected_share:.4f} of validation); variety not sure below "
        + ", ".join(f"{p:.2f} ({d})" for d, p in sorted(domain_thresholds.items()))
    )

    detector: UnknownDetector | None
    if settings.refit_all:
        # The chosen settings, refitted on every training photo: the validation's stretches of
        # rotation are then known too, which Test rewards (BENCHMARKS.md, section 3b, Honest
        # validation). The calibration is the held-out model's: a probability and a cosine
        # distance (and, fused, their p-values among validation photos), all scale-free, so
        # they carry over (the rejected share after the refit is measured there too).
        started = time.perf_counter()
        # Not a dataset's own validation split: it is what evaluate measures that dataset on.
        refit_validation = validation_df.where(~F.col("_own_split"))
        everything = train_df.unionByName(refit_validation.drop("_own_split"))
        prepare, _, _ = _fit_prepare(everything, k, log)
        all_pca = prepare.transform(everything).select("label_index", "pca").persist()
        final_classifier = _classifier(chosen, settings).fit(all_pca)
        detector = _fit_detector(everything, settings)
        all_pca.unpersist()
        timings["refit"] = time.perf_counter() - started
        log(f"refitted {chosen} on {n_train + refit_validation.count()} photos")
    else:
        final_classifier = fitted[chosen]
        detector = held_out_model.detector
    assert detector is not None
    pipeline = PipelineModel(stages=[*prepare.stages, final_classifier])

    for df in (train_df, validation_df, train_pca, validation_pca):
        df.unpersist()
    return TrainedModel(
        model=FruitModel(
            pipeline,
            classes,
            calibration.probability,
            extractor,
            settings.top_k,
            detector=detector.calibrated(calibration)
            if settings.unknown_detector != "probability"
            else None,
            kinds=kinds_of(classes),  # the taxonomy's, fixed into the model (model.json)
            variety_thresholds=tuple(domain_thresholds[domain] for domain in class_domains),
        ),
        classifier=chosen,
        pca_components=k,
        explained_variance=cumulative[k - 1],
        cumulative_variance=cumulative,
        comparison=comparison,
        n_train=n_train,
        n_validation=n_validation,
        validation_rejected=calibration.rejected_share,
        validation_answers=validation_answers,
        variety_thresholds=domain_thresholds,
        timings=timings,
    )


def _fit_prepare(
    df: DataFrame, target: float | int, log: Log
) -> tuple[PipelineModel, np.ndarray, int]:
    """Standardise -> PCA on ``df``: ``target`` components (an int) or the fewest that keep
    ``target`` of the variance (a float); returns the stages, the variance shares and k."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import StandardScaler
    from pyspark.ml.stat import Correlation

    scaler = StandardScaler(inputCol="vector", outputCol="scaled", withMean=True, withStd=True)
    scaler_model = scaler.fit(df)
    # The whole explained-variance curve comes from the correlation matrix's eigenvalues
    # (one distributed pass + a fast eigvalsh), so Spark's PCA (a full SVD) is fitted once.
    correlation = Correlation.corr(df, "vector").head()[0].toArray()  # type: ignore[index]
    shares = standardized_variance_shares(correlation, scaler_model.std.toArray() == 0)
    k = target if isinstance(target, int) else cumulative_components(shares, target)
    pca_model = _fit_pca(scaler_model.transform(df), k, log)
    return PipelineModel(stages=[scaler_model, pca_model]), shares, k


def _fit_pca(scaled: DataFrame, k: int, log: Log) -> Any:
    """Spark's PCA on ``scaled``, fitted again in one partition if its SVD does not converge.

    Spark's PCA takes the SVD of the features' covariance with LAPACK's divide-and-conquer
    routine (dgesdd, through breeze), which now and then fails to converge on a covariance as
    rank-deficient as this one (far fewer photos than features: a CI run's refit on 40 photos
    saw it once). The covariance is summed across partitions in the order their tasks finish,
    so its last bits vary from run to run; summed in one partition it is the same matrix to
    rounding, rounded differently, and a second failure is then as unlikely as the first.
    """
    from pyspark.ml.feature import PCA

    pca = PCA(k=k, inputCol="scaled", outputCol="pca")
    try:
        return pca.fit(scaled)
    except Exception as error:  # Py4JJavaError locally, a SparkConnect error through Connect
        if "NotConvergedException" not in str(error):
            raise
        log("PCA: the covariance's SVD did not converge; fitting again in one partition")
    try:
        return pca.fit(scaled.coalesce(1))
    except Exception as error:
        if "NotConvergedException" not in str(error):
            raise
        raise RuntimeError(
            "PCA: the SVD of the features' covariance did not converge, twice (LAPACK dgesdd); "
            "check the features for NaN or infinite values, or train on more photos"
        ) from None


def _fit_detector(rows: DataFrame, settings: TrainingConfig) -> UnknownDetector:
    """The detector over these photos' features and classes (collected: 4 bytes a feature,
    ~4 KB a photo at 1,056 features)."""
    from pyspark.sql import functions as F

    table = rows.select(
        F.col("features").cast("array<float>").alias("features"),
        F.col("label_index").cast("int").alias("label_index"),
    ).toArrow()
    column = table.column("features").combine_chunks()
    features = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    return fit_detector(
        features,
        table.column("label_index").to_numpy(),
        k=settings.unknown_neighbours,
        dims=settings.unknown_dims,
    )


def _classifier(name: str, settings: TrainingConfig) -> Any:
    from pyspark.ml.classification import (
        DecisionTreeClassifier,
        LogisticRegression,
        RandomForestClassifier,
    )

    features, label, seed = "pca", "label_index", settings.seed
    if name == "logistic_regression":
        return LogisticRegression(
            featuresCol=features,
            labelCol=label,
            maxIter=200,
            regParam=settings.regularization,
            family="multinomial",
            # The components are already on the standardised features' scale, the first ones
            # the widest. Spark's default re-standardisation would give each of the hundreds of
            # faint ones the weight of the first under the same penalty, and the fit then leans
            # on noise: on real photos (Grocery val) 0.77 of kinds right against 0.87 without
            # (BENCHMARKS.md, section 12).
            standardization=False,
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


def _block_split(data: DataFrame, fraction: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """(training, validation): a photo whose dataset has its own validation split says which
    side it is on (a ``held_out`` column, fruits/sources/datasets.py); any other photo is
    split per class and video, a contiguous run of ``fraction`` of the frames held out
    (fruits/model/splits.py); never random frames, whose neighbours in training make
    validation as easy as the training photos.

    Decided on the driver from (path, label) alone: a few bytes per photo, and the same split
    whatever the partitioning.
    """
    from pyspark.sql import functions as F

    given = "held_out" in data.columns
    keys = data.select("path", "label", F.col("held_out") if given else F.lit(None)).distinct()
    rows = [(r[0], r[1], r[2]) for r in keys.collect()]
    by_video = [(path, label) for path, label, held in rows if held is None]
    mask = validation_mask([p for p, _ in by_video], [c for _, c in by_video], fraction, seed)
    held_out = {path: held for (path, _), held in zip(by_video, mask, strict=True)}
    sides = data.sparkSession.createDataFrame(
        [
            (path, held if held is not None else held_out[path], held is not None)
            for path, _, held in rows
        ],
        "path string, _validation boolean, _own_split boolean",
    )
    marked = data.join(F.broadcast(sides), on="path", how="inner")
    if given:
        marked = marked.drop("held_out")
    training = marked.where(~F.col("_validation")).drop("_validation", "_own_split")
    validation = marked.where(F.col("_validation")).drop("_validation")
    return training, validation


def _dataset_column(df: DataFrame) -> Column:
    """The rows' ``dataset`` (the layout that taught them: fruits360, grocery), or one name for
    rows without it (a caller training on a single folder)."""
    from pyspark.sql import functions as F

    return (F.col("dataset") if "dataset" in df.columns else F.lit("photos")).alias("dataset")


def _class_domains(training: DataFrame, classes: Sequence[str]) -> tuple[str, ...]:
    """Each class's domain: the dataset that gives it the most training photos (a variety both
    datasets teach is mostly one of them)."""
    counts = training.groupBy("label", _dataset_column(training)).count().collect()
    most: dict[str, tuple[int, str]] = {}
    for row in counts:
        most[row["label"]] = max(most.get(row["label"], (0, "")), (row["count"], row["dataset"]))
    return tuple(most[c][1] if c in most else "photos" for c in classes)


def _calibrate_varieties(
    scores: Sequence[Any],
    calibration: Calibration,
    class_domains: Sequence[str],
    rule: AnswerRule,
    wrong_share: float,
) -> dict[str, float]:
    """Per domain, the probability below which its varieties are "not sure": calibrated on the
    validation photos answered one of its classes, with the calibrated "unknown" rule
    (fruits/model/answers.py). A domain of studio photos whose varieties the features tell
    apart keeps 0; real photos of look-alike varieties (three melons) get more."""
    index = {c: i for i, c in enumerate(rule.classes)}
    answered = np.asarray([index[r.label] for r in scores], dtype=np.int64)
    confidence = np.asarray([r.confidence for r in scores], dtype=np.float64)
    kind_confidence = np.asarray([r.kind_confidence for r in scores], dtype=np.float64)
    distance = np.asarray([r.unknown_distance for r in scores], dtype=np.float64)
    unknown = calibration.rejects(kind_confidence, distance)
    of_kind = np.asarray(rule.kinds, dtype=object)[answered] == np.asarray(
        [r.kind for r in scores], dtype=object
    )
    sure = ~unknown & ~calibration.rejects(confidence, distance) & of_kind
    right = np.asarray([r.label == r.true_label for r in scores], dtype=bool)
    domains = np.asarray(class_domains, dtype=object)
    answered_domain = domains[answered] if len(answered) else np.asarray([], dtype=object)
    return {
        domain: calibrate_variety_threshold(confidence[mask], sure[mask], right[mask], wrong_share)
        for domain in sorted(set(class_domains))
        for mask in [answered_domain == domain]
    }


def _answer_udf(rule: AnswerRule) -> Any:
    """A pandas UDF: (features array<float>, probabilities array<double>) -> the answer's
    struct (fruits/model/answers.py) and the detector's distance (NaN without one). (pandas is
    imported at module level: Spark reads the type hints against the module's globals.)"""
    from pyspark.sql.pandas.functions import pandas_udf

    @pandas_udf(f"{ANSWER_SCHEMA}, unknown_distance double")  # type: ignore[call-overload, untyped-decorator]
    def answer(features: pd.Series, probabilities: pd.Series) -> pd.DataFrame:
        if len(features) == 0:
            empty = rule.answer(np.zeros((0, 1)), np.zeros((0, len(rule.classes))))
            return empty.assign(unknown_distance=pd.Series(dtype="float64"))
        return rule.answer(
            np.stack(features.to_numpy()),
            np.stack(probabilities.to_numpy()),
            with_distance=True,
        )

    return answer


def _with_vector(df: DataFrame) -> DataFrame:
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    return df.withColumn("vector", array_to_vector(F.col("features")))


def _class_array(classes: Sequence[str]) -> Column:
    from pyspark.sql import functions as F

    return F.array(*[F.lit(c) for c in classes])
