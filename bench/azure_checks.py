"""End-to-end checks of the Blob landing against a running Azurite (make azurite-start).

For each discovery mode, on fresh containers and a fresh root: ``fruits upload`` N Test photos
to the landing container, ``fruits stream --once --config conf/azurite.yaml``, count the rows in
the Delta table on Azurite, then run the stream again and count again. In notification mode the
stream first starts on the empty landing (its initial listing), then the photos are uploaded
and one BlobCreated message per photo is put on the queue, as Event Grid would: the second run
finds them through the queue only (no backfill listing).

    .venv/bin/python bench/azure_checks.py --images ../shared/data/fruits360/Test --n 300 \\
        --models /path/to/root/of/a/trained/model

Last stdout line: JSON with, per mode, rows after the first run, after the re-run, distinct
paths, queue messages left, and the wall time of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from fruits.azure import AzureStorage, BlobLocation
from fruits.config import load_config
from fruits.sinks.delta import open_lake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE
from fruits.sources.events import blob_created_message
from fruits.sources.names import NameFilter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True, help="folder of <Class>/*.jpg photos")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument(
        "--models", required=True, help="a root whose mlflow.db holds a champion model"
    )
    args = parser.parse_args()
    # Spread over the classes, named <Class>/<file> in the landing.
    photos = sorted(Path(args.images).rglob("*.jpg"))
    step = max(1, len(photos) // args.n)
    chosen = photos[::step][: args.n]
    staging = Path(tempfile.mkdtemp(prefix="fruits-azure-photos-"))
    for photo in chosen:
        target = staging / photo.parent.name / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(photo.read_bytes())

    results = {mode: check(mode, staging, args) for mode in ("listing", "notification")}
    print(json.dumps({"n": len(chosen), "cores": os.cpu_count(), **results}))


def check(mode: str, staging: Path, args: argparse.Namespace) -> dict[str, object]:
    suffix = uuid.uuid4().hex[:10]
    root = Path(tempfile.mkdtemp(prefix=f"fruits-azure-{mode}-"))
    env = {
        **os.environ,
        "FRUITS_ROOT": str(root),
        "FRUITS__MLFLOW__TRACKING_URI": f"sqlite:///{Path(args.models).resolve()}/mlflow.db",
        "FRUITS__PATHS__LANDING": f"az://landing-{suffix}/photos",
        "FRUITS__PATHS__LAKE": f"az://lake-{suffix}/fruits",
        "FRUITS__STREAM__QUEUE": f"events-{suffix}",
        "FRUITS__STREAM__DISCOVERY": mode,
        "FRUITS__STREAM__BACKFILL_INTERVAL": "null",
    }
    config = load_config("azurite", environ=env)
    timings: dict[str, float] = {}

    def fruits(name: str, *command: str) -> dict[str, object]:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "fruits.cli", *command, "--config", "azurite"],
            env=env,
            capture_output=True,
            text=True,
        )
        timings[name] = round(time.perf_counter() - started, 1)
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    if mode == "notification":
        fruits("start_on_empty_landing", "stream", "--once")
    uploaded = fruits("upload", "upload", str(staging))
    if mode == "notification":
        storage = AzureStorage(config.azure)
        location = BlobLocation.parse(config.path("landing"))
        queue = storage.queue(config.stream.queue, create=True)
        for blob in storage.list_blobs(location, NameFilter(config.images.extensions)):
            queue.send_message(
                blob_created_message(
                    "devstoreaccount1", location.container, blob.name, blob.etag, blob.size
                )
            )
    first = fruits("stream_once", "stream", "--once")
    lake = open_lake(config)
    rows_first = lake.read_arrow(PREDICTIONS).num_rows
    again = fruits("stream_again", "stream", "--once")
    predictions = lake.read_arrow(PREDICTIONS)
    result: dict[str, object] = {
        "uploaded": uploaded["uploaded"],
        "stream_rows_in": first["rows_in"],
        "prediction_rows_after_first_run": rows_first,
        "rerun_rows_in": again["rows_in"],
        "prediction_rows_after_rerun": predictions.num_rows,
        "distinct_paths": len(set(predictions.column("path").to_pylist())),
        "quarantine_rows": lake.read_arrow(QUARANTINE).num_rows,
        "seconds": timings,
    }
    if mode == "notification":
        props = AzureStorage(config.azure).queue(config.stream.queue).get_queue_properties()
        result["queue_messages_left"] = props.approximate_message_count
    print(json.dumps({mode: result}), file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
