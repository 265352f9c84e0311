"""Spark's native Delta writer: Databricks, and locally delta-spark with its jars.

An idempotent append passes ``txnAppId``/``txnVersion``, which Delta itself skips when that
version was already committed for that app id. Tables are addressed by path (local, ``abfs[s]``,
or ``az://`` translated to Hadoop's ``abfs`` URL by :class:`~fruits.azure.AzureStorage`), so
delta-rs reads what this writes and the other way round.

The lake holds its SparkSession: the Event Hubs retry thread calls it from a thread of its
own, where ``SparkSession.getActiveSession()`` is None.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pyarrow as pa

from fruits.sinks.delta import Lake, MaintenancePolicy, Since, Txn
from fruits.sinks.tables import SCHEMAS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkDeltaLake"]

# Delta's conflicts that a retry of a blind append resolves: a racer's commit of the same app
# id, a concurrent metadata change (`fruits maintain` setting table properties).
_CONFLICTS = ("ConcurrentTransaction", "MetadataChanged", "DELTA_METADATA_CHANGED")
_COMMIT_ATTEMPTS = 3


class SparkDeltaLake(Lake):
    """Spark's native Delta writer (Databricks; delta-spark with its jars elsewhere)."""

    def __init__(
        self, root: str, spark: SparkSession, *, table_properties: dict[str, str] | None = None
    ) -> None:
        super().__init__(root, table_properties=table_properties)
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
        since: Since | None = None,
    ) -> DataFrame:
        from pyspark.sql import functions as F

        if not self._exists(table):
            df = spark.createDataFrame(SCHEMAS[table].empty_table())
        else:
            df = spark.read.format("delta").load(self.path(table))
        for column, value in (equals or {}).items():
            df = df.where(F.col(column) == value)
        if since is not None:  # pushed down to Delta's data skipping (file statistics)
            df = df.where(F.col(since[0]) >= F.lit(since[1]))
        return df.select(*columns) if columns else df

    def read_arrow(
        self,
        table: str,
        *,
        columns: list[str] | None = None,
        equals: dict[str, str] | None = None,
        since: Since | None = None,
    ) -> pa.Table:
        data = self.read(self.spark, table, columns=columns, equals=equals, since=since)
        return self.conform(data.toArrow(), table, partial=True)

    def files_to_read(self, table: str, since: Since) -> int | None:
        """Delta's data skipping decides inside the scan, and PySpark does not see it."""
        return None

    def count(self, table: str) -> int:
        """Delta answers a plain count from its file statistics (no data read)."""
        if not self._exists(table):
            return 0
        return int(self.spark.read.format("delta").load(self.path(table)).count())

    def latest(self, table: str, column: str) -> Any:
        from pyspark.sql import functions as F

        if not self._exists(table):
            return None
        df = self.spark.read.format("delta").load(self.path(table))
        # Through Arrow: a timestamp comes back in UTC, not as a naive local time (Row).
        return df.agg(F.max(column).alias("latest")).toArrow().column(0)[0].as_py()

    def replace_arrow(self, data: pa.Table, table: str) -> None:
        if not self._exists(table):
            self._create(table)
        rows = self.spark.createDataFrame(self.conform(data, table))
        rows.write.format("delta").mode("overwrite").save(self.path(table))

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
        ``input_file_name()`` (which Unity Catalog shared clusters refuse). Files that OPTIMIZE
        wrote (``dataChange=false``) are not added rows; the files they replaced are still read
        (vacuum keeps them for the outbox, Lake.maintain). The commits must still be in the log
        (maintenance.log_retention_hours longer than any outage)."""
        from pyspark.sql import functions as F

        root = self.path(table)
        commits = [
            f"{root}/_delta_log/{version:020d}.json"
            for version in range(after_version + 1, until_version + 1)
        ]
        actions = self.spark.read.json(commits)
        names: list[str] = []
        if "add" in actions.columns:
            # dataChange=false: a compaction's rewrite of rows already added (Lake.maintain).
            added = actions.where(F.col("add").isNotNull() & F.col("add.dataChange"))
            names = [row["path"] for row in added.select("add.path").collect()]
        names = sorted(set(names))
        wanted = columns or SCHEMAS[table].names
        if not names:
            empty = self.conform(SCHEMAS[table].empty_table(), table)
            return empty.select(wanted)
        # An add action's path is relative to the table and URL-encoded (Delta's protocol).
        files = [f"{root}/{unquote(name)}" for name in names]
        data = self.spark.read.parquet(*files).select(*wanted).toArrow()
        return self.conform(data, table, partial=columns is not None)

    def _appended_rows(self, table: str, after_version: int, until_version: int) -> int | None:
        """The commits' log entries in one read; each added file's ``numRecords`` parsed from
        its statistics (Spark's writer collects them unless told not to)."""
        from pyspark.sql import functions as F

        root = self.path(table)
        commits = [
            f"{root}/_delta_log/{version:020d}.json"
            for version in range(after_version + 1, until_version + 1)
        ]
        actions = self.spark.read.json(commits)
        if "add" not in actions.columns:
            return 0
        added = actions.where(F.col("add").isNotNull() & F.col("add.dataChange"))
        records = F.get_json_object(F.col("add.stats"), "$.numRecords").cast("long")
        row = added.agg(
            F.sum(records).alias("rows"), F.count(F.lit(1)).alias("files"), F.count(records)
        ).first()
        if row is None or row[1] == 0:
            return 0
        return None if row[2] < row[1] else int(row[0])

    def _read_version(self, table: str, version: int, columns: list[str] | None) -> pa.Table:
        df = self.spark.read.format("delta").option("versionAsOf", version).load(self.path(table))
        wanted = columns or SCHEMAS[table].names
        return self.conform(df.select(*wanted).toArrow(), table, partial=columns is not None)

    def append(self, df: DataFrame, table: str, *, txn: Txn | None = None) -> bool:
        """Append ``df``; False when Delta skipped it (this ``txn`` is already committed).

        Delta checks ``txnAppId``/``txnVersion`` inside its own transaction, and a racing
        commit of the same app id fails this one (``ConcurrentTransactionException``), as does
        a concurrent metadata change: it is then tried again, and Delta skips it if the racer
        committed that version. Whether
        a commit was this call's own is read from the log, by a token in the commit's
        ``userMetadata`` (the table's version before and after would also count a concurrent
        writer's commit)."""
        before = self.version(table)
        if before < 0:
            self._create(table)
            before = self.version(table)
        token = f"fruits-append-{uuid.uuid4().hex}"
        writer = (
            df.select(*SCHEMAS[table].names)
            .write.format("delta")
            .mode("append")
            .option("userMetadata", token)
        )
        if txn is not None:
            # Delta skips the write when this (appId, version) is already committed.
            writer = writer.option("txnAppId", txn.app_id).option("txnVersion", txn.version)
        for attempt in range(_COMMIT_ATTEMPTS):
            try:
                writer.save(self.path(table))
                break
            except Exception as exc:
                # A commit that lost a conflict wrote nothing: try again (Delta skips it if
                # the racer committed this very version).
                conflict = any(name in f"{type(exc).__name__} {exc}" for name in _CONFLICTS)
                if not conflict or attempt == _COMMIT_ATTEMPTS - 1:
                    raise
        return self._committed_by(table, token, after_version=before)

    def _committed_by(self, table: str, token: str, *, after_version: int) -> bool:
        """Whether a commit after ``after_version`` carries ``token`` (its userMetadata), read
        from the commit files themselves, version after version up to the newest: Delta's
        history (and its latest version) can come from a snapshot another thread of this
        session has not refreshed yet, which would miss a commit just made."""
        from pyspark.errors import AnalysisException

        version = after_version + 1
        while True:
            entry = f"{self.path(table)}/_delta_log/{version:020d}.json"
            try:
                lines = [row.value for row in self.spark.read.text(entry).collect()]
            except AnalysisException:  # past the newest commit: none was this call's
                return False
            for line in lines:
                info = json.loads(line).get("commitInfo")
                if info is not None and info.get("userMetadata") == token:
                    return True
            version += 1

    def _create(self, table: str) -> None:
        """Create the table with the contract's schema, NOT NULL columns included (a first
        append would make every column nullable), as delta-rs does: each writer then finds
        the same schema in a table the other created."""
        from delta.tables import DeltaTable
        from pyspark.sql.pandas.types import from_arrow_schema

        schema = from_arrow_schema(SCHEMAS[table])
        builder = DeltaTable.createIfNotExists(self.spark).location(self.path(table))
        for key, value in self.table_properties.items():
            builder = builder.property(key, value)
        builder.addColumns(schema).execute()

    def append_arrow(self, data: pa.Table, table: str, *, txn: Txn | None = None) -> bool:
        if data.num_rows == 0:
            return False  # as delta-rs: no empty commit (a clean batch has no quarantine rows)
        rows = self.spark.createDataFrame(self.conform(data, table))
        return self.append(rows, table, txn=txn)

    # --- maintenance (Lake.maintain) -------------------------------------------------------

    def _delta(self, table: str):  # type: ignore[no-untyped-def]
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, self.path(table))

    def _live_files(self, table: str) -> tuple[int, int]:
        detail = self._delta(table).detail().first()
        return int(detail["numFiles"]), int(detail["sizeInBytes"])

    def _set_properties(self, table: str, policy: MaintenancePolicy) -> dict[str, str]:
        current = self._delta(table).detail().first()["properties"] or {}
        changed = {k: v for k, v in policy.table_properties().items() if current.get(k) != v}
        if changed:
            settings = ", ".join(f"'{k}' = '{v}'" for k, v in changed.items())
            self.spark.sql(f"ALTER TABLE delta.`{self.path(table)}` SET TBLPROPERTIES ({settings})")
        return changed

    def _compact(self, table: str, target_file_size: int) -> tuple[int, int]:
        # OPTIMIZE's target size is a session setting (the same for every table here).
        self.spark.conf.set("spark.databricks.delta.optimize.maxFileSize", str(target_file_size))
        metrics = self._delta(table).optimize().executeCompaction().first()["metrics"]
        return int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])

    def _vacuum(self, table: str, retention_hours: float, *, full: bool = False) -> int:
        # LITE at most passes: only the files the log removed, never a file a writer is still
        # committing. FULL (the policy's full_vacuum, now and then) lists the folder and
        # deletes unreferenced files by their age: at least an hour (Lake.maintain). The
        # retention below Delta's 7-day check is the policy's decision, so the check is off.
        self.spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        hours = math.ceil(retention_hours)
        if full:
            return self._vacuum_command(table, "FULL", max(hours, 1))
        try:
            return self._vacuum_command(table, "LITE", hours)
        except Exception as exc:
            # LITE needs the log since the last vacuum; once cleaned up, Delta asks for FULL
            # (DELTA_CANNOT_VACUUM_LITE). FULL also deletes untracked files by their age: at
            # least an hour, far longer than any commit in progress takes.
            if "VACUUM_LITE" not in str(exc):
                raise
            return self._vacuum_command(table, "FULL", max(hours, 1))

    def _vacuum_command(self, table: str, mode: str, hours: int) -> int:
        command = f"VACUUM delta.`{self.path(table)}` {mode} RETAIN {hours} HOURS"
        deleted = self.spark.sql(f"{command} DRY RUN").count()
        self.spark.sql(command).collect()
        return deleted

    def _checkpoint(self, table: str, *, clean_logs: bool) -> tuple[int | None, bool]:
        """On Databricks: its Delta checkpoints by itself every delta.checkpointInterval
        commits (the table property the policy sets), and its classes are not the open-source
        ones, so nothing is called and None is reported. Elsewhere: a
        checkpoint of the latest version, through Delta's own ``DeltaLog`` (no public
        Python call exists; the JVM of a classic session, as this writer needs anyway). Spark's
        Delta drops the log entries older than delta.logRetentionDuration at its checkpoints by
        itself, so ``clean_logs`` cannot hold them back here: the log retention must outlast
        any Event Hubs outage (RELIABILITY.md, Weeks of streaming). Where ``DeltaLog`` is not
        reachable (another Delta build), Delta's automatic checkpoints every
        delta.checkpointInterval commits remain, and None is reported."""
        from fruits.spark import on_databricks

        if on_databricks():
            return None, False
        try:
            jvm: Any = self.spark._jvm
            session: Any = self.spark._jsparkSession
            log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(session, self.path(table))
            snapshot = log.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty())
            log.checkpoint(snapshot, jvm.scala.Option.empty())
            return int(snapshot.version()), False
        except Exception:  # py4j's errors: no such class or method in this Delta build
            return None, False

    def _commit_timestamp(self, table: str, version: int) -> dt.datetime | None:
        from pyspark.errors import AnalysisException
        from pyspark.sql import functions as F

        try:
            actions = self.spark.read.json(f"{self.path(table)}/_delta_log/{version:020d}.json")
            info = actions.where(F.col("commitInfo").isNotNull()).select("commitInfo.timestamp")
            first = info.first()
        except AnalysisException:
            return None
        return None if first is None else dt.datetime.fromtimestamp(first[0] / 1000, dt.UTC)
