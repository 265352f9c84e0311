"""``fruits bench latency``: upload-to-Delta latency of a running stream, photos dropped at a
steady rate; optionally a burst (photos/s) and one photo after a quiet spell.

Starts ``fruits stream`` (a child process) on a fresh root whose registry holds a trained model,
warms it up (its first photos start Spark's Python workers and load the model; excluded from
the figures), then drops photos into the landing folder at ``rate`` per second (hidden name +
rename, as ``fruits upload`` does). Latency comes from the prediction rows' own timing columns:
``latency_ms`` = ``predicted_at`` - ``uploaded_at`` (the file's modification time).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._harness import (
    TreeMemory,
    bench_config,
    drop_photo,
    drop_photos,
    machine,
    pick_photos,
    prepare_model,
    stream_environment,
)
from fruits.config import Config
from fruits.console import log
from fruits.features.featurizer import Backend
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.tables import PREDICTIONS

__all__ = ["run_latency"]

WARM_UP_PHOTOS = 4


def run_latency(
    config: Config,
    *,
    images: str,
    rate: float,
    seconds: float,
    burst: int = 0,
    idle_probe_s: float = 0.0,
    backend: Backend | None = None,
    image_size: int | None = None,
    layer: str | None = None,
    models: str | None = None,
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="fruits-bench-latency-"))
    config = bench_config(config, root, backend=backend, image_size=image_size, layer=layer)
    model_from = prepare_model(config, images=images, models=models)
    trickle_n = int(rate * seconds) + 1
    feeder = iter(pick_photos(images, WARM_UP_PHOTOS + trickle_n + burst + 1))
    landing, lake = Path(config.path("landing")), DeltaRsLake(config.path("lake"))
    landing.mkdir(parents=True, exist_ok=True)
    env = stream_environment(config)
    log_path = root / "stream.log"
    with open(log_path, "w") as stream_log:
        stream = subprocess.Popen(
            [sys.executable, "-m", "fruits.cli", "stream", "--config", config.source],
            env=env,
            stdout=stream_log,
            stderr=subprocess.STDOUT,
        )
        try:
            with TreeMemory(stream.pid) as memory:
                warm = drop_photos([next(feeder) for _ in range(WARM_UP_PHOTOS)], landing)
                _rows(lake, warm, timeout=300)
                log(f"bench: warm-up done ({len(warm)} photos, excluded)")
                result = _trickle(lake, landing, feeder, rate=rate, seconds=seconds)
                if burst:
                    result.update(_burst(lake, landing, feeder, burst))
                if idle_probe_s:
                    result.update(_idle_probe(lake, landing, feeder, idle_probe_s))
        finally:
            stream.send_signal(signal.SIGTERM)
            stream.wait(timeout=120)
    return {
        **result,
        "backend": config.featurizer.backend,
        "trigger_interval": config.stream.trigger_interval,
        "peak_rss_mb": round(memory.peak_mb),
        "peak_pss_mb": round(memory.peak_pss_mb),
        "peak_rss_by_process": memory.peak_by_kind,
        "peak_rss_scope": "the stream process + Spark JVM + Python workers (sum of RSS)",
        "warm_up": f"excluded: the first {WARM_UP_PHOTOS} photos (Python workers load the model)",
        "model": model_from,
        "log": str(log_path),
        **machine(),
    }


def _trickle(
    lake: DeltaRsLake, landing: Path, feeder: Any, *, rate: float, seconds: float
) -> dict[str, Any]:
    names: list[str] = []
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        due = start + len(names) / rate
        time.sleep(max(0.0, due - time.monotonic()))
        names.append(drop_photo(next(feeder), landing))
    latency = np.array(_latencies(lake, names, timeout=120))
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "n": len(latency),
        "p50_ms": round(float(np.percentile(latency, 50)), 1),
        "p95_ms": round(float(np.percentile(latency, 95)), 1),
        "max_ms": round(float(latency.max()), 1),
    }


def _burst(lake: DeltaRsLake, landing: Path, feeder: Any, n: int) -> dict[str, Any]:
    dropped_at = time.time()
    names = drop_photos([next(feeder) for _ in range(n)], landing)
    rows = _rows(lake, names, timeout=1800)
    last = max(r["predicted_at"].timestamp() for r in rows)
    return {
        "burst": n,
        "burst_seconds": round(last - dropped_at, 1),
        "burst_photos_per_s": round(n / (last - dropped_at), 2),
        "burst_batches": len({r["batch_id"] for r in rows}),
    }


def _idle_probe(lake: DeltaRsLake, landing: Path, feeder: Any, quiet_s: float) -> dict[str, Any]:
    log(f"bench: {quiet_s:g} s without photos, then one")
    time.sleep(quiet_s)
    (latency,) = _latencies(lake, [drop_photo(next(feeder), landing)], timeout=300)
    return {"after_idle_s": quiet_s, "after_idle_ms": round(latency, 1)}


def _rows(lake: DeltaRsLake, names: list[str], *, timeout: float) -> list[dict[str, Any]]:
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while True:
        rows = [
            r
            for r in lake.read_arrow(PREDICTIONS).to_pylist()
            if r["path"].rsplit("/", 1)[-1] in wanted
        ]
        if len(rows) >= len(wanted):
            return rows
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {len(rows)} of {len(wanted)} predictions in Delta")
        time.sleep(0.2)


def _latencies(lake: DeltaRsLake, names: list[str], *, timeout: float) -> list[float]:
    return [float(r["latency_ms"]) for r in _rows(lake, names, timeout=timeout)]
