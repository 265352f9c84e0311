"""A memory-stream-like test source: exact micro-batches fed from a test, batch by batch.

PySpark has no Python MemoryStream, and a Python Data Source runs in a separate process, so
the test and the source share a folder: :meth:`MemoryFeed.add` writes one Parquet file per
batch (atomically), and the source offers one more file per trigger. With
``query.processAllAvailable()`` after each ``add``, each batch is exactly one micro-batch.

    feed = MemoryFeed(tmp_path / "feed")
    register(spark)
    df = spark.readStream.format("fruits_memory").option("feed", str(feed.folder)).load()
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

from fruits.sources.schema import BINARY_FILE_SCHEMA

__all__ = ["MemoryFeed", "MemoryStreamDataSource", "register"]


class MemoryFeed:
    """The test's side: each :meth:`add` is one future micro-batch."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def add(self, rows: Sequence[tuple[str, bytes, dt.datetime]]) -> int:
        """Queue rows of (path, bytes, modification time); returns the batch's index."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        index = len(list(self.folder.glob("batch-*.parquet")))
        table = pa.table(
            {
                "path": [r[0] for r in rows],
                "modificationTime": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
                "length": pa.array([len(r[1]) for r in rows], pa.int64()),
                "content": pa.array([r[1] for r in rows], pa.binary()),
            }
        )
        tmp = self.folder / f".batch-{index:06d}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.folder / f"batch-{index:06d}.parquet")
        return index


class _BatchFile(InputPartition):
    def __init__(self, path: str) -> None:
        self.path = path


class MemoryStreamReader(DataSourceStreamReader):
    """Offsets are batch counts: ``{"batches": n}`` means files 0..n-1 were offered."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def initialOffset(self) -> dict[str, int]:
        return {"batches": 0}

    def latestOffset(
        self, start: dict[str, int] | None = None, limit: Any = None
    ) -> dict[str, int]:
        available = len(list(self.folder.glob("batch-*.parquet")))
        offered = start["batches"] if start else 0
        # One fed batch per trigger, so a test's batches stay exact micro-batches.
        return {"batches": min(available, offered + 1)}

    def partitions(self, start: dict[str, int], end: dict[str, int]) -> Sequence[InputPartition]:
        return [
            _BatchFile(str(self.folder / f"batch-{i:06d}.parquet"))
            for i in range(start["batches"], end["batches"])
        ]

    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        import pyarrow.parquet as pq

        assert isinstance(partition, _BatchFile)
        for row in pq.read_table(partition.path).to_pylist():
            yield (row["path"], row["modificationTime"], row["length"], row["content"])

    def commit(self, end: dict[str, int]) -> None:
        """Nothing to release: the feed files stay for replays."""


class MemoryStreamDataSource(DataSource):
    """``format("fruits_memory")``, option ``feed``: the folder a :class:`MemoryFeed` writes."""

    @classmethod
    def name(cls) -> str:
        return "fruits_memory"

    def schema(self) -> str:
        return BINARY_FILE_SCHEMA

    def streamReader(self, schema: Any) -> DataSourceStreamReader:
        folder = self.options.get("feed")
        if not folder:
            raise ValueError("option 'feed' is required: the folder a MemoryFeed writes to")
        return MemoryStreamReader(folder)


def register(spark: Any) -> None:
    spark.dataSource.register(MemoryStreamDataSource)
