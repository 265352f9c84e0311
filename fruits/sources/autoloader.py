"""Databricks Auto Loader (``cloudFiles`` over ``binaryFile``): the landing on Databricks.

It runs only on a Databricks runtime, so it is kept to the options and one reader call; the
options are derived from the same ``stream.*`` settings as the other sources and tested from
the real config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fruits.sources.names import extension_glob, extension_regex
from fruits.sources.schema import BINARY_FILE_SCHEMA

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config

__all__ = ["autoloader_options", "autoloader_source"]


def autoloader_options(
    config: Config, checkpoint: str, *, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Auto Loader's options for the same ``stream.*`` settings (Databricks only).

    Notification mode uses the external location's managed file events (no credential, no
    backfill: Databricks keeps the listing current), or, with ``autoloader_notifications:
    queue``, the legacy mode on the Storage Queue ``stream.queue``, whose connection string
    comes from the environment (a secret scope mapped to the variable), never from a file."""
    stream = config.stream
    environ = os.environ if environ is None else environ
    options = {
        "cloudFiles.format": "binaryFile",
        "cloudFiles.includeExistingFiles": str(stream.include_existing_files).lower(),
        "cloudFiles.maxFilesPerTrigger": str(stream.max_files_per_trigger),
        "cloudFiles.maxFileAge": stream.max_file_age,
        "cloudFiles.schemaLocation": f"{checkpoint.rstrip('/')}/schema",
        # path_glob narrows the names on top of the extensions, as on every source: Auto
        # Loader takes one glob, so the extension rule is then applied to its rows
        # (autoloader_source).
        "pathGlobFilter": stream.path_glob or extension_glob(config.images.extensions),
        "recursiveFileLookup": "true",
        # A new upload under an existing name is a new arrival, as on the other sources.
        "cloudFiles.allowOverwrites": "true",
    }
    if stream.max_bytes_per_trigger:
        options["cloudFiles.maxBytesPerTrigger"] = str(stream.max_bytes_per_trigger)
    if stream.clean_source != "off":
        # Auto Loader cleans a file after its retention counted from its batch's commit.
        options["cloudFiles.cleanSource"] = {"archive": "MOVE", "delete": "DELETE"}[
            stream.clean_source
        ]
        if stream.clean_source == "archive":
            options["cloudFiles.cleanSource.moveDestination"] = config.path("archive")
        if stream.clean_source_retention:
            options["cloudFiles.cleanSource.retentionDuration"] = stream.clean_source_retention
    if stream.discovery == "listing":
        options["cloudFiles.useNotifications"] = "false"
    elif stream.autoloader_notifications == "file_events":
        options["cloudFiles.useManagedFileEvents"] = "true"
    else:
        options["cloudFiles.useNotifications"] = "true"
        options["cloudFiles.queueName"] = stream.queue
        if stream.backfill_interval:
            options["cloudFiles.backfillInterval"] = stream.backfill_interval
        connection = environ.get(stream.queue_connection_string_env)
        if connection:
            options["cloudFiles.connectionString"] = connection
    return options


def autoloader_source(spark: SparkSession, config: Config, checkpoint: str) -> DataFrame:
    """Databricks Auto Loader over an ``abfss://`` landing (cannot run outside Databricks)."""
    reader = spark.readStream.format("cloudFiles").schema(BINARY_FILE_SCHEMA)
    for key, value in autoloader_options(config, checkpoint).items():
        reader = reader.option(key, value)
    df = reader.load(config.path("landing"))
    if config.stream.path_glob:
        from pyspark.sql import functions as F

        df = df.where(F.col("path").rlike(extension_regex(config.images.extensions)))
    return df
