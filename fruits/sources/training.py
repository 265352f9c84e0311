"""Labelled training photos, ``<location>/<Class>/*.jpg``: local folders or Blob, read by Spark.

Spark's ``binaryFile`` source lists and reads files on the executors, so a labelled tree of
any size is read by the cluster, not by the driver. :func:`list_labelled` lists a tree without
reading any photo (the feature cache's lookup needs only paths, sizes and modification times).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fruits.config import is_url
from fruits.errors import DataError
from fruits.sources.names import extension_glob, has_extension

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import AzureConfig, ImagesConfig

__all__ = ["PhotoFile", "check_labelled_tree", "list_labelled", "read_image_files", "read_labelled"]


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
        from fruits.sources.uploads import read_uploads

        df = read_uploads(spark, location, images, azure)
    else:
        df = (
            spark.read.format("binaryFile")
            .option("pathGlobFilter", extension_glob(images.extensions))
            .option("recursiveFileLookup", "true")
            .load(location)
        )
    # The label is the name of the folder holding the file.
    return df.withColumn("label", F.element_at(F.split("path", "/"), -2))


@dataclass(frozen=True)
class PhotoFile:
    """One photo of a labelled tree, as listed: no byte of it read."""

    path: str  # as Spark's readers name it: file:/abs/path, az://container/name, abfss://...
    label: str  # the name of the folder holding it
    size_bytes: int
    modified_us: int  # modification time, microseconds since the epoch (UTC)

    @property
    def modified_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.modified_us / 1e6, dt.UTC)


def list_labelled(
    spark: SparkSession, location: str, images: ImagesConfig, azure: AzureConfig | None = None
) -> list[PhotoFile]:
    """The photos of ``<location>/<Class>/*`` (the files :func:`read_labelled` reads), sorted
    by path, with their sizes and modification times, without reading them: a local folder is
    walked by the driver (no Spark job), ``az://`` is listed through the Blob API (as the
    ``fruits_uploads`` source lists it), any other URL by Spark's ``binaryFile`` source with its
    ``content`` column pruned (so not read)."""
    if location.startswith("az://"):
        photos = _list_blobs(location, images, azure)
    elif is_url(location):
        photos = _list_with_spark(spark, location, images)
    else:
        photos = _list_folder(location, images)
    return sorted(photos, key=lambda p: p.path)


def _hidden(name: str) -> bool:
    """Names Spark's file sources skip (``.x``, ``_x`` but not ``_a=b``, ``x._COPYING_``)."""
    return (
        (name.startswith("_") and "=" not in name)
        or name.startswith(".")
        or name.endswith("._COPYING_")
    )


def _list_folder(location: str, images: ImagesConfig) -> list[PhotoFile]:
    # The same files as binaryFile's recursive lookup with extension_glob: an extension in
    # any case, hidden files and folders skipped; paths in Hadoop's form, with its millisecond
    # modification times.
    photos = []
    for folder, subfolders, files in os.walk(os.path.abspath(location), followlinks=True):
        subfolders[:] = [d for d in subfolders if not _hidden(d)]
        label = os.path.basename(folder)
        for name in files:
            if _hidden(name) or not has_extension(name, images.extensions):
                continue
            path = os.path.join(folder, name)
            try:
                info = os.stat(path)
            except OSError:  # gone since the listing: not part of this tree any more
                continue
            modified_ms = info.st_mtime_ns // 1_000_000
            photos.append(PhotoFile(f"file:{path}", label, info.st_size, modified_ms * 1000))
    return photos


def _list_blobs(location: str, images: ImagesConfig, azure: AzureConfig | None) -> list[PhotoFile]:
    from fruits.azure import AzureStorage, BlobLocation
    from fruits.config import AzureConfig
    from fruits.sources.names import NameFilter

    where = BlobLocation.parse(location)
    blobs = AzureStorage(azure or AzureConfig()).list_blobs(
        where, NameFilter(images.extensions, under=where.prefix)
    )
    photos = []
    for blob in blobs:
        path = where.url(blob.name)  # as the fruits_uploads source names it
        modified_us = int(blob.last_modified.timestamp() * 1_000_000)
        photos.append(PhotoFile(path, path.split("/")[-2], blob.size, modified_us))
    return photos


def _list_with_spark(spark: SparkSession, location: str, images: ImagesConfig) -> list[PhotoFile]:
    from pyspark.sql import functions as F

    rows = (
        read_labelled(spark, location, images)
        .select("path", "label", "length", F.unix_micros("modificationTime").alias("modified"))
        .collect()
    )
    return [PhotoFile(r.path, r.label, int(r.length), int(r.modified)) for r in rows]


def read_image_files(
    spark: SparkSession,
    paths: Sequence[str],
    images: ImagesConfig,
    azure: AzureConfig | None = None,
) -> DataFrame:
    """Exactly these files (paths as :func:`read_labelled` or :func:`list_labelled` give
    them).

    Local files are stat'ed by the driver, as the stream does for a micro-batch (microseconds
    each): above ``spark.sql.sources.parallelPartitionDiscovery.threshold`` paths (32 by
    default) Spark would stat them in a Spark job of one task per file. The threshold is only
    ever raised (as the stream's file source does), so concurrent callers cannot lower it under
    another. Remote files (``abfss://``...) keep Spark's distributed stat: one remote call each.
    """
    if paths and paths[0].startswith("az://"):
        container = paths[0].split("/", 3)[2]
        names = tuple(p.split("/", 3)[3] for p in paths)
        from fruits.sources.uploads import read_uploads

        return read_uploads(spark, f"az://{container}", images, azure, names=names)
    key = "spark.sql.sources.parallelPartitionDiscovery.threshold"
    if paths and not is_url(paths[0]) and int(spark.conf.get(key, "32") or 32) < len(paths):
        spark.conf.set(key, str(len(paths)))
    return spark.read.format("binaryFile").load(list(paths))
