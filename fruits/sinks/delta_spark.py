"""Spark's native Delta writer: Databricks, and locally delta-spark with its jars.

An idempotent append passes ``txnAppId``/``txnVersion``, which Delta itself skips when that
version was already committed for that app id. Tables are addressed by path (local, ``abfs[s]``,
or ``az://`` translated to Hadoop's ``abfs`` URL by :class:`~fruits.azure.AzureStorage`), so
delta-rs reads what this writes and the other way round.

The lake holds its SparkSession: the Event Hubs retry thread calls it from a thread of its
own, where ``SparkSession.getActiveSession()`` is None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote

import pyarrow as pa

from fruits.sinks.delta import Lake, Txn
from fruits.sinks.tables import SCHEMAS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkDeltaLake"]


class SparkDeltaLake(Lake):
    """Spark's native Delta writer (Databricks; delta-spark with its jars elsewhere)."""

    def __init__(self, root: str, spark: SparkSession) -> None:
        super().__init__(root)
        self.spark = spark

    def _exists(self, table: str) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, self.path(table)))

    def read(
        self,
        spark: SparkSession,
        table: str,
        *,
        columns: list[str] | None = None,
        equals: dict[str, str] | None = None,
    ) -> DataFrame:
        from pyspark.sql import functions as F

        if not self._exists(table):
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
        data = self.read(self.spark, table, columns=columns, equals=equals).toArrow()
        return self.conform(data, table, partial=True)

    def version(self, table: str) -> int:
        """The latest version, from the newest commit only (``history(1)``)."""
        from delta.tables import DeltaTable

        if not self._exists(table):
            return -1
        latest = DeltaTable.forPath(self.spark, self.path(table)).history(1).first()
        return -1 if latest is None else int(latest["version"])

    def add_missing_columns(self, table: str) -> list[str]:
        """Delta's own ``ALTER TABLE ... ADD COLUMNS`` on the table's path."""
        from pyspark.sql.pandas.types import from_arrow_schema

        if not self._exists(table):
            return []
        present = set(self.spark.read.format("delta").load(self.path(table)).columns)
        missing = [f for f in SCHEMAS[table] if f.name not in present]
        if missing:
            types = from_arrow_schema(pa.schema([f.with_nullable(True) for f in missing]))
            columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in types)
            self.spark.sql(f"ALTER TABLE delta.`{self.path(table)}` ADD COLUMNS ({columns})")
        return [f.name for f in missing]

    def _read_added(
        self, table: str, after_version: int, until_version: int, columns: list[str] | None
    ) -> pa.Table:
        """The data files added by commits ``after_version + 1 .. until_version``, read from
        those commits' own log entries: no scan of whole table versions and no
        ``input_file_name()`` (which Unity Catalog shared clusters refuse). As with delta-rs,
        files rewritten by OPTIMIZE count as added again (at least once, never lost), and the
        commits must still be in the log (keep its retention longer than any outage)."""
        from pyspark.sql import functions as F

        root = self.path(table)
        commits = [
            f"{root}/_delta_log/{version:020d}.json"
            for version in range(after_version + 1, until_version + 1)
        ]
        actions = self.spark.read.json(commits)
        names: list[str] = []
        if "add" in actions.columns:
            rows = actions.where(F.col("add").isNotNull()).select("add.path").collect()
            names = [row["path"] for row in rows]
        names = sorted(set(names))
        wanted = columns or SCHEMAS[table].names
        if not names:
            empty = self.conform(SCHEMAS[table].empty_table(), table)
            return empty.select(wanted)
        # An add action's path is relative to the table and URL-encoded (Delta's protocol).
        files = [f"{root}/{unquote(name)}" for name in names]
        data = self.spark.read.parquet(*files).select(*wanted).toArrow()
        return self.conform(data, table, partial=columns is not None)

    def append(self, df: DataFrame, table: str, *, txn: Txn | None = None) -> bool:
        """Append ``df``; False when Delta skipped it (this ``txn`` is already committed).

        Whether a commit happened is read from the table's version before and after: the
        stream is the only writer of its (app id, batch) keys (its checkpoint lock)."""
        before = self.version(table)
        if before < 0:
            self._create(table)
            before = self.version(table)
        writer = df.select(*SCHEMAS[table].names).write.format("delta").mode("append")
        if txn is not None:
            # Delta skips the write when this (appId, version) is already committed.
            writer = writer.option("txnAppId", txn.app_id).option("txnVersion", txn.version)
        writer.save(self.path(table))
        return self.version(table) > before

    def _create(self, table: str) -> None:
        """Create the table with the contract's schema, NOT NULL columns included (a first
        append would make every column nullable), as delta-rs does: each writer then finds
        the same schema in a table the other created."""
        from delta.tables import DeltaTable
        from pyspark.sql.pandas.types import from_arrow_schema

        schema = from_arrow_schema(SCHEMAS[table])
        builder = DeltaTable.createIfNotExists(self.spark).location(self.path(table))
        builder.addColumns(schema).execute()

    def append_arrow(self, data: pa.Table, table: str, *, txn: Txn | None = None) -> bool:
        if data.num_rows == 0:
            return False  # as delta-rs: no empty commit (a clean batch has no quarantine rows)
        rows = self.spark.createDataFrame(self.conform(data, table))
        return self.append(rows, table, txn=txn)
