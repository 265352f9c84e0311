"""Delta tables behind one interface, with two writers and one exactly-once contract.

* :class:`DeltaRsLake` (embedded default): delta-rs (``deltalake``) on the driver. An
  idempotent append records ``Transaction(app_id, version)`` in the same commit and is skipped
  when ``transaction_version(app_id)`` is already at or past that version.
* :class:`SparkDeltaLake` (Databricks, or delta-spark with its jars): Spark's native writer with
  ``txnAppId``/``txnVersion``, which Delta itself skips when already committed.

Both read and write the Arrow schemas of :mod:`fruits.tables`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from fruits.tables import SCHEMAS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config

__all__ = ["DeltaRsLake", "Lake", "SparkDeltaLake", "Txn", "open_lake"]


@dataclass(frozen=True)
class Txn:
    """An idempotency key: the writer commits ``version`` for ``app_id`` at most once."""

    app_id: str
    version: int


class Lake(ABC):
    def __init__(self, root: str, *, storage_options: dict[str, str] | None = None) -> None:
        self.root = root.rstrip("/")
        self.storage_options = storage_options

    def path(self, table: str) -> str:
        return f"{self.root}/{table}"

    @abstractmethod
    def read(
        self,
        spark: SparkSession,
        table: str,
        *,
        columns: list[str] | None = None,
        equals: dict[str, str] | None = None,
    ) -> DataFrame:
        """The table (or ``columns`` of it, rows where column == value for each of ``equals``)
        as a Spark DataFrame; empty, with the contract schema, if it was not created yet."""

    @abstractmethod
    def read_arrow(
        self,
        table: str,
        *,
        columns: list[str] | None = None,
        equals: dict[str, str] | None = None,
    ) -> pa.Table:
        """:meth:`read` onto the driver as Arrow (small reads: status, feature keys)."""

    @abstractmethod
    def append(self, df: DataFrame, table: str, *, txn: Txn | None = None) -> bool:
        """Append ``df``; with ``txn``, at most once per key. False when nothing was written."""

    @abstractmethod
    def append_arrow(self, data: pa.Table, table: str, *, txn: Txn | None = None) -> bool:
        """:meth:`append` for rows already on the driver (small batches, e.g. features)."""

    @abstractmethod
    def version(self, table: str) -> int:
        """The table's latest Delta version; -1 if it was not created yet."""

    @abstractmethod
    def add_missing_columns(self, table: str) -> list[str]:
        """Bring a table created by an older release up to the contract's schema: columns the
        contract gained since are added (a metadata-only commit; older rows read them as
        null). Returns the names added; nothing to do for a table not created yet."""

    def read_appended(
        self,
        table: str,
        after_version: int,
        *,
        until_version: int | None = None,
        columns: list[str] | None = None,
    ) -> tuple[pa.Table, int]:
        """Rows appended in Delta versions ``(after_version, until_version]`` (default: up to
        the latest), with the version read up to. For append-only tables (``predictions``):
        the Event Hubs outbox reads what is not published yet this way."""
        head = self.version(table)
        until = head if until_version is None else min(until_version, head)
        if until <= after_version:
            empty = self.conform(SCHEMAS[table].empty_table(), table)
            return (empty.select(columns) if columns else empty), max(after_version, until)
        return self._read_added(table, after_version, until, columns), until

    @abstractmethod
    def _read_added(
        self, table: str, after_version: int, until_version: int, columns: list[str] | None
    ) -> pa.Table:
        """The rows of the data files present at ``until_version`` and absent at
        ``after_version`` (-1: none), cast to the contract schema."""

    def conform(self, data: pa.Table, table: str, *, partial: bool = False) -> pa.Table:
        """Select and cast to the contract schema, so both writers store the same types.

        With ``partial``, a projection (some of the columns) is cast to those columns."""
        schema = SCHEMAS[table]
        if partial:
            schema = pa.schema([f for f in schema if f.name in data.column_names])
        missing = set(schema.names) - set(data.column_names)
        if missing:
            raise ValueError(f"table {table}: columns missing from the data: {sorted(missing)}")
        return data.select(schema.names).cast(schema)


class DeltaRsLake(Lake):
    """delta-rs on the driver: the embedded default and ``az://`` on Blob storage."""

    def _table(self, table: str):  # type: ignore[no-untyped-def]
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.path(table), storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def read_arrow(
        self,
        table: str,
        *,
        columns: list[str] | None = None,
        equals: dict[str, str] | None = None,
    ) -> pa.Table:
        delta = self._table(table)
        if delta is None:
            empty = SCHEMAS[table].empty_table()
            return empty.select(columns) if columns else empty
        condition = None
        for column, value in (equals or {}).items():
            term = pc.field(column) == value
            condition = term if condition is None else condition & term
        dataset = delta.to_pyarrow_dataset()
        data = dataset.to_table(columns=columns, filter=condition)
        # Free the scanner now, not in interpreter teardown where its threads can abort the
        # process ("terminate called without an active exception", delta-rs #2184).
        del dataset, delta
        return data

    def read(
        self,
        spark: SparkSession,
        table: str,
        *,
        columns: list[str] | None = None,
        equals: dict[str, str] | None = None,
    ) -> DataFrame:
        data = self.read_arrow(table, columns=columns, equals=equals)
        data = self.conform(data, table, partial=True)
        return spark.createDataFrame(data)

    def append(self, df: DataFrame, table: str, *, txn: Txn | None = None) -> bool:
        return self.append_arrow(df.toArrow(), table, txn=txn)

    def append_arrow(self, data: pa.Table, table: str, *, txn: Txn | None = None) -> bool:
        from deltalake import CommitProperties, Transaction, write_deltalake

        if txn is not None and self.committed_version(table, txn.app_id) >= txn.version:
            return False  # a replayed batch: this version is already in the table
        if data.num_rows == 0:
            return False
        properties = None
        if txn is not None:
            properties = CommitProperties(
                app_transactions=[Transaction(app_id=txn.app_id, version=txn.version)]
            )
        write_deltalake(
            self.path(table),
            self.conform(data, table),
            mode="append",
            storage_options=self.storage_options,
            commit_properties=properties,
        )
        return True

    def version(self, table: str) -> int:
        delta = self._table(table)
        return -1 if delta is None else int(delta.version())

    def add_missing_columns(self, table: str) -> list[str]:
        from deltalake.schema import Field

        delta = self._table(table)
        if delta is None:
            return []
        present = set(delta.schema().to_arrow().names)
        missing = [f for f in SCHEMAS[table] if f.name not in present]
        if missing:
            delta.alter.add_columns([Field.from_arrow(f.with_nullable(True)) for f in missing])
        return [f.name for f in missing]

    def _read_added(
        self, table: str, after_version: int, until_version: int, columns: list[str] | None
    ) -> pa.Table:
        # An append-only table: the rows of the files present at `until` and absent at
        # `after_version`, read through delta-rs' own dataset (its filesystem serves az:// too).
        # The change data feed (load_cdf) would skip files rewritten by OPTIMIZE, but delta-rs
        # refuses it for version 0 without delta.enableChangeDataFeed. After an OPTIMIZE, the
        # rewritten rows count as appended again: at least once, never lost. Opening an old
        # version needs its log: keep the log retention longer than any Event Hubs outage.
        dataset = self._at(table, until_version).to_pyarrow_dataset()
        known: set[str] = set()
        if after_version >= 0:  # the add actions' paths are relative, as the fragments' are
            actions = pa.table(self._at(table, after_version).get_add_actions(flatten=True))
            known = set(actions.column("path").to_pylist())
        fragments = [f for f in dataset.get_fragments() if f.path not in known]
        appended = ds.FileSystemDataset(
            fragments, dataset.schema, dataset.format, filesystem=dataset.filesystem
        ).to_table(columns=columns)
        del dataset, fragments  # free delta-rs' threads now (see read_arrow)
        return self.conform(appended, table, partial=columns is not None)

    def _at(self, table: str, version: int):  # type: ignore[no-untyped-def]
        from deltalake import DeltaTable

        return DeltaTable(self.path(table), version=version, storage_options=self.storage_options)

    def committed_version(self, table: str, app_id: str) -> int:
        delta = self._table(table)
        if delta is None:
            return -1
        version = delta.transaction_version(app_id)
        return -1 if version is None else int(version)


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

    def add_missing_columns(self, table: str) -> list[str]:
        # Not run on these machines (no Delta jars): Delta's own ALTER TABLE ... ADD COLUMNS.
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
        if not self._exists(spark, table):
            return []
        present = set(spark.read.format("delta").load(self.path(table)).columns)
        missing = [f for f in SCHEMAS[table] if f.name not in present]
        if missing:
            types = spark.createDataFrame(pa.schema(missing).empty_table()).schema
            columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in types)
            spark.sql(f"ALTER TABLE delta.`{self.path(table)}` ADD COLUMNS ({columns})")
        return [f.name for f in missing]

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


def open_lake(config: Config) -> Lake:
    """The configured lake: a folder, or ``az://`` on Blob (delta-rs with the account's
    credentials), or Spark's native Delta writer."""
    root = config.path("lake")
    if config.spark.delta_writer == "spark":
        return SparkDeltaLake(root)  # credentials come from the cluster (abfss://)
    options = None
    if root.startswith("az://"):
        from fruits.azure_storage import AzureStorage, BlobLocation

        storage = AzureStorage(config.azure)
        storage.container(BlobLocation.parse(root).container, create=True)  # delta-rs won't
        options = storage.delta_storage_options()
    return DeltaRsLake(root, storage_options=options)
