"""Time one photo through the served model: ``mlflow models serve`` answering POSTs one by one.

Usage (a server already running, e.g.
``mlflow models serve -m models:/fruits@champion --env-manager local -p 5000``)::

    python -m bench.serving --url http://127.0.0.1:5000 --images ../shared/data/fruits360/Test \
        --n 200

Each request is one real photo (base64 in ``dataframe_split``), sent after the previous answer;
prints the client-side latency (request to parsed answer) p50/p95/max, the share answered with
the photo's own class, and the command. The first 5 requests warm up and are not timed.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench._harness import pick_photos

WARM_UP = 5


def post(url: str, photo: bytes) -> dict[str, Any]:
    encoded = base64.b64encode(photo).decode()
    body = {"dataframe_split": {"columns": ["content"], "data": [[encoded]]}}
    request = urllib.request.Request(
        f"{url.rstrip('/')}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, Any] = json.loads(response.read())["predictions"][0]
    return answer


def run(url: str, images: str, n: int) -> dict[str, Any]:
    photos = pick_photos(images, n + WARM_UP)
    for photo in photos[:WARM_UP]:
        post(url, photo.read_bytes())
    seconds, correct = [], 0
    for photo in photos[WARM_UP:]:
        content = photo.read_bytes()
        started = time.perf_counter()
        answer = post(url, content)
        seconds.append(time.perf_counter() - started)
        correct += answer["label"] == photo.parent.name
    ms = np.asarray(seconds) * 1000
    return {
        "photos": len(seconds),
        "latency_p50_ms": round(float(np.percentile(ms, 50)), 1),
        "latency_p95_ms": round(float(np.percentile(ms, 95)), 1),
        "latency_max_ms": round(float(ms.max()), 1),
        "own_class_share": round(correct / len(seconds), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--images", required=True, help="folder of <Class>/*.jpg photos")
    parser.add_argument("--n", type=int, default=200, help="timed photos (default: %(default)s)")
    args = parser.parse_args()
    print(f"command: python -m bench.serving {' '.join(sys.argv[1:])}", file=sys.stderr)
    if not Path(args.images).is_dir():
        parser.error(f"--images {args.images}: not a folder")
    print(json.dumps(run(args.url, args.images, args.n)))


if __name__ == "__main__":
    main()
