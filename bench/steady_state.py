"""A long-running stream's steady state: drops of N photos into one running query.

``fruits bench throughput`` times a ``--once`` pass, which starts a new streaming query after a
short warm-up; a production stream runs one query for days. This starts the query once
(processing-time trigger, as ``fruits stream`` does), then drops N photos at a time, each drop
appearing at once (a hidden folder renamed into the landing, so one drop = one micro-batch),
and prints each drop's trigger time as Spark reports it. The first drops show the JVM's JIT
warm-up; the later ones what the stream sustains.

    python -m bench.steady_state --images ../shared/data/fruits360/Training --drops 10

The last stdout line is JSON, like the other benchmarks. The JVM flags are the config's
(``spark.stream_java_options``; ``FRUITS__SPARK__STREAM_JAVA_OPTIONS`` overrides them).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import bench_config, drop_photos, machine, pick_photos, prepare_model
from fruits.config import Config, load_config
from fruits.console import log

__all__ = ["run_steady_state"]


def run_steady_state(config: Config, *, images: str, drops: int, n: int) -> dict[str, Any]:
    from fruits.model.serving import ServedModel
    from fruits.sources.landing import landing_source
    from fruits.spark import get_spark
    from streaming.job import checkpoint_path, start_query

    root = Path(tempfile.mkdtemp(prefix="fruits-bench-steady-"))
    config = bench_config(config, root, backend=None, image_size=None)
    warm_n = 128
    photos = pick_photos(images, warm_n + drops * n)
    model_from = prepare_model(config, images=images, models=None)
    landing = Path(config.path("landing"))
    served = ServedModel(config, log=log)
    spark = get_spark(config, streaming=True)
    served.refresh()
    source = landing_source(spark, config, checkpoint_path(config))
    query, step = start_query(spark, config, source, served=served, once=False)
    java_options = config.spark.stream_java_options

    def wait_for(rows: int) -> None:
        while sum(o.rows_in for o in step.outcomes) < rows:
            if not query.isActive:
                raise RuntimeError(f"the query stopped: {query.exception()}")
            time.sleep(0.05)

    rows: list[dict[str, Any]] = []
    try:
        _drop_at_once(photos[:warm_n], landing, "warm-up")  # Python workers load the model
        wait_for(warm_n)
        for i in range(drops):
            time.sleep(1.5)  # a quiet trigger or two between drops
            chunk = photos[warm_n + i * n : warm_n + (i + 1) * n]
            _drop_at_once(chunk, landing, f"drop-{i:03d}")
            wait_for(warm_n + (i + 1) * n)
            time.sleep(0.3)  # the progress event follows the batch's commit
            progress = [p for p in query.recentProgress if p["numInputRows"] > 0][-1]
            trigger_ms = progress["durationMs"]["triggerExecution"]
            row = {
                "drop": i,
                "rows": progress["numInputRows"],
                "trigger_ms": trigger_ms,
                "add_batch_ms": progress["durationMs"]["addBatch"],
                "photos_per_s": round(progress["numInputRows"] / trigger_ms * 1000, 1),
            }
            log(f"bench: drop {i}: {row}")
            rows.append(row)
    finally:
        query.stop()
    later = [r["photos_per_s"] for r in rows[len(rows) // 2 :]]
    return {
        "n": n,
        "drops": rows,
        "later_half_photos_per_s": {"min": min(later), "max": max(later)},
        "stream_java_options": java_options,
        "model": model_from,
        "spark_master": config.spark.master,
        **machine(),
    }


def _drop_at_once(photos: list[Path], landing: Path, name: str) -> None:
    """Copy into a hidden folder, then rename it into the landing: one trigger sees them all."""
    stage = landing / f".{name}"
    drop_photos(photos, stage)
    os.rename(stage, landing / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="folder of <Class>/*.jpg photos")
    parser.add_argument("--drops", type=int, default=10)
    parser.add_argument("--n", type=int, default=512, help="photos per drop")
    parser.add_argument("--config", help="YAML file or packaged name (default: as fruits)")
    args = parser.parse_args()
    result = run_steady_state(
        load_config(args.config), images=args.images, drops=args.drops, n=args.n
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
