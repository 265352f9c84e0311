"""Spark's native Delta writer (Databricks; delta-spark with its jars elsewhere).

An idempotent append passes ``txnAppId``/``txnVersion``, which Delta itself skips when that
version was already committed for that app id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from fruits.sinks.delta import Lake, Txn
from fruits.sinks.tables import SCHEMAS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkDeltaLake"]


class SparkDeltaLake(Lake):
    """Spark's native Delta writer (Databricks; delta-spark with its jars elsewhere)."""

    def _exists(self, spark: SparkSession, table: str) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(spark, self.path(table)))

    def read(
        self,
        spark: SparkSession,
        table: str,
        *,
        columns: list[str] | None = None,
        equals: dict[str, str] | None = None,
    ) -> DataFrame:
        from pyspark.sql import functions as F

        if not self._exists(spark, table):
            df = spark.createDataFrame(SCHEMAS[table].empty_table())
        else:
            df = spark.read.format("delta").load(self.path(table))
        for column, value in (equals or {}).items():
            df = df.where(F.col(column) == value)
        return df.select(*columns) if columns else df

    def read_arrow(
        self,
        table: str,
        *,
        columns: list[str] | None = None,
        equals: dict[str, str] | None = None,
    ) -> pa.Table:
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
        return self.read(spark, table, columns=columns, equals=equals).toArrow()

    def version(self, table: str) -> int:
        from delta.tables import DeltaTable
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
        if not self._exists(spark, table):
            return -1
        history = DeltaTable.forPath(spark, self.path(table)).history(1)
        return int(history.select("version").first()[0])  # type: ignore[index]

    def _read_added(
        self, table: str, after_version: int, until_version: int, columns: list[str] | None
    ) -> pa.Table:
        # Not run on these machines (no Delta jars), kept minimal: the rows of the files
        # present at `until_version` and absent at `after_version` (an append-only table, as
        # `predictions`). The change data feed (readChangeFeed) would also do, once
        # delta.enableChangeDataFeed is set on the table; this needs no table property.
        from pyspark.sql import SparkSession
        from pyspark.sql import functions as F

        spark = SparkSession.builder.getOrCreate()

        def at(version: int) -> DataFrame:
            reader = spark.read.format("delta").option("versionAsOf", version)
            return reader.load(self.path(table)).withColumn("_file", F.input_file_name())

        rows = at(until_version)
        if after_version >= 0:
            rows = rows.join(at(after_version).select("_file").distinct(), "_file", "left_anti")
        rows = rows.select(*(columns or SCHEMAS[table].names))
        return self.conform(rows.toArrow(), table, partial=columns is not None)

    def append(self, df: DataFrame, table: str, *, txn: Txn | None = None) -> bool:
        writer = df.select(*SCHEMAS[table].names).write.format("delta").mode("append")
        if txn is not None:
            # Delta skips the write when this (appId, version) is already committed.
            writer = writer.option("txnAppId", txn.app_id).option("txnVersion", txn.version)
        writer.save(self.path(table))
        return True

    def append_arrow(self, data: pa.Table, table: str, *, txn: Txn | None = None) -> bool:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is None:  # pragma: no cover - the jobs always hold a session
            raise RuntimeError("SparkDeltaLake needs an active SparkSession")
        return self.append(spark.createDataFrame(self.conform(data, table)), table, txn=txn)
