"""Landing discovery: which source finds new photos, by environment (DESIGN.md).

* a local folder: Spark's file source (:mod:`fruits.sources.files`);
* ``az://`` (Blob, Azurite here): the project's Python data source ``fruits_blob``, listing
  or notification mode (:mod:`fruits.sources.blob`);
* ``stream.autoloader`` (Databricks): Auto Loader (:mod:`fruits.sources.autoloader`).

Rows always have the ``binaryFile`` schema (:mod:`fruits.sources.schema`).
:func:`batch_files` says which files a micro-batch held, for a source that may give no row for
some of them (Spark's file source, for empty files), so that every file lands in a table.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from fruits.sources.autoloader import autoloader_source
from fruits.sources.files import ListedFile, file_source, listed_files

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config

__all__ = ["BatchFiles", "batch_files", "landing_source"]

# (the batch's session, its batch id) -> the files the source put in that micro-batch
BatchFiles = Callable[["SparkSession", int], list[ListedFile]]


def landing_source(spark: SparkSession, config: Config, checkpoint: str) -> DataFrame:
    """The streaming DataFrame of new photos in ``paths.landing``, for this environment."""
    landing = config.path("landing")
    if config.stream.autoloader:
        return autoloader_source(spark, config, checkpoint)
    if landing.startswith("az://"):
        from fruits.sources.blob import stream_blobs

        return stream_blobs(spark, config, checkpoint)
    return file_source(spark, config, checkpoint)


def batch_files(config: Config, checkpoint: str) -> BatchFiles | None:
    """How to list a micro-batch's files, for the landing sources that may return no row for
    some (Spark's file source: empty files); None for those that return a row for every file
    (``fruits_blob`` reads an empty blob as empty content). Auto Loader keeps its file list in
    a RocksDB store of its own, which is not readable from here: not covered (RELIABILITY.md).
    """
    if config.stream.autoloader or config.path("landing").startswith("az://"):
        return None
    return partial(listed_files, checkpoint=checkpoint)
