"""Landing discovery: which source finds new photos, by environment (DESIGN.md).

* a local folder: Spark's file source (``binaryFile``);
* ``az://`` (Blob, Azurite here): the project's Python data source ``fruits_blob``, listing
  or notification mode (:mod:`fruits.blob_source`);
* ``stream.autoloader`` (Databricks): Auto Loader, ``cloudFiles`` with ``binaryFile``.

The Auto Loader options a user expects are surfaced from ``stream.*`` config. Rows always have
the ``binaryFile`` schema: path, modificationTime, length, content.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

from fruits.errors import ConfigError
from fruits.storage import extension_glob, is_url

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config

__all__ = ["BINARY_FILE_SCHEMA", "autoloader_options", "file_source", "landing_source"]

# The file source needs an explicit schema for binaryFile streams.
BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"


def landing_source(spark: SparkSession, config: Config, checkpoint: str) -> DataFrame:
    """The streaming DataFrame of new photos in ``paths.landing``, for this environment."""
    landing = config.path("landing")
    if config.stream.autoloader:
        return autoloader_source(spark, config, checkpoint)
    if landing.startswith("az://"):
        return blob_source(spark, config, checkpoint)
    return file_source(spark, config, checkpoint)


def blob_source(spark: SparkSession, config: Config, checkpoint: str) -> DataFrame:
    """New blobs under an ``az://`` landing, discovered by listing or by queued events."""
    from fruits import blob_source as blobs
    from fruits.config import interval_seconds

    if is_url(checkpoint):
        raise ConfigError(
            "an az:// landing keeps its discovery state beside the checkpoint, which must be a "
            f"local or mounted folder (paths.checkpoints is {checkpoint})"
        )
    from fruits.azure_storage import AzureStorage, BlobLocation

    # As for a landing folder: the container exists from the start, empty until uploads come.
    landing = BlobLocation.parse(config.path("landing"))
    AzureStorage(config.azure).container(landing.container, create=True)
    stream = config.stream
    backfill = stream.backfill_interval
    options = blobs.BlobSourceOptions(
        location=config.path("landing"),
        azure=config.azure,
        extensions=config.images.extensions,
        glob=stream.path_glob,
        max_photo_bytes=config.images.max_bytes,
        checkpoint=checkpoint,
        discovery=stream.discovery,
        queue=stream.queue,
        max_files_per_trigger=stream.max_files_per_trigger,
        max_bytes_per_trigger=stream.max_bytes_per_trigger,
        include_existing_files=stream.include_existing_files,
        max_file_age_s=interval_seconds(stream.max_file_age),
        backfill_interval_s=interval_seconds(backfill) if backfill else None,
        parallelism=spark.sparkContext.defaultParallelism,
    )
    blobs.register(spark)
    return spark.readStream.format("fruits_blob").option("fruits", options.to_option()).load()


def autoloader_options(config: Config, checkpoint: str) -> dict[str, str]:
    """Auto Loader's options for the same ``stream.*`` settings (Databricks only)."""
    stream = config.stream
    options = {
        "cloudFiles.format": "binaryFile",
        "cloudFiles.useNotifications": str(stream.discovery == "notification").lower(),
        "cloudFiles.includeExistingFiles": str(stream.include_existing_files).lower(),
        "cloudFiles.maxFilesPerTrigger": str(stream.max_files_per_trigger),
        "cloudFiles.maxFileAge": stream.max_file_age,
        "cloudFiles.schemaLocation": f"{checkpoint.rstrip('/')}/schema",
        "pathGlobFilter": stream.path_glob or extension_glob(config.images.extensions),
        "recursiveFileLookup": "true",
    }
    if stream.max_bytes_per_trigger:
        options["cloudFiles.maxBytesPerTrigger"] = str(stream.max_bytes_per_trigger)
    if stream.discovery == "notification" and stream.backfill_interval:
        options["cloudFiles.backfillInterval"] = stream.backfill_interval
    if stream.discovery == "notification":
        # Auto Loader sets up Event Grid + the queue itself, or reads an existing queue.
        options["cloudFiles.queueName"] = stream.queue
    return options


def autoloader_source(spark: SparkSession, config: Config, checkpoint: str) -> DataFrame:
    """Databricks Auto Loader over an ``abfss://`` landing (cannot run outside Databricks)."""
    reader = spark.readStream.format("cloudFiles").schema(BINARY_FILE_SCHEMA)
    for key, value in autoloader_options(config, checkpoint).items():
        reader = reader.option(key, value)
    return reader.load(config.path("landing"))


def file_source(spark: SparkSession, config: Config, checkpoint: str) -> DataFrame:
    """New photos in ``paths.landing`` (recursively), oldest first, as a streaming DataFrame.

    Uploaders write a hidden name (``.x``) and rename it when complete: Spark ignores hidden
    files, so a half-written photo is never read.
    """
    landing = config.path("landing")
    if not is_url(landing):
        Path(landing).mkdir(parents=True, exist_ok=True)
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
