"""Landing discovery: which source finds new photos, by environment (DESIGN.md).

* a folder, ``az://`` or ``abfs[s]://`` (here, Azurite, any cluster): the project's Python data
  source ``fruits_uploads`` (:mod:`fruits.sources.uploads`), listing the landing or, on Blob,
  reading Event Grid notifications, through one :mod:`~fruits.sources.stores` interface;
* ``stream.autoloader`` (Databricks): Auto Loader (:mod:`fruits.sources.autoloader`).

Rows have the ``binaryFile`` schema (:mod:`fruits.sources.schema`), and from ``fruits_uploads``
also why a file was not read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fruits.sources.autoloader import autoloader_source

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config

__all__ = ["landing_source"]


def landing_source(spark: SparkSession, config: Config, checkpoint: str) -> DataFrame:
    """The streaming DataFrame of new photos in ``paths.landing``, for this environment."""
    if config.stream.autoloader:
        return autoloader_source(spark, config, checkpoint)
    from fruits.sources.uploads import stream_uploads

    return stream_uploads(spark, config, checkpoint)
