"""Spark's native Delta writer beside delta-rs: one contract, and tables that move between them.

Each test of a defect found in the untested native path would fail without its fix: a replay
reported as written, an empty commit per clean batch, the lake unusable from a thread of its
own, Delta configured through the pip helper, the CLI stopping a Databricks cluster's session.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from bench.delta_commit import sample_predictions as _predictions
from fruits.config import Config
from fruits.sinks.delta import Txn
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.delta_spark import SparkDeltaLake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE, SCHEMAS

pytestmark = pytest.mark.spark


@pytest.fixture
def spark_lake(spark: Any, tmp_path: Path) -> SparkDeltaLake:
    return SparkDeltaLake(str(tmp_path / "lake"), spark)


def test_a_replayed_append_is_reported_as_skipped(spark_lake: SparkDeltaLake) -> None:
    rows = _predictions(["a.jpg", "b.jpg"], 0)
    assert spark_lake.append_arrow(rows, PREDICTIONS, txn=Txn("query-1", 0)) is True
    version = spark_lake.version(PREDICTIONS)
    assert spark_lake.append_arrow(rows, PREDICTIONS, txn=Txn("query-1", 0)) is False
    assert spark_lake.version(PREDICTIONS) == version
    assert spark_lake.read_arrow(PREDICTIONS).num_rows == 2


def test_nothing_to_write_makes_no_commit(spark_lake: SparkDeltaLake) -> None:
    empty = SCHEMAS[QUARANTINE].empty_table()
    assert spark_lake.append_arrow(empty, QUARANTINE, txn=Txn("query-1", 0)) is False
    assert spark_lake.version(QUARANTINE) == -1  # not even created
    spark_lake.append_arrow(_predictions(["a.jpg"], 0), PREDICTIONS, txn=Txn("q", 0))
    version = spark_lake.version(PREDICTIONS)
    spark_lake.append_arrow(SCHEMAS[PREDICTIONS].empty_table(), PREDICTIONS, txn=Txn("q", 1))
    assert spark_lake.version(PREDICTIONS) == version


def test_read_appended_reads_the_new_commits_only(spark_lake: SparkDeltaLake) -> None:
    for batch, paths in enumerate([["a.jpg"], ["b.jpg", "c.jpg"], ["d e.jpg"]]):
        spark_lake.append_arrow(_predictions(paths, batch), PREDICTIONS, txn=Txn("q", batch))
    head = spark_lake.version(PREDICTIONS)  # the table's creation, then one commit per batch
    rows, until = spark_lake.read_appended(PREDICTIONS, head - 2, columns=["path", "batch_id"])
    assert until == head
    assert sorted(rows.column("path").to_pylist()) == ["b.jpg", "c.jpg", "d e.jpg"]
    assert rows.schema == pa.schema([SCHEMAS[PREDICTIONS].field(n) for n in ("path", "batch_id")])
    nothing, same = spark_lake.read_appended(PREDICTIONS, head)
    assert (nothing.num_rows, same) == (0, head)
    everything, _ = spark_lake.read_appended(PREDICTIONS, -1, until_version=head - 1)
    assert sorted(everything.column("path").to_pylist()) == ["a.jpg", "b.jpg", "c.jpg"]


def test_the_lake_works_from_a_thread_with_no_active_session(
    spark_lake: SparkDeltaLake,
) -> None:
    from pyspark.sql import SparkSession

    seen: dict[str, Any] = {}

    def publish() -> None:  # as the Event Hubs retry thread does
        seen["active"] = SparkSession.getActiveSession()
        seen["written"] = spark_lake.append_arrow(_predictions(["t.jpg"], 0), PREDICTIONS)
        seen["rows"] = spark_lake.read_arrow(PREDICTIONS).num_rows

    thread = threading.Thread(target=publish)
    thread.start()
    thread.join()
    assert seen == {"active": None, "written": True, "rows": 1}


def test_tables_move_between_writers_with_the_same_schema_and_rows(
    spark_lake: SparkDeltaLake, tmp_path: Path
) -> None:
    rs = DeltaRsLake(str(tmp_path / "lake"))
    spark_lake.append_arrow(_predictions(["a.jpg"], 0), PREDICTIONS, txn=Txn("q", 0))
    rs.append_arrow(_predictions(["b.jpg"], 1), PREDICTIONS, txn=Txn("q", 1))
    # Each writer honours the other's app transactions: a switch of writers replays nothing.
    assert rs.append_arrow(_predictions(["a.jpg"], 0), PREDICTIONS, txn=Txn("q", 0)) is False
    replay = _predictions(["b.jpg"], 1)
    assert spark_lake.append_arrow(replay, PREDICTIONS, txn=Txn("q", 1)) is False
    by_rs, by_spark = rs.read_arrow(PREDICTIONS), spark_lake.read_arrow(PREDICTIONS)
    assert by_rs.schema == by_spark.schema == SCHEMAS[PREDICTIONS]
    assert by_rs.sort_by("path").to_pylist() == by_spark.sort_by("path").to_pylist()
    assert by_rs.num_rows == 2 and by_rs.sort_by("path")["top_k"][0].as_py() == [
        {"label": "Kiwi", "prob": 0.9}
    ]


def test_get_spark_needs_no_delta_pip_helper_and_takes_a_databricks_session_as_it_is(
    spark: Any, make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fruits.spark import get_spark

    # Where the delta-spark pip package is absent (a Databricks cluster), nothing imports it.
    monkeypatch.setitem(sys.modules, "delta", None)
    config = make_config(FRUITS__SPARK__DELTA_WRITER="spark", FRUITS__SPARK__ARROW_BATCH_SIZE="7")
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "19.0")
    assert get_spark(config) is spark
    assert spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == "7"
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "8")


def test_the_cli_leaves_a_databricks_session_and_process_alone(
    spark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fruits import cli

    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "19.0")
    monkeypatch.setattr(cli, "main", lambda: 0)
    cli.run()  # returns: no os._exit, no stop of the cluster's session
    monkeypatch.setattr(cli, "main", lambda: 2)
    with pytest.raises(SystemExit) as failed:
        cli.run()
    assert failed.value.code == 2
    assert spark.range(3).count() == 3  # the session is still alive


def test_the_native_writer_fails_with_one_line_without_its_jars(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fruits import spark as spark_module
    from fruits.errors import ConfigError

    monkeypatch.setattr(spark_module, "local_jars", lambda prefix: [])
    config = make_config(FRUITS__SPARK__DELTA_WRITER="spark")
    with pytest.raises(ConfigError, match=r"spark-jars\.sh"):
        spark_module.get_spark(config)


def test_training_caches_features_in_a_table_written_by_spark(
    spark: Any, small_dataset: Path, make_config: Callable[..., Config]
) -> None:
    from batch.evaluate import run_evaluation
    from batch.train import run_training
    from fruits.sinks.tables import FEATURES

    config = make_config(FRUITS__SPARK__DELTA_WRITER="spark")
    config = dataclasses.replace(
        config, training=dataclasses.replace(config.training, classifiers=("logistic_regression",))
    )
    first = run_training(config, str(small_dataset))
    again = run_training(config, str(small_dataset), promote=False)
    assert first["features_computed"] == 60 and again["features_computed"] == 0
    assert first["accuracy_test"] == again["accuracy_test"] >= 0.9
    features = DeltaRsLake(config.path("lake")).read_arrow(FEATURES, columns=["image_id"])
    assert features.num_rows == 60  # written once, by Spark, and readable by delta-rs
    evaluated = run_evaluation(config, str(small_dataset / "Test"))
    assert evaluated["n_images"] == 20 and evaluated["accuracy"] == first["accuracy_test"]


@pytest.mark.parametrize("writer", ["deltars", "spark"])
def test_a_new_table_gets_the_maintenance_policys_log_properties(
    spark: Any, tmp_path: Path, writer: str
) -> None:
    """Created with them, so the stream never needs a metadata commit (which would fail its
    concurrent append) for the log to be cleaned up and checkpointed as the policy says."""
    from deltalake import DeltaTable

    wanted = {
        "delta.logRetentionDuration": "interval 2 hours",
        "delta.deletedFileRetentionDuration": "interval 1 hours",
        "delta.checkpointInterval": "7",
    }
    root = str(tmp_path / "lake")
    lake = (
        DeltaRsLake(root, table_properties=wanted)
        if writer == "deltars"
        else SparkDeltaLake(root, spark, table_properties=wanted)
    )
    for batch in range(2):  # the creating append, then an append to the existing table
        lake.append_arrow(_predictions([f"{batch}.jpg"], batch), PREDICTIONS, txn=Txn("q", batch))
    configuration = DeltaTable(lake.path(PREDICTIONS)).metadata().configuration
    assert {k: configuration.get(k) for k in wanted} == wanted
    assert lake.read_arrow(PREDICTIONS).num_rows == 2


@pytest.mark.parametrize("writer", ["deltars", "spark"])
def test_a_predictions_table_from_before_the_kind_level_gains_its_columns(
    spark: Any, tmp_path: Path, writer: str
) -> None:
    from deltalake import write_deltalake

    kind_level = ("kind", "kind_confidence", "variety_not_sure")
    old_schema = pa.schema([f for f in SCHEMAS[PREDICTIONS] if f.name not in kind_level])
    lake = (
        DeltaRsLake(str(tmp_path)) if writer == "deltars" else SparkDeltaLake(str(tmp_path), spark)
    )
    old = _predictions(["old.jpg"], 0).select(old_schema.names).cast(old_schema)
    write_deltalake(lake.path(PREDICTIONS), old)

    # What the stream does when it starts (streaming/job.py), then a micro-batch's append.
    assert lake.add_missing_columns(PREDICTIONS) == list(kind_level)
    assert lake.add_missing_columns(PREDICTIONS) == []
    lake.append_arrow(_predictions(["new.jpg"], 1), PREDICTIONS, txn=Txn("q", 1))
    rows = {r["path"]: r for r in lake.read_arrow(PREDICTIONS).to_pylist()}
    assert (rows["old.jpg"]["kind"], rows["old.jpg"]["variety_not_sure"]) == (None, None)
    assert (rows["new.jpg"]["kind"], rows["new.jpg"]["variety_not_sure"]) == ("kiwi", False)
