"""The SparkSession, configured once from :class:`~fruits.config.SparkConfig`.

On Databricks the session already exists and ``getOrCreate`` returns it; the settings here
matter for ``local[*]`` and for a plain Spark cluster.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from fruits.config import Config

__all__ = ["get_spark"]


def get_spark(config: Config, *, streaming: bool = False) -> SparkSession:
    """The process' SparkSession; ``streaming`` picks ``spark.stream_java_options`` instead of
    ``spark.java_options`` for the JVM, if this call is the one that starts it."""
    # Workers must run this interpreter (the project's venv), quietly.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pyspark.sql import SparkSession

    spark_conf = config.spark
    builder = (
        SparkSession.builder.master(spark_conf.master)
        .appName(spark_conf.app_name)
        .config("spark.driver.memory", spark_conf.driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(spark_conf.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Rows per Arrow batch = photos per inference call in a worker.
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(spark_conf.arrow_batch_size))
        # Keep Python workers alive between tasks so each builds InceptionV3 only once.
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
    )
    java_options = spark_conf.stream_java_options if streaming else spark_conf.java_options
    if java_options:
        # Read when PySpark launches the JVM; a session that already exists keeps its JVM.
        builder = builder.config("spark.driver.extraJavaOptions", java_options)
    if spark_conf.delta_writer == "spark":
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
