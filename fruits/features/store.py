"""The features table as a cache: a photo is featurized once per extractor, ever.

Keyed by the photo's sha256 (``image_id``) and the ``extractor`` string, so renaming or moving a
photo costs nothing and a different backbone, size or weights never hits another's features.
Missing features are computed by Spark in chunks, each committed as it finishes: a job killed
half-way resumes from the last committed chunk.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from fruits.config import AzureConfig, ImagesConfig
from fruits.errors import DataError
from fruits.features.featurizer import ExtractorSpec, featurize_udf
from fruits.sinks.tables import FEATURES
from fruits.sources.training import read_image_files, read_labelled

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.sinks.delta import Lake

__all__ = ["FeatureRun", "Rejected", "featurize_labelled"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Rejected:
    path: str
    reason: str
    detail: str


@dataclass
class FeatureRun:
    """What one pass over a labelled tree found and did."""

    images: int = 0
    cached: int = 0
    computed: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def featurize_labelled(
    spark: SparkSession,
    lake: Lake,
    location: str,
    *,
    split: str,
    spec: ExtractorSpec,
    images: ImagesConfig,
    chunk_size: int,
    azure: AzureConfig | None = None,
    progress: Progress | None = None,
) -> tuple[DataFrame, FeatureRun]:
    """Features for every usable photo of ``<location>/<Class>/*``, computing only missing ones.

    Returns (path, label, image_id, features) and what happened; unusable photos are listed in
    ``FeatureRun.rejected``, never raised.
    """
    from pyspark.sql import functions as F

    extensions = images.extensions
    listing = read_labelled(spark, location, images, azure).select(
        "path", "label", F.sha2("content", 256).alias("image_id")
    )
    keys = listing.collect()
    if not keys:
        raise DataError(f"no images ({', '.join(extensions)}) under {location}")
    labels = {row.path: row.label for row in keys}
    cached_ids = {
        row.image_id
        for row in lake.read(
            spark, FEATURES, columns=["image_id"], equals={"extractor": spec.extractor_id}
        )
        .distinct()
        .collect()
    }
    todo: dict[str, str] = {}  # image_id -> one path holding those bytes
    for row in keys:
        if row.image_id not in cached_ids:
            todo.setdefault(row.image_id, row.path)
    run = FeatureRun(images=len(keys), cached=len(keys) - len(todo))

    paths = sorted(todo.values())
    if progress:
        progress(0, len(paths))
    for start in range(0, len(paths), chunk_size):
        chunk = paths[start : start + chunk_size]
        computed = _featurize_paths(read_image_files(spark, chunk, images, azure), spec)
        good = computed.filter(computed.column("reason").is_null())
        run.rejected.extend(
            Rejected(r["path"], r["reason"], r["detail"])
            for r in computed.filter(computed.column("reason").is_valid()).to_pylist()
        )
        if good.num_rows:
            lake.append_arrow(_feature_rows(good, labels, split, spec), FEATURES)
        run.computed += good.num_rows
        if progress:
            progress(start + len(chunk), len(paths))

    rejected_paths = {r.path for r in run.rejected}
    keys_df = spark.createDataFrame(
        [(r.path, r.label, r.image_id) for r in keys if r.path not in rejected_paths],
        "path string, label string, image_id string",
    )
    features = lake.read(
        spark, FEATURES, columns=["image_id", "features"], equals={"extractor": spec.extractor_id}
    ).dropDuplicates(["image_id"])
    return keys_df.join(features, on="image_id", how="inner"), run


def _featurize_paths(files: DataFrame, spec: ExtractorSpec) -> pa.Table:
    featurize = featurize_udf(spec)
    return (
        files.select("path", featurize("content").alias("result"))
        .select("path", "result.*")
        .toArrow()
    )


def _feature_rows(
    good: pa.Table, labels: dict[str, str], split: str, spec: ExtractorSpec
) -> pa.Table:
    n = good.num_rows
    paths = good.column("path").to_pylist()
    now = dt.datetime.now(dt.UTC)
    return pa.table(
        {
            "image_id": good.column("image_id"),
            "path": paths,
            "label": [labels.get(p) for p in paths],
            "split": [split] * n,
            "features": good.column("features"),
            "extractor": [spec.extractor_id] * n,
            "computed_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        }
    )
