"""``fruits status``: what the tables hold, the last answers, the serving model, recent latency.

It reads the tables only: it is not part of the stream, and works while one runs or none does.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fruits.config import Config
from fruits.model.registry import ModelRegistry
from fruits.sinks.delta import Lake, open_lake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE

__all__ = ["collect_status", "format_status", "recent_rows"]


_PREDICTION_FIELDS = [
    "path",
    "label",
    "confidence",
    "is_unknown",
    "kind",
    "kind_confidence",
    "variety_not_sure",
    "predicted_at",
]
_QUARANTINE_FIELDS = ["path", "reason", "detail", "detected_at"]


def collect_status(
    config: Config, *, window: dt.timedelta = dt.timedelta(hours=1), last: int = 5
) -> dict[str, Any]:
    """Counts, the ``last`` newest predictions and quarantine rows, and what happened in
    ``window``: latency, distinct paths, unknown answers, quarantine reasons.

    It reads the recent rows only, not whole tables that grow by the day: row counts and the
    last batch come from Delta's file statistics, and the rows are read with a lower bound
    on their time, which skips every file written before it (data skipping)."""
    lake = open_lake(config)
    since = dt.datetime.now(dt.UTC) - window
    predictions, predictions_files = recent_rows(
        lake, PREDICTIONS, "predicted_at", since, [*_PREDICTION_FIELDS, "latency_ms"]
    )
    quarantine, _ = recent_rows(lake, QUARANTINE, "detected_at", since, _QUARANTINE_FIELDS)
    recent = predictions.filter(pc.greater_equal(predictions.column("predicted_at"), since))
    recent_bad = quarantine.filter(pc.greater_equal(quarantine.column("detected_at"), since))
    latencies = np.asarray(recent.column("latency_ms").to_pylist() or [], dtype=np.float64)
    batch_ids = [
        b for b in (lake.latest(t, "batch_id") for t in (PREDICTIONS, QUARANTINE)) if b is not None
    ]
    last_at = lake.latest(PREDICTIONS, "predicted_at")
    predicted_paths = set(recent.column("path").to_pylist())
    status = {
        "predictions_rows": lake.count(PREDICTIONS),
        "quarantine_rows": lake.count(QUARANTINE),
        "window_s": int(window.total_seconds()),
        "recent_predictions": recent.num_rows,
        "recent_distinct_paths": len(predicted_paths),
        "recent_distinct_paths_all": len(
            predicted_paths | set(recent_bad.column("path").to_pylist())
        ),
        "recent_unknown": int(pc.sum(recent.column("is_unknown")).as_py() or 0),
        "recent_quarantined": recent_bad.num_rows,
        "recent_quarantine_reasons": dict(Counter(recent_bad.column("reason").to_pylist())),
        "predictions_files_read": predictions_files,
        "last_batch_id": max(batch_ids) if batch_ids else None,
        "last_prediction_at": last_at.isoformat() if last_at else None,
        "model_version": ModelRegistry(config).champion(),
        "latency_rows": len(latencies),
        "latency_p50_ms": _percentile(latencies, 50),
        "latency_p95_ms": _percentile(latencies, 95),
        "latency_max_ms": float(latencies.max()) if len(latencies) else None,
        "last_predictions": _newest(predictions, "predicted_at", _PREDICTION_FIELDS, last),
        "last_quarantined": _newest(quarantine, "detected_at", _QUARANTINE_FIELDS, last),
    }
    if config.eventhub.enabled:  # the outbox lag: predictions not yet published as events
        from fruits.sinks.eventhubs import outbox_id, pending_events

        app_id = outbox_id(config.eventhub.name)
        pending, cursor, _ = pending_events(lake, app_id, backfill=config.eventhub.backfill)
        status["eventhub_pending_events"] = pending
        status["eventhub_published_version"] = cursor
    return status


def recent_rows(
    lake: Lake, table: str, time_column: str, since: dt.datetime, columns: list[str]
) -> tuple[pa.Table, int | None]:
    """The rows of ``table`` from ``since`` on, or, when there are none, from the newest row's
    time on (so the newest answers are shown even after a quiet hour), and how many files that
    read opened (None: the writer does not say)."""
    newest = lake.latest(table, time_column)
    if newest is None:
        return lake.read_arrow(table, columns=columns), 0
    start = min(since, newest)
    rows = lake.read_arrow(table, columns=columns, since=(time_column, start))
    return rows, lake.files_to_read(table, (time_column, start))


def _newest(table: pa.Table, time_column: str, fields: list[str], n: int) -> list[dict[str, Any]]:
    """The ``n`` newest rows, newest first, as JSON-ready dicts (times in ISO 8601)."""
    if n < 1 or not table.num_rows:
        return []
    order = pc.sort_indices(table, sort_keys=[(time_column, "descending"), ("path", "ascending")])
    rows = table.take(order[:n]).select(fields).to_pylist()
    return [
        {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}
        for row in rows
    ]


def format_status(status: dict[str, Any]) -> str:
    latency = (
        f"p50 {status['latency_p50_ms']:.0f} ms, p95 {status['latency_p95_ms']:.0f} ms, "
        f"max {status['latency_max_ms']:.0f} ms over {status['latency_rows']} photos"
        if status["latency_rows"]
        else "no predictions in the window"
    )
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(status["recent_quarantine_reasons"].items()))
    minutes = status["window_s"] // 60
    return "\n".join(
        [
            f"predictions:   {status['predictions_rows']} rows; last {minutes} min: "
            f"{status['recent_predictions']} ({status['recent_distinct_paths']} distinct paths, "
            f"{status['recent_unknown']} unknown)",
            f"quarantine:    {status['quarantine_rows']} rows; last {minutes} min: "
            f"{status['recent_quarantined']}{f' ({reasons})' if reasons else ''}",
            f"last batch:    {status['last_batch_id']} at {status['last_prediction_at']}",
            f"model version: {status['model_version']}",
            f"latency (last {minutes} min): {latency}",
            *(
                [f"event hubs:    {status['eventhub_pending_events']} events wait in the outbox"]
                if "eventhub_pending_events" in status
                else []
            ),
            *_answers(status),
        ]
    )


def _answers(status: dict[str, Any]) -> list[str]:
    lines = []
    if status["last_predictions"]:
        lines.append("last predictions (newest first):")
        for row in status["last_predictions"]:
            lines.append(f"  {row['predicted_at'][:19]}  {spoken_answer(row)}  {row['path']}")
    if status["last_quarantined"]:
        lines.append("last quarantined (newest first):")
        for row in status["last_quarantined"]:
            lines.append(
                f"  {row['detected_at'][:19]}  {row['reason']}: {row['detail']}  {row['path']}"
            )
    return lines


def spoken_answer(row: dict[str, Any]) -> str:
    """A prediction row as the app says it: the variety, "a <kind>, variety not sure", or
    "unknown" (each with its confidence and, when not sure, the best guess)."""
    confidence = row.get("confidence") or 0.0
    if row.get("is_unknown"):
        return f"unknown (best guess {row['label']}, confidence {confidence:.2f})"
    if row.get("variety_not_sure") and row.get("kind"):
        kind_confidence = row.get("kind_confidence") or 0.0
        return (
            f"a {row['kind']}, variety not sure (kind confidence {kind_confidence:.2f}; "
            f"best guess {row['label']}, {confidence:.2f})"
        )
    return f"{row['label']}, confidence {confidence:.2f}"


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None
