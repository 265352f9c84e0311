"""``fruits status``: what the tables hold, the serving model and recent latency."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import numpy as np
import pyarrow.compute as pc

from fruits.config import Config
from fruits.lake import open_lake
from fruits.registry import ModelRegistry
from fruits.tables import PREDICTIONS, QUARANTINE

__all__ = ["collect_status", "format_status"]


def collect_status(
    config: Config, *, window: dt.timedelta = dt.timedelta(hours=1)
) -> dict[str, Any]:
    lake = open_lake(config)
    predictions = lake.read_arrow(
        PREDICTIONS, columns=["path", "batch_id", "predicted_at", "latency_ms", "is_unknown"]
    )
    quarantine = lake.read_arrow(QUARANTINE, columns=["path", "reason", "batch_id"])
    since = dt.datetime.now(dt.UTC) - window
    recent = predictions.filter(pc.greater_equal(predictions.column("predicted_at"), since))
    latencies = np.asarray(recent.column("latency_ms").to_pylist() or [], dtype=np.float64)
    batch_ids = [
        *predictions.column("batch_id").to_pylist(),
        *quarantine.column("batch_id").to_pylist(),
    ]
    last_batch = max(batch_ids) if batch_ids else None
    last_at = None
    if predictions.num_rows:
        last_at = pc.max(predictions.column("predicted_at")).as_py()
    reasons = Counter(quarantine.column("reason").to_pylist())
    predicted_paths = set(predictions.column("path").to_pylist())
    status = {
        "predictions_rows": predictions.num_rows,
        "quarantine_rows": quarantine.num_rows,
        "distinct_paths": len(predicted_paths),
        "distinct_paths_all": len(predicted_paths | set(quarantine.column("path").to_pylist())),
        "unknown_rows": int(pc.sum(predictions.column("is_unknown")).as_py() or 0),
        "quarantine_reasons": dict(reasons),
        "last_batch_id": last_batch,
        "last_prediction_at": last_at.isoformat() if last_at else None,
        "model_version": ModelRegistry(config.path("models")).current_version(),
        "latency_window_s": int(window.total_seconds()),
        "latency_rows": len(latencies),
        "latency_p50_ms": _percentile(latencies, 50),
        "latency_p95_ms": _percentile(latencies, 95),
        "latency_max_ms": float(latencies.max()) if len(latencies) else None,
    }
    if config.eventhub.enabled:  # the outbox lag: predictions not yet published as events
        from fruits.eventhubs import outbox_id, pending_events

        pending, cursor, _ = pending_events(lake, outbox_id(config.eventhub.name))
        status["eventhub_pending_events"] = pending
        status["eventhub_published_version"] = cursor
    return status


def format_status(status: dict[str, Any]) -> str:
    latency = (
        f"p50 {status['latency_p50_ms']:.0f} ms, p95 {status['latency_p95_ms']:.0f} ms, "
        f"max {status['latency_max_ms']:.0f} ms over {status['latency_rows']} photos"
        if status["latency_rows"]
        else "no predictions in the window"
    )
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(status["quarantine_reasons"].items()))
    return "\n".join(
        [
            f"predictions:   {status['predictions_rows']} rows, {status['distinct_paths']} "
            f"distinct paths, {status['unknown_rows']} unknown",
            f"quarantine:    {status['quarantine_rows']} rows{f' ({reasons})' if reasons else ''}",
            f"last batch:    {status['last_batch_id']} at {status['last_prediction_at']}",
            f"model version: {status['model_version']}",
            f"latency (last {status['latency_window_s'] // 60} min): {latency}",
            *(
                [f"event hubs:    {status['eventhub_pending_events']} events wait in the outbox"]
                if "eventhub_pending_events" in status
                else []
            ),
        ]
    )


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None
