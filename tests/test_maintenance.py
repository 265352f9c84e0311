"""Delta maintenance (compaction, vacuum, log checkpoints), for both writers, on real tables.

Each test would fail if its feature broke: the small files stay, rows change, a replayed batch
is written again, the outbox publishes a compacted row twice or loses one vacuumed too early,
an append fails beside a compaction, or the stream's maintenance thread never runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from bench.delta_commit import sample_predictions
from fruits.config import Config
from fruits.errors import ConfigError
from fruits.sinks.delta import Lake, MaintenancePolicy, Txn
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.delta_spark import SparkDeltaLake
from fruits.sinks.maintenance import BackgroundMaintenance, maintain_lake, maintenance_policy
from fruits.sinks.tables import PREDICTIONS

from .conftest import real_photos
from .test_eventhubs import FakeHub, publisher_for

NOW_POLICY = MaintenancePolicy(target_file_size=128 << 20, vacuum_retention_hours=0)


@pytest.fixture
def lake(request: pytest.FixtureRequest, delta_writer: str, tmp_path: Path) -> Lake:
    """An empty lake written by each Delta writer in turn."""
    root = str(tmp_path / "lake")
    if delta_writer == "spark":
        return SparkDeltaLake(root, request.getfixturevalue("spark"))
    return DeltaRsLake(root)


def _append_batches(lake: Lake, batches: range, *, rows: int = 2) -> None:
    for batch in batches:
        paths = [f"landing/{batch}-{i}.jpg" for i in range(rows)]
        assert lake.append_arrow(sample_predictions(paths, batch), PREDICTIONS, txn=Txn("q", batch))


def _stored_files(lake: Lake, table: str) -> set[str]:
    """The data files in the table's folder, referenced or not (what vacuum deletes)."""
    return {p.name for p in Path(lake.path(table)).glob("*.parquet")}


def _sorted_rows(lake: Lake) -> list[dict[str, Any]]:
    return lake.read_arrow(PREDICTIONS).sort_by("path").to_pylist()


def test_maintain_compacts_small_files_keeps_the_rows_and_the_txn_skip(lake: Lake) -> None:
    _append_batches(lake, range(12))
    rows = _sorted_rows(lake)
    before = len(_stored_files(lake, PREDICTIONS))
    assert before >= 12  # at least one file per append (Spark: one per task)

    result = lake.maintain(PREDICTIONS, NOW_POLICY)

    assert (result.files_before, result.files_after) == (before, 1)
    assert result.files_compacted == before and result.files_written == 1
    assert result.files_vacuumed == before  # retention 0: the removed small files are deleted
    assert len(_stored_files(lake, PREDICTIONS)) == 1  # only the compacted file is left
    assert result.version_after > result.version_before and result.checkpoint_version is not None
    assert _sorted_rows(lake) == rows  # the same rows, none lost or doubled
    # The app transactions survive the rewrite: a replayed batch is still skipped.
    replay = sample_predictions(["landing/5-0.jpg"], 5)
    assert lake.append_arrow(replay, PREDICTIONS, txn=Txn("q", 5)) is False
    _append_batches(lake, range(12, 13))
    assert lake.read_arrow(PREDICTIONS).num_rows == 26
    again = lake.maintain(PREDICTIONS, NOW_POLICY)
    assert again.files_after == 1 and again.files_compacted >= 2


def test_a_checkpoint_before_the_vacuum_leaves_no_removed_file_behind(tmp_path: Path) -> None:
    """Vacuum finds removed files in the log's checkpoint, which lists them for
    delta.deletedFileRetentionDuration. Equal to the vacuum retention, a checkpoint written
    after the files' retention ran out but before the next maintenance pass (the stream's
    appends write one every delta.checkpointInterval commits) stopped listing them, and no
    vacuum ever deleted them: the soak's 247 files left on storage."""
    from deltalake import DeltaTable

    lake = DeltaRsLake(str(tmp_path / "lake"), table_properties=NOW_POLICY.table_properties())
    _append_batches(lake, range(4))
    small = _stored_files(lake, PREDICTIONS)
    # A pass whose vacuum keeps the removed files (say, not an hour old yet)...
    first = lake.maintain(PREDICTIONS, dataclasses.replace(NOW_POLICY, vacuum_retention_hours=1))
    assert first.files_compacted == 4 and first.files_vacuumed == 0
    # ...then, their retention (0 h) run out, the stream appends and checkpoints...
    _append_batches(lake, range(4, 5))
    DeltaTable(lake.path(PREDICTIONS)).create_checkpoint()
    # ...and the next pass deletes every removed file all the same.
    lake.maintain(PREDICTIONS, NOW_POLICY)
    assert not small & _stored_files(lake, PREDICTIONS)
    assert (
        len(_stored_files(lake, PREDICTIONS)) == 1 and lake.read_arrow(PREDICTIONS).num_rows == 10
    )


def test_the_log_must_outlast_the_removed_files_listing(make_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError, match=r"log_retention_hours' must be at least"):
        make_config(
            FRUITS__MAINTENANCE__VACUUM_RETENTION_HOURS="1",
            FRUITS__MAINTENANCE__LOG_RETENTION_HOURS="1",
        )
    config = make_config(
        FRUITS__MAINTENANCE__VACUUM_RETENTION_HOURS="1",
        FRUITS__MAINTENANCE__LOG_RETENTION_HOURS="25",
    )
    assert config.maintenance.log_retention_hours == 25


def test_the_outbox_publishes_each_row_once_across_compaction_and_vacuum(
    lake: Lake, tmp_path: Path
) -> None:
    hub = FakeHub()
    publisher = publisher_for(tmp_path, hub, lake=lake)  # type: ignore[arg-type]
    _append_batches(lake, range(6))
    assert publisher.publish_pending().published == 12
    cursor = publisher.publish_pending().cursor
    _append_batches(lake, range(6, 12))  # not published yet (say, Event Hubs is down)
    stored = _stored_files(lake, PREDICTIONS)  # the 6 published files and the 6 others
    keep = dataclasses.replace(NOW_POLICY, keep_from_version=cursor + 1)

    result = lake.maintain(PREDICTIONS, keep)

    # Compacted into one file, but the unpublished batches' removed files stay on storage,
    # however short the configured retention: the outbox reads them by version.
    assert result.files_after == 1 and result.files_compacted == len(stored)
    assert result.files_vacuumed == 0 and result.vacuum_retention_hours >= 1
    assert stored < _stored_files(lake, PREDICTIONS)
    assert publisher.publish_pending().published == 12
    assert publisher.publish_pending().published == 0  # the compaction's rows are not new
    ids = hub.event_ids()
    assert len(ids) == len(set(ids)) == 24  # every row once: no duplicate, none lost

    # Everything published: now the removed files go, and nothing is published again.
    head = lake.version(PREDICTIONS)
    result = lake.maintain(PREDICTIONS, dataclasses.replace(NOW_POLICY, keep_from_version=head + 1))
    assert result.files_vacuumed == len(stored) and len(_stored_files(lake, PREDICTIONS)) == 1
    _append_batches(lake, range(12, 13))
    assert publisher.publish_pending().published == 2
    assert len(hub.event_ids()) == len(set(hub.event_ids())) == 26


def test_appends_keep_committing_while_maintenance_runs(lake: Lake) -> None:
    _append_batches(lake, range(3))
    errors: list[BaseException] = []
    passes = 0
    stop = threading.Event()

    def maintain() -> None:
        nonlocal passes
        try:
            while not stop.is_set():
                lake.maintain(PREDICTIONS, NOW_POLICY)
                passes += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=maintain)
    thread.start()
    try:
        _append_batches(lake, range(3, 23))  # each asserts that its append committed
    finally:
        stop.set()
        thread.join()
    assert errors == [] and passes >= 1
    rows = lake.read_arrow(PREDICTIONS)
    paths = rows.column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 46
    assert sorted(set(rows.column("batch_id").to_pylist())) == list(range(23))


def test_maintain_lake_maintains_every_table_and_protects_the_outbox(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_config(tmp_path, FRUITS__EVENTHUB__ENABLED="true")
    lake = DeltaRsLake(config.path("lake"))
    _append_batches(lake, range(2))
    # No cursor yet: a publisher starting now starts at the head (or later), nothing older.
    assert maintenance_policy(config, lake, PREDICTIONS).keep_from_version == 3
    cursor = publisher_for(tmp_path, FakeHub(), lake=lake).publish_pending().cursor
    _append_batches(lake, range(2, 4))
    assert maintenance_policy(config, lake, PREDICTIONS).keep_from_version == cursor + 1
    results = {r.table: r for r in maintain_lake(config, lake=lake)}
    assert set(results) == {"features", "predictions", "quarantine", "eventhub_outbox"}
    assert results["features"].version_before == -1  # not created: nothing done
    assert results["predictions"].files_after == 1
    assert results["predictions"].files_vacuumed == 0  # 168 h, and the outbox's own floor
    with pytest.raises(ValueError, match="no table 'nope'"):
        maintain_lake(config, lake=lake, tables=["nope"])


def test_fruits_maintain_prints_a_json_summary_and_sets_the_table_properties(
    make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from fruits.cli import main

    config = make_config(tmp_path)
    lake = DeltaRsLake(config.path("lake"))
    _append_batches(lake, range(5))
    for name, value in {
        "FRUITS_ROOT": str(tmp_path),
        "FRUITS_WEIGHTS": config.featurizer.weights,
        "FRUITS__MAINTENANCE__VACUUM_RETENTION_HOURS": "0",
        "FRUITS__MAINTENANCE__LOG_RETENTION_HOURS": "48",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["maintain", "--table", "predictions"]) == 0
    out = capsys.readouterr()
    (summary,) = json.loads(out.out.splitlines()[-1])["tables"]
    assert summary["table"] == "predictions"
    assert (summary["files_before"], summary["files_after"], summary["files_vacuumed"]) == (5, 1, 5)
    assert summary["properties_set"]["delta.logRetentionDuration"] == "interval 48 hours"
    assert "predictions: files 5 -> 1" in out.err
    configuration = lake._table(PREDICTIONS).metadata().configuration
    assert configuration["delta.checkpointInterval"] == "100"
    assert main(["maintain", "--table", "predictions"]) == 0  # properties already set
    again = json.loads(capsys.readouterr().out.splitlines()[-1])["tables"][0]
    assert again["properties_set"] == {} and again["files_compacted"] == 0


def _orphan(lake: Lake, table: str, *, hours_old: float) -> Path:
    """A data file in the table's folder that no commit references (a crashed writer's)."""
    import pyarrow.parquet as pq

    path = Path(lake.path(table)) / f"part-00000-orphan-{hours_old:g}h.snappy.parquet"
    pq.write_table(sample_predictions(["crashed/writer.jpg"], 99), path)
    stamp = time.time() - hours_old * 3600
    os.utime(path, (stamp, stamp))
    return path


def test_a_full_vacuum_deletes_old_orphaned_files_and_keeps_new_and_live_ones(lake: Lake) -> None:
    _append_batches(lake, range(3))
    # Older than a week: Spark's FULL vacuum (RETAIN 1 HOURS) kept a 2-hour-old orphan here.
    old, new = _orphan(lake, PREDICTIONS, hours_old=200), _orphan(lake, PREDICTIONS, hours_old=0)
    rows = _sorted_rows(lake)
    lite = lake.maintain(PREDICTIONS, NOW_POLICY)  # most passes: tombstones only
    assert old.exists() and new.exists() and not lite.full_vacuum
    live = _stored_files(lake, PREDICTIONS) - {old.name, new.name}

    full = lake.maintain(PREDICTIONS, dataclasses.replace(NOW_POLICY, full_vacuum=True))

    assert full.full_vacuum and full.files_vacuumed >= 1
    assert not old.exists()  # no log entry references it, and it is old
    assert new.exists()  # it may be a commit in progress: kept
    assert _stored_files(lake, PREDICTIONS) == live | {new.name}
    assert _sorted_rows(lake) == rows


def test_every_nth_maintenance_pass_of_a_process_is_a_full_vacuum(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    lake = DeltaRsLake(str(tmp_path / "lake"))
    _append_batches(lake, range(2))
    config = make_config(tmp_path, FRUITS__MAINTENANCE__FULL_VACUUM_EVERY="0")
    orphan = _orphan(lake, PREDICTIONS, hours_old=200)  # past the 168 h retention
    maintain_lake(config, lake=lake, tables=[PREDICTIONS])  # 0: never
    assert orphan.exists()
    config = make_config(tmp_path, FRUITS__MAINTENANCE__FULL_VACUUM_EVERY="3")
    (result,) = maintain_lake(config, lake=lake, tables=[PREDICTIONS])  # `fruits maintain`
    assert result.full_vacuum and not orphan.exists()
    worker = BackgroundMaintenance(config, lake=lake)  # the stream: passes 1, 4, 7, ...
    fulls = []
    for _ in range(4):
        worker._run_once()
        fulls.append({r.table: r for r in worker.last}[PREDICTIONS].full_vacuum)
    assert fulls == [True, False, False, True] and worker.failures == 0


@pytest.mark.spark
def test_on_databricks_the_spark_writer_leaves_checkpoints_to_delta(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Databricks' Delta is not the open-source build: no call to its DeltaLog class there,
    its own checkpoints every delta.checkpointInterval commits instead."""
    lake = SparkDeltaLake(str(tmp_path / "lake"), spark)
    _append_batches(lake, range(3))
    log = Path(lake.path(PREDICTIONS)) / "_delta_log"
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    assert lake._checkpoint(PREDICTIONS, clean_logs=True) == (None, False)
    assert not list(log.glob("*.checkpoint*.parquet"))  # nothing written through the JVM
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION")
    head = lake.version(PREDICTIONS)
    assert lake._checkpoint(PREDICTIONS, clean_logs=True) == (head, False)  # here: DeltaLog
    assert list(log.glob(f"{head:020d}.checkpoint*.parquet"))


def test_bad_maintenance_config_fails_with_one_line(make_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError, match=r"maintenance\.every_batches"):
        make_config(FRUITS__MAINTENANCE__EVERY_BATCHES="0")


# --- the stream's maintenance thread ----------------------------------------------------------


@pytest.fixture
def maintenance(stream_config: Config) -> Iterator[BackgroundMaintenance]:
    """The stream's background maintenance, every 2 batches, vacuuming at once."""
    settings = dataclasses.replace(
        stream_config.maintenance, every_batches=2, every_minutes=60, vacuum_retention_hours=0
    )
    worker = BackgroundMaintenance(dataclasses.replace(stream_config, maintenance=settings))
    worker.start()
    yield worker
    worker.close()


@pytest.fixture
def on_batch(maintenance: BackgroundMaintenance) -> Any:
    """memory_query's hook: the maintenance counter, as run_stream wires it."""
    return maintenance.after_batch


@pytest.mark.spark
def test_the_streams_maintenance_runs_every_two_batches_and_the_tables_stay_right(
    memory_query: Any, stream_config: Config, maintenance: BackgroundMaintenance
) -> None:
    feed, query, step = memory_query
    photos = real_photos("Test", "Kiwi", 5)
    for photo in photos[:4]:
        feed.add([(f"mem://Kiwi/{photo.name}", photo.read_bytes(), dt.datetime.now(dt.UTC))])
        query.processAllAvailable()
    # A hang guard, not a speed check: a pass of Spark maintenance took 123 s on a loaded CI.
    assert maintenance.wait_for_runs(2, timeout_s=600)
    assert maintenance.failures == 0
    lake = DeltaRsLake(stream_config.path("lake"))
    last = {r.table: r for r in maintenance.last}
    assert last[PREDICTIONS].files_after == 1 and last[PREDICTIONS].files_compacted >= 2
    assert len(_stored_files(lake, PREDICTIONS)) == 1
    # The stream goes on after maintenance: a new batch, and nothing replayed twice.
    photo = photos[4]
    feed.add([(f"mem://Kiwi/{photo.name}", photo.read_bytes(), dt.datetime.now(dt.UTC))])
    query.processAllAvailable()
    paths = lake.read_arrow(PREDICTIONS).column("path").to_pylist()
    assert sorted(paths) == sorted(f"mem://Kiwi/{p.name}" for p in photos)
    assert query.isActive and not any(o.replayed for o in step.outcomes)


# --- bounded tables: the outbox cursor, `fruits status` ---------------------------------------


def test_the_outbox_cursor_stays_one_row_in_one_file(lake: Lake, tmp_path: Path) -> None:
    from fruits.sinks.eventhubs import outbox_cursor
    from fruits.sinks.tables import EVENTHUB_OUTBOX, SCHEMAS

    _append_batches(lake, range(2))
    published = lake.version(PREDICTIONS)
    # A table written by an older release: a row per published chunk; the cursor is the largest.
    old = pa.table(
        {
            "app_id": ["eventhub/predictions"] * 2 + ["eventhub/other"],
            "predictions_version": [published - 1, published, 7],
            "events": [1, 1, 1],
            "published_at": [None] * 3,
        }
    ).cast(SCHEMAS[EVENTHUB_OUTBOX])
    lake.append_arrow(old, EVENTHUB_OUTBOX)
    publisher = publisher_for(tmp_path, FakeHub(), lake=lake)  # type: ignore[arg-type]
    assert outbox_cursor(lake, publisher.app_id) == published
    for batch in range(2, 12):  # ten passes, each publishing one more batch
        _append_batches(lake, range(batch, batch + 1))
        assert publisher.publish_pending().published == 2
    rows = lake.read_arrow(EVENTHUB_OUTBOX).sort_by("app_id").to_pylist()
    head = lake.version(PREDICTIONS)
    assert [(r["app_id"], r["predictions_version"]) for r in rows] == [
        ("eventhub/other", 7),  # another hub's cursor is kept
        ("eventhub/predictions", head),
    ]
    assert lake.maintain(EVENTHUB_OUTBOX, NOW_POLICY).files_after == 1
    assert len(_stored_files(lake, EVENTHUB_OUTBOX)) == 1


def _aged(rows: pa.Table, when: dt.datetime) -> pa.Table:
    index = rows.schema.get_field_index("predicted_at")
    times = pa.array([when] * rows.num_rows, rows.schema.field(index).type)
    return rows.set_column(index, rows.schema.field(index), times)


def test_status_reads_only_the_last_hours_files(
    delta_writer: str, make_config: Callable[..., Config], tmp_path: Path, request: Any
) -> None:
    from fruits.observe.status import collect_status, format_status
    from fruits.sinks.delta import open_lake

    if delta_writer == "spark":
        request.getfixturevalue("spark")  # the session the Spark writer's lake takes
    config = make_config(tmp_path, FRUITS__SPARK__DELTA_WRITER=delta_writer)
    lake = open_lake(config)
    now = dt.datetime.now(dt.UTC)
    for batch in range(10):  # three days old, a minute apart, one file (or more) per batch
        rows = sample_predictions([f"old/{batch}-{i}.jpg" for i in range(2)], batch)
        when = now - dt.timedelta(days=3) + dt.timedelta(minutes=batch)
        lake.append_arrow(_aged(rows, when), PREDICTIONS, txn=Txn("q", batch))
    quiet = collect_status(config)  # no prediction in the last hour: the newest still show
    assert (quiet["predictions_rows"], quiet["recent_predictions"], quiet["last_batch_id"]) == (
        20, 0, 9,
    )  # fmt: skip
    assert sorted(r["path"] for r in quiet["last_predictions"]) == ["old/9-0.jpg", "old/9-1.jpg"]
    for batch in (10, 11):
        rows = sample_predictions([f"new/{batch}-{i}.jpg" for i in range(2)], batch)
        lake.append_arrow(
            _aged(rows, now - dt.timedelta(minutes=5)), PREDICTIONS, txn=Txn("q", batch)
        )

    status = collect_status(config)

    assert (status["predictions_rows"], status["quarantine_rows"]) == (24, 0)
    assert (status["recent_predictions"], status["recent_distinct_paths"]) == (4, 4)
    assert (status["latency_rows"], status["last_batch_id"]) == (4, 11)
    assert {r["path"] for r in status["last_predictions"]} == {
        f"new/{b}-{i}.jpg" for b in (10, 11) for i in range(2)
    }
    assert "last 60 min: 4 (4 distinct paths, 0 unknown)" in format_status(status)
    if delta_writer == "deltars":  # the files that status opened: only the recent two
        assert (quiet["predictions_files_read"], status["predictions_files_read"]) == (1, 2)
        assert lake.files_to_read(PREDICTIONS, ("predicted_at", now - dt.timedelta(days=4))) == 12


def test_maintenance_and_the_outbox_on_blob_storage(azurite: Any, tmp_path: Path) -> None:
    """The same on ``az://`` (Azurite): the outbox reads commit files through delta-rs' own
    object store, and maintenance compacts, vacuums and checkpoints there."""
    import uuid

    from fruits.config import load_config
    from fruits.sinks.delta import open_lake

    from .conftest import PROJECT, WEIGHTS

    config = load_config(
        PROJECT / "conf" / "azurite.yaml",
        environ={
            "FRUITS_ROOT": str(tmp_path),
            "FRUITS_WEIGHTS": str(WEIGHTS),
            "FRUITS__PATHS__LAKE": f"az://lake-{uuid.uuid4().hex[:12]}/fruits",
        },
    )
    lake = open_lake(config)
    hub = FakeHub()
    publisher = publisher_for(tmp_path, hub, lake=lake)  # type: ignore[arg-type]
    _append_batches(lake, range(4))
    cursor = publisher.publish_pending().cursor
    _append_batches(lake, range(4, 8))
    keep = dataclasses.replace(NOW_POLICY, keep_from_version=cursor + 1)
    result = lake.maintain(PREDICTIONS, keep)
    assert (result.files_after, result.files_vacuumed, result.checkpoint_version) == (
        1, 0, result.version_after,
    )  # fmt: skip
    assert publisher.publish_pending().published == 8
    done = lake.maintain(PREDICTIONS, NOW_POLICY)
    assert done.files_vacuumed == 8 and done.files_after == 1
    assert len(hub.event_ids()) == len(set(hub.event_ids())) == 16
    assert lake.count(PREDICTIONS) == 16
