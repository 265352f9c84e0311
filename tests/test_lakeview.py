"""The bundle's dashboard (Lakeview .lvdash.json) and SQL alerts, as a deployment reads them.

Databricks cannot run here, so: the resources load through ``databricks-bundles``' models after
the bundle's variable substitution (tests/test_bundle.py's helpers); the dashboard's widgets
encode only fields their dataset's query returns; and every dataset and alert query runs, with
local Spark, on real Delta tables written with the project's Lake API and registered by the
bundle's own job script (dashboards/register_tables.py) under ``spark_catalog.<schema>``, the
stand-in for ``<catalog>.<schema>``. Databricks' ``cloud_files_state`` exists only there: its
call is replaced by a table of the same columns (the files Auto Loader discovered).
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pytest
from databricks.bundles.alerts import Alert, ComparisonOperator
from databricks.bundles.dashboards import Dashboard

from fruits.config import Config, load_config
from fruits.sinks.delta import open_lake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE, SCHEMAS

from .conftest import DATABRICKS_ENV, PROJECT, real_photos
from .test_bundle import SAMPLE, _bundle, _resources, _substitute, _values

pytestmark = pytest.mark.spark

RESOURCES = PROJECT / "resources"
CLOUD_FILES_STATE = re.compile(r"cloud_files_state\('([^']*)'\)")
FIELD = re.compile(r"`([^`]+)`")
GRID_WIDTH = 6  # Lakeview's canvas is six columns wide
ALERTS = {
    "fruits_unknown_share",
    "fruits_quarantine_share",
    "fruits_upload_wait",
    "fruits_stream_stalled",
}
# Each alert's threshold variable, named as `fruits status --check`'s config keys.
THRESHOLDS = {
    "fruits_unknown_share": "max_unknown_share",
    "fruits_quarantine_share": "max_quarantine_share",
    "fruits_upload_wait": "max_upload_wait_s",
    "fruits_stream_stalled": "max_batch_gap_s",
}
# The rows' and discovered files' dates are relative to this, set when the tables are written.
NOW = dt.datetime.now(dt.UTC)


def _deployed(kind: str, target: str, **overrides: str) -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = _substitute(
        _resources(kind), _values(target, **overrides)
    )
    return resources


def _as_typed(node: Any) -> Any:
    """``node`` with each ``double_value`` a number: a bundle variable substituted into a
    numeric field becomes the field's type (the models convert it so)."""
    if isinstance(node, dict):
        return {k: float(v) if k == "double_value" else _as_typed(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_as_typed(v) for v in node]
    return node


def _lvdash() -> dict[str, Any]:
    (dashboard,) = _resources("dashboards").values()
    file = (RESOURCES / dashboard["file_path"]).resolve()
    loaded: dict[str, Any] = json.loads(file.read_text())
    return loaded


def _datasets() -> dict[str, str]:
    return {d["name"]: "".join(d["queryLines"]) for d in _lvdash()["datasets"]}


def _widgets() -> Iterator[dict[str, Any]]:
    for page in _lvdash()["pages"]:
        yield from page["layout"]


def test_the_dashboard_loads_into_the_databricks_bundles_model() -> None:
    for target in ("dev", "prod"):
        dashboards = _deployed("dashboards", target)
        assert set(dashboards) == {"fruits_stream"}
        for name, dashboard in dashboards.items():
            model = Dashboard.from_dict(copy.deepcopy(dashboard))  # type: ignore[arg-type]
            assert model.as_dict() == dashboard, name  # nothing dropped or converted
            # What a deploy needs: the file, the warehouse, where the tables are.
            assert model.display_name
            assert model.warehouse_id == SAMPLE["warehouse_id"]
            assert (model.dataset_catalog, model.dataset_schema) == ("main", "fruits")
            assert str(model.file_path).endswith(".lvdash.json")
            assert (RESOURCES / str(model.file_path)).is_file()
            assert str(model.parent_path).startswith("/Workspace/")
            assert model.embed_credentials is False
    with pytest.raises(ValueError, match="Unexpected field 'warehouse'"):
        Dashboard.from_dict({"display_name": "x", "warehouse": "w"})  # type: ignore[typeddict-unknown-key]


def test_the_alerts_load_into_the_databricks_bundles_model() -> None:
    defaults = {n: v.get("default") for n, v in _bundle()["variables"].items()}
    for target in ("dev", "prod"):
        alerts = _deployed("alerts", target)
        assert set(alerts) == ALERTS
        for name, alert in alerts.items():
            model = Alert.from_dict(copy.deepcopy(alert))  # type: ignore[arg-type]
            assert model.as_dict() == _as_typed(alert), name
            assert model.warehouse_id == SAMPLE["warehouse_id"]
            assert "${" not in str(model.query_text), name
            evaluation = model.evaluation
            assert evaluation.comparison_operator == ComparisonOperator.GREATER_THAN  # type: ignore[union-attr]
            threshold = evaluation.threshold.value.double_value  # type: ignore[union-attr]
            assert threshold == float(defaults[THRESHOLDS[name]]), name
            (subscription,) = evaluation.notification.subscriptions  # type: ignore[union-attr]
            assert subscription.destination_id == SAMPLE["alert_destination_id"]  # type: ignore[union-attr]
            assert model.schedule.quartz_cron_schedule == "0 0/5 * * * ?"  # type: ignore[union-attr]
    # A threshold given at deploy time reaches its alert.
    alert = _deployed("alerts", "prod", max_unknown_share="0.05")["fruits_unknown_share"]
    assert Alert.from_dict(alert).evaluation.threshold.value.double_value == 0.05  # type: ignore[arg-type, union-attr]
    with pytest.raises(ValueError, match="not a valid ComparisonOperator"):
        alert["evaluation"]["comparison_operator"] = "ABOVE"
        Alert.from_dict(alert)  # type: ignore[arg-type]


def test_the_alerts_thresholds_default_to_the_health_checks() -> None:
    from fruits.config import HealthConfig

    variables = _bundle()["variables"]
    health = HealthConfig()
    for name in [*THRESHOLDS.values(), "min_photos"]:
        assert float(variables[name]["default"]) == float(getattr(health, name)), name
    # Both judge the last hour.
    assert health.window == "1 hour"
    for alert in _deployed("alerts", "prod").values():
        assert (
            "INTERVAL 1 HOUR" in alert["query_text"] or "cloud_files_state" in alert["query_text"]
        )


def test_the_waiting_alerts_read_the_streams_own_checkpoint() -> None:
    from streaming.job import checkpoint_path

    config = load_config("databricks", environ=DATABRICKS_ENV)  # catalog main, schema fruits
    for name in ("fruits_upload_wait", "fruits_stream_stalled"):
        text = _deployed("alerts", "prod")[name]["query_text"]
        assert CLOUD_FILES_STATE.findall(text) == [checkpoint_path(config)], name


def test_the_lvdash_json_is_well_formed() -> None:
    dashboard = _lvdash()
    datasets = _datasets()
    assert len(datasets) == len(dashboard["datasets"]), "a dataset name used twice"
    used: set[str] = set()
    names: list[str] = []
    cells: set[tuple[int, int]] = set()
    for item in _widgets():
        widget, position = item["widget"], item["position"]
        names.append(widget["name"])
        # Inside the grid, no two widgets on one cell.
        assert position["x"] + position["width"] <= GRID_WIDTH, widget["name"]
        mine = {
            (x, y)
            for x in range(position["x"], position["x"] + position["width"])
            for y in range(position["y"], position["y"] + position["height"])
        }
        assert not mine & cells, f"{widget['name']} overlaps another widget"
        cells |= mine
        if "queries" not in widget:
            assert widget["multilineTextboxSpec"]["lines"], widget["name"]
            continue
        (query,) = widget["queries"]
        assert query["query"]["datasetName"] in datasets, widget["name"]
        used.add(query["query"]["datasetName"])
        fields = {f["name"] for f in query["query"]["fields"]}
        encoded = set(_encoded(widget["spec"]["encodings"]))
        assert encoded and encoded <= fields, (widget["name"], encoded - fields)
    assert len(names) == len(set(names)), "a widget name used twice"
    assert used == set(datasets), set(datasets) - used  # no dataset left unshown
    kinds = {
        item["widget"]["spec"]["widgetType"] for item in _widgets() if "spec" in item["widget"]
    }
    assert {"counter", "line", "bar", "table"} <= kinds


def _encoded(encodings: Any) -> Iterator[str]:
    """Every ``fieldName`` in a widget's encodings (x, y, y's fields, color, value, columns)."""
    if isinstance(encodings, dict):
        if "fieldName" in encodings:
            yield encodings["fieldName"]
        for value in encodings.values():
            yield from _encoded(value)
    elif isinstance(encodings, list):
        for value in encodings:
            yield from _encoded(value)


# --- the queries, run ------------------------------------------------------------------------


def _register_tables() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "register_tables", PROJECT / "dashboards" / "register_tables.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ago(**delta: float) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


def _found(**delta: float) -> dt.datetime:
    """A discovery time this long before the present: a photo still waiting has waited this
    long when the alert runs, however long the tables took to write."""
    return dt.datetime.now(dt.UTC) - dt.timedelta(**delta)


def _prediction(
    path: str, at: dt.datetime, *, unknown: bool, version: int, latency_ms: float
) -> dict[str, Any]:
    label = "unknown" if unknown else Path(path).parent.name
    return {
        "image_id": f"sha-{path}",
        "path": path,
        "label": label,
        "confidence": 0.31 if unknown else 0.97,
        "top_k": [{"label": label, "prob": 0.97}],
        "is_unknown": unknown,
        "model_version": version,
        "uploaded_at": at - dt.timedelta(milliseconds=latency_ms),
        "discovered_at": at - dt.timedelta(milliseconds=latency_ms / 2),
        "predicted_at": at,
        "latency_ms": latency_ms,
        "batch_id": 0,
        "kind": label.lower(),
        "kind_confidence": 0.97,
        "variety_not_sure": False,
    }


def _quarantined(path: str, at: dt.datetime, reason: str) -> dict[str, Any]:
    return {
        "path": path,
        "image_id": None,
        "reason": reason,
        "detail": "written by the test",
        "size_bytes": 10,
        "uploaded_at": at,
        "detected_at": at,
        "batch_id": 0,
    }


PHOTOS = [str(p) for p in real_photos("Test", "Banana", 10) + real_photos("Test", "Kiwi", 10)]
# The busy stream: answers flowing, one photo stuck for 15 minutes, a photo just discovered.
STUCK, FRESH = PHOTOS[18], PHOTOS[19]


def _busy_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Last hour: 20 answers (8 unknown, versions 1 then 2) of 10 photos and 4 quarantined;
    5 answers three hours ago, 2 two days ago, 1 ten days ago; 1 quarantined 30 hours ago."""
    predictions = [
        _prediction(
            PHOTOS[i % 10],
            _ago(minutes=50 - 2.5 * i),
            unknown=i in (1, 4, 6, 8, 11, 13, 16, 18),
            version=1 if i < 10 else 2,
            latency_ms=50.0 * (i + 1),
        )
        for i in range(20)
    ]
    predictions += [
        _prediction(PHOTOS[10 + i], _ago(hours=3, minutes=i), unknown=False, version=1,
                    latency_ms=500.0)
        for i in range(5)
    ]  # fmt: skip
    predictions += [
        _prediction(PHOTOS[15 + i], _ago(days=2), unknown=False, version=1, latency_ms=500.0)
        for i in range(2)
    ]
    predictions.append(
        _prediction(PHOTOS[17], _ago(days=10), unknown=True, version=1, latency_ms=500.0)
    )
    quarantine = [
        _quarantined("/landing/a.jpg", _ago(minutes=30), "not_an_image"),
        _quarantined("/landing/b.jpg", _ago(minutes=20), "truncated"),
        _quarantined("/landing/d.jpg", _ago(minutes=10), "not_an_image"),
        _quarantined("/landing/e.jpg", _ago(minutes=40), "too_large_bytes"),
        _quarantined("/landing/c.jpg", _ago(hours=30), "empty"),
    ]
    return predictions, quarantine


def _write(config: Config, predictions: list[dict[str, Any]], quarantine: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    lake = open_lake(config)
    if predictions:
        lake.append_arrow(pa.Table.from_pylist(predictions, SCHEMAS[PREDICTIONS]), PREDICTIONS)
    if quarantine:
        lake.append_arrow(pa.Table.from_pylist(quarantine, SCHEMAS[QUARANTINE]), QUARANTINE)
    return lake


@pytest.fixture(scope="module")
def schemas(
    spark: Any, make_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory
):  # type: ignore[no-untyped-def]
    """Three local schemas, registered as the bundle's job registers them: ``busy`` (the rows
    above), ``stalled`` (answers 20 minutes old, all known), ``empty`` (no row written)."""
    global NOW
    NOW = dt.datetime.now(dt.UTC)
    register = _register_tables().register
    done: dict[str, dict[str, str]] = {}
    newest = _ago(minutes=20)
    stalled = [
        _prediction(PHOTOS[i], newest - dt.timedelta(minutes=i), unknown=False, version=2,
                    latency_ms=200.0)
        for i in range(3)
    ]  # fmt: skip
    rows = {"busy": _busy_rows(), "stalled": (stalled, []), "empty": ([], [])}
    for name, (predictions, quarantine) in rows.items():
        schema = f"lakeview_{name}"
        config = make_config()
        _write(config, predictions, quarantine)
        location = tmp_path_factory.mktemp(f"schema-{name}")
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS spark_catalog.{schema} LOCATION '{location}'")
        done[name] = register(spark, "spark_catalog", schema, config.path("lake"))
    yield done
    for name in rows:
        spark.sql(f"DROP SCHEMA IF EXISTS spark_catalog.lakeview_{name} CASCADE")


def test_the_job_script_registers_the_tables_once(
    spark: Any, schemas: dict[str, dict[str, str]]
) -> None:
    assert schemas["busy"] == {PREDICTIONS: "registered", QUARANTINE: "registered"}
    # A path the stream has not written yet gets the contract's table, NOT NULL included.
    assert schemas["stalled"] == {PREDICTIONS: "registered", QUARANTINE: "created"}
    assert schemas["empty"] == {PREDICTIONS: "created", QUARANTINE: "created"}
    created = spark.table("spark_catalog.lakeview_empty.predictions").schema
    assert [f.name for f in created] == SCHEMAS[PREDICTIONS].names
    assert not created["path"].nullable and created["label"].nullable
    assert spark.table("spark_catalog.lakeview_busy.predictions").count() == 28
    # Run again (after a redeploy): left as it is.
    lake = spark.sql("DESCRIBE DETAIL spark_catalog.lakeview_busy.predictions").first()["location"]
    again = _register_tables().register(
        spark, "spark_catalog", "lakeview_busy", str(Path(lake.removeprefix("file:")).parent)
    )
    assert again == {PREDICTIONS: "exists", QUARANTINE: "exists"}


def _dashboard(spark: Any, schema: str) -> dict[str, list[dict[str, Any]]]:
    """Every dataset's rows, its unqualified table names resolved as dataset_catalog and
    dataset_schema resolve them on Databricks."""
    spark.sql(f"USE spark_catalog.lakeview_{schema}")
    try:
        results = {}
        for name, query in _datasets().items():
            frame = spark.sql(query)
            results[name] = [row.asDict() for row in frame.collect()]
            # Every field a widget of this dataset encodes is a column the query returns.
            for item in _widgets():
                for widget_query in item["widget"].get("queries", []):
                    if widget_query["query"]["datasetName"] == name:
                        for field in widget_query["query"]["fields"]:
                            assert set(FIELD.findall(field["expression"])) <= set(frame.columns)
        return results
    finally:
        spark.sql("USE spark_catalog.default")


def test_the_dashboards_queries_show_the_rows_of_the_lake(
    spark: Any, schemas: dict[str, dict[str, str]]
) -> None:
    views = _dashboard(spark, "busy")
    (hour,) = views["last_hour"]
    assert hour["photos"] == 20 and hour["quarantined"] == 4
    assert hour["unknown_share"] == pytest.approx(0.4)
    assert hour["quarantine_share"] == pytest.approx(4 / 24)
    assert hour["model_version"] == 2  # the newest answer's
    assert hour["latency_p95_ms"] == pytest.approx(950.0)
    minutes = views["per_minute"]  # the last six hours
    assert sum(m["photos"] for m in minutes) == 25
    assert all(m["latency_p95_ms"] >= m["latency_p50_ms"] for m in minutes)
    assert sum(m["unknown_share"] * m["photos"] for m in minutes) == pytest.approx(8)
    reasons = {r["reason"]: r["photos"] for r in views["quarantine_reasons"]}
    assert reasons == {"not_an_image": 2, "truncated": 1, "too_large_bytes": 1}  # the last 24 hours
    timeline = views["model_timeline"]  # the last 7 days, per hour and version
    assert sum(t["photos"] for t in timeline) == 27
    assert {t["model_version"] for t in timeline} == {"1", "2"}
    newest = views["newest_answers"]
    assert [list(r) for r in newest[:1]] == [
        ["predicted_at", "path", "label", "confidence", "is_unknown", "model_version"]
    ]
    assert len(newest) == 25 and newest[0]["path"] == PHOTOS[9]
    assert [r["predicted_at"] for r in newest] == sorted(
        (r["predicted_at"] for r in newest), reverse=True
    )

    empty = _dashboard(spark, "empty")
    assert empty["last_hour"][0]["photos"] == 0
    assert all(not rows for name, rows in empty.items() if name != "last_hour")


def _alert_state(
    spark: Any,
    name: str,
    schema: str,
    discovered: list[tuple[str, dt.datetime]],
    **variables: str,
) -> tuple[str, dict[str, Any] | None]:
    """Run alert ``name`` as deployed (with ``variables``) on ``spark_catalog.<schema>``, with
    ``discovered`` (path, discovery time) as Auto Loader's file state; its state as the
    evaluation decides it."""
    deployed = _deployed(
        "alerts", "prod", catalog="spark_catalog", schema=f"lakeview_{schema}", **variables
    )
    alert = Alert.from_dict(deployed[name])  # type: ignore[arg-type]
    files = spark.createDataFrame(
        discovered or [("", NOW)], "path STRING, discovery_time TIMESTAMP"
    )
    if not discovered:
        files = files.limit(0)
    files.createOrReplaceTempView("discovered_files")
    text = CLOUD_FILES_STATE.sub("discovered_files", str(alert.query_text))
    rows = spark.sql(text).collect()
    evaluation = alert.evaluation
    if not rows:
        return str(evaluation.empty_result_state.value), None  # type: ignore[union-attr]
    (row,) = rows
    value = row[evaluation.source.name]  # type: ignore[union-attr]
    assert evaluation.comparison_operator == ComparisonOperator.GREATER_THAN  # type: ignore[union-attr]
    limit = evaluation.threshold.value.double_value  # type: ignore[union-attr]
    return ("TRIGGERED" if value > limit else "OK"), row.asDict()


def test_each_alert_triggers_on_its_unhealthy_state_and_not_on_a_healthy_one(
    spark: Any, schemas: dict[str, dict[str, str]]
) -> None:
    answered = [(p, _ago(minutes=51 - 2.5 * i)) for i, p in enumerate(PHOTOS[:10])]
    busy = [*answered, (STUCK, _found(minutes=15)), (FRESH, _found(seconds=20))]
    # Busy: 40% unknown, 1 in 6 quarantined, a photo unanswered for 15 minutes; the stream
    # answers (only the photo found 20 s ago came after its last answer).
    state, row = _alert_state(spark, "fruits_unknown_share", "busy", busy)
    assert state == "TRIGGERED" and row and row["unknown_share"] == pytest.approx(0.4)
    state, row = _alert_state(spark, "fruits_quarantine_share", "busy", busy)
    assert state == "TRIGGERED" and row and row["quarantine_share"] == pytest.approx(4 / 24)
    state, row = _alert_state(spark, "fruits_upload_wait", "busy", busy)
    assert state == "TRIGGERED" and row and row["waiting"] == 2
    assert row["upload_wait_s"] == pytest.approx(15 * 60, abs=30)
    state, row = _alert_state(spark, "fruits_stream_stalled", "busy", busy)
    assert (
        state == "OK"
        and row
        and row["waiting"] == 1
        and row["batch_gap_s"] == pytest.approx(20, abs=30)
    )

    # Stalled: the last answer 20 minutes ago, a photo found 16 minutes ago still waits (so
    # the stream is behind too); found 2 minutes ago, it is neither yet.
    waiting = [(PHOTOS[i], _ago(minutes=21 + i)) for i in range(3)] + [(FRESH, _found(minutes=16))]
    state, row = _alert_state(spark, "fruits_stream_stalled", "stalled", waiting)
    assert state == "TRIGGERED" and row and row["waiting"] == 1
    assert row["batch_gap_s"] == pytest.approx(16 * 60, abs=30)
    assert _alert_state(spark, "fruits_upload_wait", "stalled", waiting)[0] == "TRIGGERED"
    recent = [*waiting[:3], (FRESH, _found(minutes=2))]
    for name, column in (
        ("fruits_stream_stalled", "batch_gap_s"),
        ("fruits_upload_wait", "upload_wait_s"),
    ):
        state, row = _alert_state(spark, name, "stalled", recent)
        assert state == "OK" and row and row[column] == pytest.approx(2 * 60, abs=30), name
    # Three photos in the hour, fewer than min_photos: the shares are not judged.
    assert _alert_state(spark, "fruits_unknown_share", "stalled", waiting) == ("OK", None)
    assert _alert_state(spark, "fruits_quarantine_share", "stalled", waiting) == ("OK", None)
    # The same busy hour under a threshold set above its share, at deploy time.
    state, row = _alert_state(spark, "fruits_unknown_share", "busy", busy, max_unknown_share="0.5")
    assert state == "OK" and row and row["photos"] == 20

    # Everything answered, or nothing at all: no row, the evaluation's empty state.
    for schema, files in (("stalled", waiting[:3]), ("empty", [])):
        for name in ("fruits_upload_wait", "fruits_stream_stalled"):
            assert _alert_state(spark, name, schema, files) == ("OK", None), (schema, name)
    for name in ("fruits_unknown_share", "fruits_quarantine_share"):
        assert _alert_state(spark, name, "empty", []) == ("OK", None), name
