"""The features table as a cache: a photo is featurized once per extractor.

A listed photo whose (path, size, modification time) is in the table for this extractor is a
cache hit, found without reading the photo. Any other is read once, by the featurizer's UDF,
which hashes it (``image_id``, its sha256) and featurizes it in the same pass, as the stream
does; its row records the key for the next run. Features are computed by Spark in chunks, each
committed as it finishes: a job killed half-way resumes from the last committed chunk. The
``extractor`` string is part of every lookup, so a different backbone, size or weights never
hits another's features.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from fruits.config import AzureConfig, ImagesConfig
from fruits.errors import DataError
from fruits.features.featurizer import ExtractorSpec, featurize_udf
from fruits.sinks.tables import FEATURES
from fruits.sources.training import PhotoFile, list_labelled, read_image_files
from fruits.spark import one_task_per_slot

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.sinks.delta import Lake

__all__ = ["FeatureRun", "Rejected", "featurize_labelled"]

Progress = Callable[[int, int], None]
_IN_FLIGHT = 2  # chunks submitted to Spark at a time


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
    photos = list_labelled(spark, location, images, azure)
    if not photos:
        raise DataError(f"no images ({', '.join(images.extensions)}) under {location}")
    lake.add_missing_columns(FEATURES)  # a table from before size_bytes/modified_at
    cached = _cached_keys(lake, spec)
    keys: list[tuple[str, str, str]] = []  # (path, label, image_id) of every usable photo
    todo: list[PhotoFile] = []
    for photo in photos:
        image_id = cached.get((photo.path, photo.size_bytes, photo.modified_us))
        if image_id is None:
            todo.append(photo)
        else:
            keys.append((photo.path, photo.label, image_id))
    run = FeatureRun(images=len(photos), cached=len(keys))

    if progress:
        progress(0, len(todo))
    featurize = featurize_udf(spec) if todo else None
    done = 0

    def commit(chunk: list[PhotoFile], job: Future[pa.Table]) -> None:
        nonlocal done
        computed = job.result()
        good, rejected = _outcomes(chunk, computed)
        run.rejected.extend(rejected)
        if good:
            lake.append_arrow(_feature_rows(good, computed, split, spec), FEATURES)
            keys.extend((photo.path, photo.label, image_id) for photo, image_id, _ in good)
        run.computed += len(good)
        done += len(chunk)
        if progress:
            progress(done, len(todo))

    # Two chunks in flight: while one chunk's Spark job runs, the driver plans the next one
    # and commits the one before, so the task slots do not wait for the driver between jobs.
    # Chunks are committed in order, each as soon as it is done.
    in_flight: deque[tuple[list[PhotoFile], Future[pa.Table]]] = deque()
    with ThreadPoolExecutor(max_workers=_IN_FLIGHT, thread_name_prefix="features") as pool:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            job = pool.submit(_featurize_files, spark, chunk, featurize, images, azure)
            in_flight.append((chunk, job))
            if len(in_flight) == _IN_FLIGHT:
                commit(*in_flight.popleft())
        while in_flight:
            commit(*in_flight.popleft())

    keys_df = spark.createDataFrame(keys, "path string, label string, image_id string")
    features = lake.read(
        spark, FEATURES, columns=["image_id", "features"], equals={"extractor": spec.extractor_id}
    ).dropDuplicates(["image_id"])
    return keys_df.join(features, on="image_id", how="inner"), run


def _cached_keys(lake: Lake, spec: ExtractorSpec) -> dict[tuple[str, int, int], str]:
    """(path, size in bytes, modification time in us) -> image_id, for this extractor's rows
    that have the key (rows written before it existed have nulls: never a hit)."""
    rows = lake.read_arrow(
        FEATURES,
        columns=["path", "size_bytes", "modified_at", "image_id"],
        equals={"extractor": spec.extractor_id},
    )
    modified = rows.column("modified_at").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return {
        (path, size, micros): image_id
        for path, size, micros, image_id in zip(
            rows.column("path").to_pylist(),
            rows.column("size_bytes").to_pylist(),
            modified.to_pylist(),
            rows.column("image_id").to_pylist(),
            strict=True,
        )
        if path is not None and size is not None and micros is not None
    }


def _featurize_files(
    spark: SparkSession,
    chunk: list[PhotoFile],
    featurize: Any,
    images: ImagesConfig,
    azure: AzureConfig | None,
) -> pa.Table:
    """(path, image_id, features, reason, detail) of the chunk's files: one Spark job, one
    task per task slot (as a micro-batch of the stream), each photo read once, hashed and
    featurized by the same UDF (:func:`~fruits.features.featurizer.featurize_udf`)."""
    files = read_image_files(spark, [p.path for p in chunk], images, azure)
    return (
        one_task_per_slot(files)
        .select("path", featurize("content").alias("result"))
        .select("path", "result.*")
        .toArrow()
    )


def _outcomes(
    chunk: list[PhotoFile], computed: pa.Table
) -> tuple[list[tuple[PhotoFile, str, int]], list[Rejected]]:
    """Every photo of the chunk exactly once: usable (photo, image_id, row in ``computed``) or
    rejected with a reason, a photo Spark did not give back included (``missing``)."""
    listed = {photo.path: photo for photo in chunk}
    good: list[tuple[PhotoFile, str, int]] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    rows = zip(
        computed.column("path").to_pylist(),
        computed.column("image_id").to_pylist(),
        computed.column("reason").to_pylist(),
        computed.column("detail").to_pylist(),
        strict=True,
    )
    for index, (path, image_id, reason, detail) in enumerate(rows):
        photo = listed.get(path)
        if photo is None or path in seen:
            continue  # not asked for (cannot happen with exact paths), or given twice
        seen.add(path)
        if reason is None and image_id is not None:
            good.append((photo, image_id, index))
        else:
            rejected.append(Rejected(path, reason or "missing", detail or ""))
    rejected.extend(
        Rejected(p.path, "missing", "listed, then not read back (deleted or renamed since?)")
        for p in chunk
        if p.path not in seen
    )
    return good, rejected


def _feature_rows(
    good: list[tuple[PhotoFile, str, int]], computed: pa.Table, split: str, spec: ExtractorSpec
) -> pa.Table:
    n = len(good)
    now = dt.datetime.now(dt.UTC)
    return pa.table(
        {
            "image_id": [image_id for _, image_id, _ in good],
            "path": [photo.path for photo, _, _ in good],
            "label": [photo.label for photo, _, _ in good],
            "split": [split] * n,
            "features": computed.column("features").take([index for _, _, index in good]),
            "extractor": [spec.extractor_id] * n,
            "computed_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
            # The listing's key, taken before the file was read: if it changed in between,
            # the next run sees a newer key and featurizes it again (never a stale hit).
            "size_bytes": pa.array([photo.size_bytes for photo, _, _ in good], pa.int64()),
            "modified_at": pa.array(
                [photo.modified_us for photo, _, _ in good], pa.timestamp("us", tz="UTC")
            ),
        }
    )
