"""Upload-to-Delta latency of the running stream, and rows/s for a burst.

Starts ``fruits stream`` on a fresh root (with a copy of an already trained registry), warms it
up (first batch: TF import and model build in the Spark workers; excluded from the figures),
then drops photos into the landing folder at a steady rate (hidden name + rename, as the
uploader does) and/or all at once, and reads the latency from the predictions rows' own timing
columns (``latency_ms`` = ``predicted_at`` - ``uploaded_at``, the file's modification time).

    .venv/bin/python bench/stream_latency.py --images ../shared/data/fruits360/Test \\
        --models fruits-data/models --rate 1 --seconds 60 --burst 500

Last stdout line: JSON with p50_ms, p95_ms, max_ms (trickle) and burst_rows_per_s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from fruits.lake import DeltaRsLake
from fruits.tables import PREDICTIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True, help="folder of <Class>/*.jpg photos")
    parser.add_argument("--models", required=True, help="a trained registry (paths.models)")
    parser.add_argument("--rate", type=float, default=1.0, help="photos per second (trickle)")
    parser.add_argument("--seconds", type=float, default=60.0, help="trickle duration")
    parser.add_argument("--burst", type=int, default=0, help="then drop this many at once")
    parser.add_argument("--config", default="conf/local.yaml")
    args = parser.parse_args()

    photos = sorted(Path(args.images).rglob("*.jpg"))
    root = Path(tempfile.mkdtemp(prefix="fruits-bench-"))
    landing, lake = root / "landing", DeltaRsLake(str(root / "lake"))
    landing.mkdir(parents=True)
    env = {
        **os.environ,
        "FRUITS_ROOT": str(root),
        "FRUITS__PATHS__MODELS": str(Path(args.models).resolve()),
    }
    log_file = open(root / "stream.log", "w")  # noqa: SIM115 - lives as long as the stream
    stream = subprocess.Popen(
        [sys.executable, "-m", "fruits.cli", "stream", "--config", args.config],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        feeder = iter(photos)
        # Warm-up: workers import TF and build InceptionV3 on their first photos.
        warm = [_drop(next(feeder), landing) for _ in range(4)]
        _wait_rows(lake, len(warm), timeout=300)
        print(f"warm-up done: {len(warm)} photos (excluded)", file=sys.stderr)

        trickle: list[str] = []
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            due = start + len(trickle) / args.rate
            time.sleep(max(0.0, due - time.monotonic()))
            trickle.append(_drop(next(feeder), landing))
        _wait_rows(lake, len(warm) + len(trickle), timeout=120)
        rows = lake.read_arrow(PREDICTIONS).to_pylist()
        latency = np.array(
            [r["latency_ms"] for r in rows if r["path"].rsplit("/", 1)[-1] in set(trickle)]
        )
        result: dict[str, object] = {
            "rate_per_s": args.rate,
            "seconds": args.seconds,
            "n": len(latency),
            "p50_ms": round(float(np.percentile(latency, 50)), 1),
            "p95_ms": round(float(np.percentile(latency, 95)), 1),
            "max_ms": round(float(latency.max()), 1),
        }

        if args.burst:
            before = len(rows)
            burst_names = set()
            dropped_at = time.time()
            for _ in range(args.burst):
                burst_names.add(_drop(next(feeder), landing))
            _wait_rows(lake, before + args.burst, timeout=1800)
            rows = lake.read_arrow(PREDICTIONS).to_pylist()
            burst = [r for r in rows if r["path"].rsplit("/", 1)[-1] in burst_names]
            last = max(r["predicted_at"].timestamp() for r in burst)
            result.update(
                burst=args.burst,
                burst_seconds=round(last - dropped_at, 1),
                burst_rows_per_s=round(args.burst / (last - dropped_at), 2),
                burst_batches=len({r["batch_id"] for r in burst}),
            )
    finally:
        stream.send_signal(signal.SIGTERM)
        stream.wait(timeout=60)
        log_file.close()
    result.update(
        cores=os.cpu_count(),
        python=platform.python_version(),
        machine=platform.machine(),
        log=str(root / "stream.log"),
    )
    print(f"command: {' '.join(sys.argv)}", file=sys.stderr)
    print(json.dumps(result))
    shutil.rmtree(root / "landing", ignore_errors=True)


def _drop(photo: Path, landing: Path) -> str:
    """Copy under a hidden name, then rename: the stream never sees a partial file."""
    name = f"{photo.parent.name.replace(' ', '_')}-{uuid.uuid4().hex[:8]}.jpg"
    temporary = landing / f".{name}.tmp"
    shutil.copyfile(photo, temporary)
    os.replace(temporary, landing / name)
    return name


def _wait_rows(lake: DeltaRsLake, n: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while lake.read_arrow(PREDICTIONS, columns=["path"]).num_rows < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {n} predictions")
        time.sleep(0.2)


if __name__ == "__main__":
    main()
