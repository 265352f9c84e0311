"""Time of one micro-batch's Delta append, per writer, side by side in one run.

    python -m bench.delta_commit [--appends 8] [--rows 10]

Appends ``--rows`` prediction rows ``--appends`` times with an app transaction, as the stream
does, to a fresh table: delta-rs, Spark's writer as configured (one snapshot task per core),
and Spark's writer with Delta's default of 50 snapshot tasks. The first two appends of each
(table creation, JIT warm-up) are left out of the median. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from typing import Any

import pyarrow as pa

from bench._harness import machine
from fruits.config import load_config
from fruits.sinks.delta import Lake, Txn
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.delta_spark import SparkDeltaLake
from fruits.sinks.tables import PREDICTIONS
from fruits.spark import get_spark

NOW = dt.datetime.now(dt.UTC)


def sample_predictions(paths: list[str], batch: int) -> pa.Table:
    """Prediction rows (the table's contract) for ``paths``, as one micro-batch writes them."""
    n = len(paths)
    return pa.table(
        {
            "image_id": [f"id-{p}" for p in paths],
            "path": paths,
            "label": ["Kiwi"] * n,
            "confidence": [0.9] * n,
            "top_k": [[{"label": "Kiwi", "prob": 0.9}]] * n,
            "is_unknown": [False] * n,
            "model_version": [1] * n,
            "uploaded_at": [NOW] * n,
            "discovered_at": [NOW] * n,
            "predicted_at": [NOW] * n,
            "latency_ms": [1.0] * n,
            "batch_id": [batch] * n,
            "kind": ["kiwi"] * n,
            "kind_confidence": [0.9] * n,
            "variety_not_sure": [False] * n,
        }
    )


def _time_appends(lake: Lake, appends: int, rows: int) -> list[float]:
    seconds = []
    for batch in range(appends):
        data = sample_predictions([f"landing/{batch}-{i}.jpg" for i in range(rows)], batch)
        started = time.perf_counter()
        lake.append_arrow(data, PREDICTIONS, txn=Txn("bench", batch))
        seconds.append(round(time.perf_counter() - started, 3))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--appends", type=int, default=8)
    parser.add_argument("--rows", type=int, default=10)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="fruits-bench-delta-")
    config = load_config(environ={"FRUITS_ROOT": root, "FRUITS__SPARK__DELTA_WRITER": "spark"})
    spark = get_spark(config)
    configured = str(spark.conf.get("spark.databricks.delta.snapshotPartitions"))
    runs: dict[str, Any] = {}
    for name, lake, snapshot_tasks in (
        ("delta-rs", DeltaRsLake(f"{root}/rs"), configured),
        ("spark", SparkDeltaLake(f"{root}/spark", spark), configured),
        ("spark, 50 snapshot tasks", SparkDeltaLake(f"{root}/spark50", spark), "50"),
    ):
        spark.conf.set("spark.databricks.delta.snapshotPartitions", snapshot_tasks)
        seconds = _time_appends(lake, args.appends, args.rows)
        runs[name] = {"median_s": statistics.median(seconds[2:]), "seconds": seconds}
    spark.conf.set("spark.databricks.delta.snapshotPartitions", configured)
    print(
        json.dumps(
            {
                "rows_per_append": args.rows,
                "appends": args.appends,
                "snapshot_tasks_configured": configured,
                "runs": runs,
                "command": f"python -m bench.delta_commit --appends {args.appends} "
                f"--rows {args.rows}",
                **machine(),
            }
        )
    )
    spark.stop()


if __name__ == "__main__":
    main()
