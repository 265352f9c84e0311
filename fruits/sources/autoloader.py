"""Databricks Auto Loader (``cloudFiles`` over ``binaryFile``): the landing on Databricks.

It runs only on a Databricks runtime, so it is kept to the options and one reader call; the
options are derived from the same ``stream.*`` settings as the other sources and tested from
the real config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fruits.sources.names import extension_glob
from fruits.sources.schema import BINARY_FILE_SCHEMA

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config

__all__ = ["autoloader_options", "autoloader_source"]


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
