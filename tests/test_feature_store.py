"""The feature cache on real photos: listing without reading, one pass per photo, the
(path, size, modification time) key, and tables from before that key existed."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from fruits.config import Config
from fruits.features.featurizer import ExtractorSpec
from fruits.features.store import featurize_labelled
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.tables import FEATURES, SCHEMAS
from fruits.sources.training import list_labelled, read_labelled

from .conftest import KNOWN_CLASSES, copy_tree

pytestmark = pytest.mark.spark


def _featurize(spark: Any, config: Config, lake: DeltaRsLake, folder: Path) -> Any:
    return featurize_labelled(
        spark,
        lake,
        str(folder),
        split="Training",
        spec=ExtractorSpec.from_config(config),
        images=config.images,
        chunk_size=4,
    )


def test_listing_finds_what_spark_reads_without_reading_it(
    spark: Any, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_config()
    folder = copy_tree(tmp_path / "Training", "Training", KNOWN_CLASSES[:2], 3)
    one = next((folder / KNOWN_CLASSES[0]).glob("*.jpg"))
    shutil.copy(one, folder / KNOWN_CLASSES[0] / "UPPER CASE.JPG")
    shutil.copy(one, folder / KNOWN_CLASSES[0] / "Mixed Case.Jpg")  # Hadoop's glob, any case
    shutil.copy(one, folder / KNOWN_CLASSES[1] / "phone.Heic")  # a JPEG named .Heic: discovered
    shutil.copy(one, folder / KNOWN_CLASSES[0] / ".hidden.jpg")
    shutil.copy(one, folder / KNOWN_CLASSES[0] / "_hidden.jpg")
    (folder / KNOWN_CLASSES[1] / "notes.txt").write_text("not a photo")
    (folder / ".hidden-folder").mkdir()
    shutil.copy(one, folder / ".hidden-folder" / "x.jpg")

    listed = list_labelled(spark, str(folder), config.images)
    from pyspark.sql import functions as F

    spark_rows = (
        read_labelled(spark, str(folder), config.images)
        .select("path", "label", "length", F.unix_micros("modificationTime").alias("us"))
        .collect()
    )
    # The same files, names (Spark's own form of the path), labels, sizes and times as
    # Spark's binaryFile source gives them.
    assert [(p.path, p.label, p.size_bytes, p.modified_us) for p in listed] == sorted(
        (r.path, r.label, r.length, r.us) for r in spark_rows
    )
    assert len(listed) == 2 * 3 + 3


def test_each_photo_is_read_once_and_found_by_path_size_and_time(
    spark: Any, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_config(tmp_path / "root")
    lake = DeltaRsLake(str(tmp_path / "lake"))
    folder = copy_tree(tmp_path / "Training", "Training", KNOWN_CLASSES[:2], 3)
    (folder / KNOWN_CLASSES[1] / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")

    features, run = _featurize(spark, config, lake, folder)
    assert (run.images, run.cached, run.computed) == (7, 0, 6)
    assert [(Path(r.path).name, r.reason) for r in run.rejected] == [("broken.jpg", "not_an_image")]
    rows = lake.read_arrow(FEATURES).to_pylist()
    assert len(rows) == 6
    for row in rows:  # the UDF's sha256 of the bytes, and the listing's key
        file = Path(row["path"].removeprefix("file:"))
        assert row["image_id"] == hashlib.sha256(file.read_bytes()).hexdigest()
        assert row["size_bytes"] == file.stat().st_size
        modified = file.stat().st_mtime_ns // 1_000_000 * 1000
        assert row["modified_at"] == dt.datetime.fromtimestamp(modified / 1e6, dt.UTC)
    assert features.count() == 6 and len(features.first().features) > 0

    # Unchanged: all from the cache. A photo rewritten in place (other bytes, a new time) is
    # read again and gets its new sha256; the broken one is reported again, never stored.
    _, run = _featurize(spark, config, lake, folder)
    assert (run.cached, run.computed, len(run.rejected)) == (6, 0, 1)
    target = sorted((folder / KNOWN_CLASSES[0]).glob("*.jpg"))[0]
    other = sorted((folder / KNOWN_CLASSES[1]).glob("*.jpg"))[0]
    shutil.copyfile(other, target)
    later = target.stat().st_mtime_ns + 5_000_000_000
    os.utime(target, ns=(later, later))
    changed, run = _featurize(spark, config, lake, folder)
    assert (run.cached, run.computed) == (5, 1)
    ids = {r.path: r.image_id for r in changed.select("path", "image_id").collect()}
    assert ids[f"file:{target}"] == hashlib.sha256(other.read_bytes()).hexdigest()
    assert len(ids) == 6


def test_a_features_table_from_before_the_key_is_migrated_and_still_read(
    spark: Any, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    from deltalake import write_deltalake

    config = make_config(tmp_path / "root")
    spec = ExtractorSpec.from_config(config)
    lake = DeltaRsLake(str(tmp_path / "lake"))
    folder = copy_tree(tmp_path / "Training", "Training", KNOWN_CLASSES[:1], 2)
    photos = sorted(folder.rglob("*.jpg"))
    old_schema = pa.schema(
        [f for f in SCHEMAS[FEATURES] if f.name not in ("size_bytes", "modified_at")]
    )
    now = dt.datetime.now(dt.UTC)
    old_rows = [
        {
            "image_id": hashlib.sha256(p.read_bytes()).hexdigest(),
            "path": f"file:{p}",
            "label": p.parent.name,
            "split": "Training",
            "features": [0.5] * spec.feature_dim,
            "extractor": spec.extractor_id,
            "computed_at": now,
        }
        for p in photos
    ]
    write_deltalake(lake.path(FEATURES), pa.Table.from_pylist(old_rows, old_schema))

    _, run = _featurize(spark, config, lake, folder)
    # Rows without the key are never a hit: featurized once more, now with the key.
    assert (run.cached, run.computed) == (0, 2)
    table = lake.read_arrow(FEATURES)
    assert {"size_bytes", "modified_at"} <= set(table.column_names)
    assert table.column("size_bytes").null_count == 2  # the old rows, still readable
    _, run = _featurize(spark, config, lake, folder)
    assert (run.cached, run.computed) == (2, 0)
    assert Counter(table.column("image_id").to_pylist()) == {r["image_id"]: 2 for r in old_rows}
