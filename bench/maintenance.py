"""What Delta maintenance buys: many small appends, then ``fruits status`` and the outbox's read
before and after one maintenance pass (delta-rs, the embedded default).

    python -m bench.maintenance [--appends 200] [--rows 5] [--old-fraction 0.9]

Appends ``--appends`` micro-batches of ``--rows`` predictions each (one small file each, as the
stream writes them), the first ``--old-fraction`` of them dated two days ago. Times
``collect_status`` (the last hour only) and a whole-table read before and after
``maintain_lake``, with the files each opens. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from bench._harness import machine
from bench.delta_commit import sample_predictions
from fruits.config import load_config
from fruits.observe.status import collect_status
from fruits.sinks.delta import Txn
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.maintenance import maintain_lake
from fruits.sinks.tables import PREDICTIONS


def _dated(rows: pa.Table, when: dt.datetime) -> pa.Table:
    index = rows.schema.get_field_index("predicted_at")
    field = rows.schema.field(index)
    return rows.set_column(index, field, pa.array([when] * rows.num_rows, field.type))


def _median_s(action: Callable[[], object], repeat: int = 5) -> float:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return round(statistics.median(seconds), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--old-fraction", type=float, default=0.9)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="fruits-bench-maintenance-")
    config = load_config(
        environ={"FRUITS_ROOT": root, "FRUITS__MAINTENANCE__VACUUM_RETENTION_HOURS": "0"}
    )
    lake = DeltaRsLake(config.path("lake"))
    now = dt.datetime.now(dt.UTC)
    old = int(args.appends * args.old_fraction)
    started = time.perf_counter()
    for batch in range(args.appends):
        when = now - (dt.timedelta(days=2) if batch < old else dt.timedelta(minutes=10))
        rows = sample_predictions([f"landing/{batch}-{i}.jpg" for i in range(args.rows)], batch)
        lake.append_arrow(_dated(rows, when), PREDICTIONS, txn=Txn("bench", batch))
    appends_s = time.perf_counter() - started
    since = ("predicted_at", now - dt.timedelta(hours=1))

    def measure() -> dict[str, Any]:
        return {
            "files": lake._live_files(PREDICTIONS)[0],
            "status_s": _median_s(lambda: collect_status(config)),
            "status_files_read": lake.files_to_read(PREDICTIONS, since),
            "whole_table_read_s": _median_s(lambda: lake.read_arrow(PREDICTIONS)),
        }

    before = measure()
    started = time.perf_counter()
    results = maintain_lake(config, lake=lake)
    maintain_s = time.perf_counter() - started
    after = measure()
    (predictions,) = [r for r in results if r.table == PREDICTIONS]
    print(
        json.dumps(
            {
                "appends": args.appends,
                "rows_per_append": args.rows,
                "appends_s": round(appends_s, 2),
                "before": before,
                "maintain_s": round(maintain_s, 3),
                "maintain_predictions": predictions.as_dict(),
                "after": after,
                "command": f"python -m bench.maintenance --appends {args.appends} "
                f"--rows {args.rows} --old-fraction {args.old_fraction}",
                **machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
