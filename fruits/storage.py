"""Where photos are read from: local folders now, Blob URLs through the same Spark reader.

Spark's ``binaryFile`` source lists and reads files on the executors, so a labelled tree of
any size is read by the cluster, not by the driver.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fruits.errors import DataError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["check_labelled_tree", "extension_glob", "is_url", "read_image_files", "read_labelled"]

_URL_SCHEMES = ("az://", "abfs://", "abfss://", "wasb://", "wasbs://", "dbfs:/", "s3://", "gs://")


def is_url(location: str) -> bool:
    return location.startswith(_URL_SCHEMES)


def extension_glob(extensions: Sequence[str]) -> str:
    """``*.{jpg,JPG,...}``: Hadoop globs are case sensitive, phones write both cases."""
    variants = sorted({v for ext in extensions for v in (ext.lower(), ext.upper())})
    return "*.{" + ",".join(variants) + "}"


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


def read_labelled(spark: SparkSession, location: str, extensions: Sequence[str]) -> DataFrame:
    """``<location>/<Class>/*.jpg`` as (path, label, length, modificationTime, content)."""
    from pyspark.sql import functions as F

    df = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", extension_glob(extensions))
        .option("recursiveFileLookup", "true")
        .load(location)
    )
    # The label is the name of the folder holding the file.
    return df.withColumn("label", F.element_at(F.split("path", "/"), -2))


def read_image_files(spark: SparkSession, paths: Sequence[str]) -> DataFrame:
    """Exactly these files (paths as Spark's file sources print them)."""
    return spark.read.format("binaryFile").load(list(paths))
