"""Landing discovery: which source finds new photos, by environment (DESIGN.md).

* a local folder: Spark's file source (:mod:`fruits.sources.files`);
* ``az://`` (Blob, Azurite here): the project's Python data source ``fruits_blob``, listing
  or notification mode (:mod:`fruits.sources.blob`);
* ``stream.autoloader`` (Databricks): Auto Loader (:mod:`fruits.sources.autoloader`).

Rows always have the ``binaryFile`` schema (:mod:`fruits.sources.schema`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fruits.sources.autoloader import autoloader_source
from fruits.sources.files import file_source

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config

__all__ = ["landing_source"]


def landing_source(spark: SparkSession, config: Config, checkpoint: str) -> DataFrame:
    """The streaming DataFrame of new photos in ``paths.landing``, for this environment."""
    landing = config.path("landing")
    if config.stream.autoloader:
        return autoloader_source(spark, config, checkpoint)
    if landing.startswith("az://"):
        from fruits.sources.blob import stream_blobs

        return stream_blobs(spark, config, checkpoint)
    return file_source(spark, config, checkpoint)
