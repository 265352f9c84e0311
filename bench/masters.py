"""``fruits bench masters``: ``fruits bench throughput`` on several Spark masters in one run, one
after the other on the same photos and model: what leaving local mode costs.

Each master gets its own process (a process has one SparkContext): ``local[2]``, the standalone
cluster of ``make cluster-start`` (``spark://127.0.0.1:7077``: two workers of one core, the
executors in JVMs of their own, the ONNX export shipped to them through Spark), and with
``--with-ui`` the local stream with the Spark UI off and on (``spark.stream_ui``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._harness import machine
from fruits.console import log

__all__ = ["run_masters"]

_KEPT = (
    "stream_photos_per_s",
    "stream_seconds",
    "stream_wall_seconds",
    "stream_floor_seconds",
    "bare_photos_per_s",
    "ratio",
    "stream_phases_ms",
    "stream_cpu_seconds",
    "peak_pss_mb",  # the driver's process tree: on a cluster, without the executors
)


def run_masters(
    *,
    images: str,
    n: int,
    masters: list[str],
    models: str | None,
    with_ui: bool,
    config: str | None,
) -> dict[str, Any]:
    runs: list[tuple[str, dict[str, str]]] = [
        (master, {"FRUITS__SPARK__MASTER": master, "FRUITS__SPARK__STREAM_UI": "false"})
        for master in masters
    ]
    if with_ui:
        runs.append(
            (f"{masters[0]} + Spark UI", {"FRUITS__SPARK__MASTER": masters[0]})
        )  # the stream's default: UI on
    rows = []
    for name, env in runs:
        args = [sys.executable, "-m", "fruits.cli", "bench", "throughput", "--images", images]
        args += ["--n", str(n)]
        if models:
            args += ["--models", models]
        if config:
            args += ["--config", config]
        log(f"bench throughput on {name}")
        started = time.perf_counter()
        done = subprocess.run(
            args, env={**os.environ, **env}, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench throughput on {name} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "run": name,
                **{key: result.get(key) for key in _KEPT},
                "process_seconds": round(time.perf_counter() - started, 1),
            }
        )
        log(f"{name}: {result['stream_photos_per_s']} photos/s in the stream")
    base = rows[0]["stream_photos_per_s"]
    for row in rows:
        row["vs_first"] = round(row["stream_photos_per_s"] / base, 3) if base else None
    return {"n": n, "images": str(Path(images)), "results": rows, **machine()}
