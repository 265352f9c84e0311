"""The SparkSession, configured once from :class:`~fruits.config.SparkConfig`.

Locally (``local[*]``) or on a cluster (``spark://``, ``yarn``, ``k8s://``) this builds the
session: Delta's SQL extension when Delta's jars are in pyspark's jars folder
(``scripts/spark-jars.sh``), and Hadoop's Azure driver pointed at the configured storage account
for ``abfs[s]://`` paths. With ``spark.remote`` (``sc://host:port``) it is a Spark Connect client:
the server owns the JVM, its jars and its storage credentials, and there is no ``SparkContext``.
On Databricks the runtime owns the session, its Delta and its storage credentials: the session
is taken as it is and only the SQL settings the jobs rely on are set, never jars nor credentials.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fruits.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fruits.config import Config

__all__ = [
    "get_spark",
    "is_connect",
    "local_jars",
    "on_databricks",
    "one_task_per_slot",
    "ship_file",
    "stream_process",
    "task_slots",
    "ui_address",
]

_DELTA_EXTENSION = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def on_databricks() -> bool:
    """Inside a Databricks runtime (a job, a notebook): its session, Delta and identity rule."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def local_jars(prefix: str) -> list[Path]:
    """The jars named ``prefix*`` in pyspark's own jars folder (where scripts/spark-jars.sh
    puts Delta's and Hadoop's Azure driver)."""
    import pyspark

    return sorted((Path(pyspark.__file__).parent / "jars").glob(f"{prefix}*.jar"))


def is_connect(spark: SparkSession) -> bool:
    """A Spark Connect session (``sc://``, Databricks serverless or standard access mode): no
    ``SparkContext``, and ``foreachBatch`` runs in a Python process beside the server."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


# Set by stream_process(): every session this process starts is the streaming job's.
_STREAM_PROCESS = False


def stream_process() -> None:
    """Mark this process as the streaming job's, before anything in it may start a session.

    The first session of a process launches its JVM, and its flags stay for the process' life.
    In the stream's process the first ``get_spark`` call may come from elsewhere than the job
    itself (the Spark lake that the Event Hubs outbox or the maintenance opens, a first model
    trained by ``fruits stream``): from now on every one of them takes the stream's JVM
    options and UI (``spark.stream_java_options``, ``spark.stream_ui``)."""
    global _STREAM_PROCESS
    _STREAM_PROCESS = True


def get_spark(config: Config, *, streaming: bool = False) -> SparkSession:
    """The process' SparkSession; ``streaming`` (or :func:`stream_process` earlier) picks
    ``spark.stream_java_options`` instead of ``spark.java_options`` for the JVM and
    ``spark.stream_ui`` instead of ``spark.ui``, if this call is the one that starts it."""
    from pyspark.sql import SparkSession

    streaming = streaming or _STREAM_PROCESS

    spark_conf = config.spark
    # SQL settings every job relies on; they can be set on a session that already exists.
    sql = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(spark_conf.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Rows per Arrow batch = photos per inference call in a worker.
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(spark_conf.arrow_batch_size),
    }
    if on_databricks():
        spark = SparkSession.builder.getOrCreate()
        for key, value in sql.items():
            spark.conf.set(key, value)
        return spark
    if spark_conf.remote:
        # A Spark Connect client: SQL settings only; the server has its jars and credentials.
        spark = SparkSession.builder.remote(spark_conf.remote).getOrCreate()
        for key, value in sql.items():
            spark.conf.set(key, value)
        return spark

    # Workers must run this interpreter (the project's venv), quietly.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    delta_jars = bool(local_jars("delta-spark_"))
    if spark_conf.delta_writer == "spark" and not delta_jars:
        raise ConfigError(
            "config key 'spark.delta_writer' is 'spark' but Delta's jars are not installed "
            "for this pyspark: run scripts/spark-jars.sh .venv/bin/python (make setup does)"
        )
    builder = (
        SparkSession.builder.master(spark_conf.master)
        .appName(spark_conf.app_name)
        .config("spark.driver.memory", spark_conf.driver_memory)
        # Keep Python workers alive between tasks so each builds InceptionV3 only once.
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config(
            "spark.ui.enabled", str(spark_conf.stream_ui if streaming else spark_conf.ui).lower()
        )
        .config("spark.ui.port", str(spark_conf.ui_port))
    )
    # On a cluster: the executors' size (a worker offers its cores and memory to executors).
    if spark_conf.executor_memory:
        builder = builder.config("spark.executor.memory", spark_conf.executor_memory)
    if spark_conf.executor_cores:
        builder = builder.config("spark.executor.cores", str(spark_conf.executor_cores))
    for key, value in sql.items():
        builder = builder.config(key, value)
    if delta_jars:  # one session serves both writers: delta-rs ignores Spark's catalog
        for key, value in _DELTA_EXTENSION.items():
            builder = builder.config(key, value)
    java_options = spark_conf.stream_java_options if streaming else spark_conf.java_options
    if java_options:
        # Read when PySpark launches the JVM; a session that already exists keeps its JVM.
        builder = builder.config("spark.driver.extraJavaOptions", java_options)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if delta_jars:
        # Delta rebuilds a table's state after each commit in this many tasks (default 50):
        # on a small machine, that many tiny tasks dominate a small append; one per core is
        # enough (BENCHMARKS.md, section 7, Two Delta writers).
        cores = spark.sparkContext.defaultParallelism
        spark.conf.set("spark.databricks.delta.snapshotPartitions", str(max(1, cores)))
    _configure_azure(spark, config)
    return spark


def ui_address(spark: SparkSession) -> str | None:
    """The Spark UI's address (the driver's), or None when it is off or out of reach (a Spark
    Connect client: the UI is the server's)."""
    if is_connect(spark):
        return None
    address = spark.sparkContext.uiWebUrl
    return str(address) if address else None


def task_slots(spark: SparkSession) -> int | None:
    """How many tasks run at once: the cluster's cores (``defaultParallelism``); under Spark
    Connect ``spark.default.parallelism`` when the server sets it, else None (unknown)."""
    if not is_connect(spark):
        return int(spark.sparkContext.defaultParallelism)
    value = spark.conf.get("spark.default.parallelism", None)
    return int(value) if value else None


def one_task_per_slot(df: DataFrame) -> DataFrame:
    """``df`` in at most one partition per task slot, without a shuffle (a coalesce never adds
    partitions, so a small input stays one small task). Each task pays its own Spark and Python
    round trip, so more tasks than slots only add round trips (BENCHMARKS.md, section 4, Spark
    tuning). Under Spark Connect with no known slot count, as it is."""
    slots = task_slots(df.sparkSession)
    return df.coalesce(slots) if slots else df


_SHIPPED: set[tuple[str, str]] = set()


def ship_file(spark: SparkSession, path: str) -> None:
    """Make a driver-side file reachable by every executor, under its own name, through Spark
    (``SparkFiles.get(name)`` in a task): the ONNX export, the weights. Nothing to do in local
    mode, where the executors share the driver's disk; a cluster's or a Spark Connect server's
    executors need not. Once per session and file."""
    remote = is_connect(spark)
    if not remote and (spark.sparkContext.master or "").startswith("local"):
        return
    session = spark.session_id if remote else spark.sparkContext.applicationId  # type: ignore[attr-defined]
    key = (str(session), os.path.abspath(path))
    if key not in _SHIPPED:
        spark.addArtifacts(path, file=True)
        _SHIPPED.add(key)


def _configure_azure(spark: SparkSession, config: Config) -> None:
    """Hadoop's ABFS driver for the configured account, when its jar is here and the config
    names an account. Set on the session's Hadoop configuration, not in SparkConf: a key never
    reaches the Spark UI, the event log or a plan."""
    from fruits.azure import AzureStorage

    storage = AzureStorage(config.azure)
    if is_connect(spark) or not local_jars("hadoop-azure-") or not storage.configured:
        return  # a Spark Connect server holds its own storage credentials
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in storage.hadoop_options().items():
        hadoop.set(key, value)
