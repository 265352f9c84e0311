"""Labelled training photos, ``<location>/<Class>/*.jpg``: local folders or Blob, read by Spark.

Spark's ``binaryFile`` source lists and reads files on the executors, so a labelled tree of
any size is read by the cluster, not by the driver.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fruits.config import is_url
from fruits.errors import DataError
from fruits.sources.names import extension_glob

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import AzureConfig, ImagesConfig

__all__ = ["check_labelled_tree", "read_image_files", "read_labelled"]


def check_labelled_tree(location: str) -> list[str]:
    """The class folders of a local ``<location>/<Class>/`` tree; a clear error when unusable.

    URLs are checked by Spark when read (listing a container from the driver is not free).
    """
    if is_url(location):
        return []
    path = Path(location)
    if not path.is_dir():
        raise DataError(f"data folder not found: {location}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataError(f"data folder is not readable: {location}")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"data folder has no class folders (<Class>/*.jpg): {location}")
    return classes


def read_labelled(
    spark: SparkSession, location: str, images: ImagesConfig, azure: AzureConfig | None = None
) -> DataFrame:
    """``<location>/<Class>/*.jpg`` as (path, label, length, modificationTime, content)."""
    from pyspark.sql import functions as F

    if location.startswith("az://"):
        from fruits.sources.blob import read_blobs

        df = read_blobs(spark, location, images, azure)
    else:
        df = (
            spark.read.format("binaryFile")
            .option("pathGlobFilter", extension_glob(images.extensions))
            .option("recursiveFileLookup", "true")
            .load(location)
        )
    # The label is the name of the folder holding the file.
    return df.withColumn("label", F.element_at(F.split("path", "/"), -2))


def read_image_files(
    spark: SparkSession,
    paths: Sequence[str],
    images: ImagesConfig,
    azure: AzureConfig | None = None,
) -> DataFrame:
    """Exactly these files (paths as :func:`read_labelled` gives them)."""
    if paths and paths[0].startswith("az://"):
        container = paths[0].split("/", 3)[2]
        names = tuple(p.split("/", 3)[3] for p in paths)
        from fruits.sources.blob import read_blobs

        return read_blobs(spark, f"az://{container}", images, azure, names=names)
    return spark.read.format("binaryFile").load(list(paths))
