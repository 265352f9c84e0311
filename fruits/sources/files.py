"""Spark's file source (``binaryFile``) over a landing folder (the embedded default), or over
Blob through Hadoop's ABFS driver (``abfs[s]://``)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

from fruits.azure import AzureStorage, BlobLocation
from fruits.config import is_url
from fruits.sources.names import extension_glob
from fruits.sources.schema import BINARY_FILE_SCHEMA
from fruits.spark import on_databricks

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config

__all__ = ["file_source", "first_start"]


def file_source(spark: SparkSession, config: Config, checkpoint: str) -> DataFrame:
    """New photos in ``paths.landing`` (recursively), oldest first, as a streaming DataFrame.

    Uploaders write a hidden name (``.x``) and rename it when complete: Spark ignores hidden
    files, so a half-written photo is never read.
    """
    landing = config.path("landing")
    if not is_url(landing):
        Path(landing).mkdir(parents=True, exist_ok=True)
    elif landing.startswith(("abfs://", "abfss://")) and not on_databricks():
        # Blob through Hadoop: as for a folder, the container exists from the start.
        storage = AzureStorage(config.azure)
        if storage.configured:
            storage.container(BlobLocation.parse(landing).container, create=True)
    stream = config.stream
    # A micro-batch names its files one by one; above this many paths Spark stats them in a
    # Spark job of one task per file (2.3 s of a 4.7 s batch of 512 photos, BENCHMARKS.md).
    # Up to a whole batch, the driver stats them itself (microseconds each on a local disk).
    spark.conf.set(
        "spark.sql.sources.parallelPartitionDiscovery.threshold",
        str(max(32, stream.max_files_per_trigger)),
    )
    reader = (
        spark.readStream.format("binaryFile")
        .schema(BINARY_FILE_SCHEMA)
        .option("pathGlobFilter", extension_glob(config.images.extensions))
        .option("recursiveFileLookup", "true")
        .option("maxFilesPerTrigger", stream.max_files_per_trigger)
    )
    if stream.max_bytes_per_trigger:
        reader = reader.option("maxBytesPerTrigger", stream.max_bytes_per_trigger)
    df = reader.load(landing)
    if not stream.include_existing_files:
        # Auto Loader's includeExistingFiles=false: only photos newer than the first start.
        from pyspark.sql import functions as F

        df = df.where(F.col("modificationTime") >= F.lit(first_start(checkpoint)))
    return df


def first_start(checkpoint: str) -> dt.datetime:
    """When this checkpoint's query first started (recorded beside it on first call)."""
    marker = Path(f"{checkpoint.rstrip('/')}.first-start.json")
    if marker.exists():
        return dt.datetime.fromisoformat(json.loads(marker.read_text())["first_start"])
    now = dt.datetime.now(dt.UTC)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"first_start": now.isoformat()}))
    return now
