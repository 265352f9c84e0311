"""``fruits bench dashboard``: how long ``fruits dashboard`` takes to answer with a day of
predictions in the lake.

A throw-away root gets ``rows`` prediction rows spread over the last 24 hours (a daily rise
and fall of the rate, a latency spread, a few percent unknown, a promotion from v1 to v2 and a
rollback), written as the stream writes them: ``appends`` appends in time order, each a
micro-batch's file and commit; a registry with those two versions; a few quarantine rows; real
photos in the landing for the newest rows' thumbnails. Then, for three layouts (the rows as
appended; compacted by ``fruits maintain``; compacted, then ``maintenance.every_batches``
one-photo appends, what the stream leaves just before its next maintenance pass) and two
windows (the configured one, and the whole day), the real server is started and timed over
HTTP:

* ``api``: ``GET /api/dashboard``, what the page polls (the window's rows read, aggregated);
* ``page``: what a browser's load fetches, one after the other: the HTML, its script and
  style, the JSON, and every thumbnail it names (the first load decodes them, later ones are
  cached).

Each figure is the median and the maximum of ``requests`` timed requests after one untimed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench._harness import machine
from fruits.config import Config
from fruits.console import log
from fruits.observe.dashboard import background_dashboard
from fruits.sinks.delta import open_lake
from fruits.sinks.maintenance import maintain_lake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE, SCHEMAS

__all__ = ["run_dashboard"]

_DAY = dt.timedelta(hours=24)
_LABELS = ("Banana", "Kiwi", "Strawberry", "Pineapple", "Apple Braeburn", "Lemon", "Mango")


def run_dashboard(
    config: Config,
    *,
    images: str,
    rows: int = 100_000,
    appends: int = 1000,
    requests: int = 20,
    keep: bool = False,
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="fruits-bench-dashboard-"))
    config = dataclasses.replace(config, root=str(root))
    try:
        now = dt.datetime.now(dt.UTC)
        photos = _landing(config, Path(images))
        _registry(config)
        started = time.perf_counter()
        _write(config, rows=rows, appends=appends, now=now, photos=photos)
        write_s = time.perf_counter() - started
        log(f"wrote {rows} predictions in {appends} appends in {write_s:.1f} s")
        results = []
        since_maintenance = config.maintenance.every_batches
        for layout in ("appended", "compacted", f"compacted + {since_maintenance} appends"):
            if layout == "compacted":
                started = time.perf_counter()
                maintain_lake(config, tables=[PREDICTIONS, QUARANTINE], full_vacuum=False)
                log(f"compacted in {time.perf_counter() - started:.1f} s")
            elif layout != "appended":
                # What the stream leaves just before its next maintenance pass: the compacted
                # day plus maintenance.every_batches micro-batches of one photo each.
                _write(
                    config,
                    rows=since_maintenance,
                    appends=since_maintenance,
                    now=dt.datetime.now(dt.UTC),
                    photos=photos,
                    span=dt.timedelta(minutes=10),
                )
            for hours in (config.dashboard.window_hours, 24.0):
                windowed = dataclasses.replace(
                    config, dashboard=dataclasses.replace(config.dashboard, window_hours=hours)
                )
                results.append(_measure(windowed, layout, hours, requests))
        _print_table(rows, appends, requests, results)
        return {
            "rows": rows,
            "appends": appends,
            "requests": requests,
            "write_s": round(write_s, 1),
            "results": results,
            "root": str(root) if keep else None,
            **machine(),
        }
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _landing(config: Config, images: Path) -> list[str]:
    """Real photos copied into the landing: the paths the newest rows name."""
    found = sorted(p for p in images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:24]
    if not found:
        raise SystemExit(f"bench dashboard: no .jpg photo under {images}")
    landing = Path(config.path("landing"))
    landing.mkdir(parents=True, exist_ok=True)
    urls = []
    for i, photo in enumerate(found):
        target = landing / f"{i:03d}-{photo.name}"
        shutil.copyfile(photo, target)
        urls.append(f"file:{target}")
    return urls


def _registry(config: Config) -> None:
    """Two versions and ``champion`` in the root's MLflow store, through MLflow's client (the
    dashboard reads versions and aliases; no model files needed)."""
    from mlflow import MlflowClient

    uri = config.mlflow_uri("tracking_uri")  # both named: not the process-wide registry URI
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(config.mlflow.model_name)
    for _ in range(2):
        client.create_model_version(
            config.mlflow.model_name,
            source=str(Path(config.root) / "models"),
            tags={"classifier": "logistic_regression"},
        )
    client.set_registered_model_alias(config.mlflow.model_name, "champion", "1")


def _write(
    config: Config,
    *,
    rows: int,
    appends: int,
    now: dt.datetime,
    photos: list[str],
    span: dt.timedelta = _DAY,
) -> None:
    """``rows`` predictions over the ``span`` before ``now``, in ``appends`` appends."""
    rng = np.random.default_rng(rows + appends)
    # Times over the day with a daily swell peaking 3 hours before now: the default window
    # reads about its busiest hours.
    hours = np.sort(rng.uniform(0, 24, rows * 3))
    keep = rng.uniform(0, 1, hours.size) < 0.5 + 0.4 * np.cos((hours - 21) / 24 * 2 * np.pi)
    hours = np.sort(rng.choice(hours[keep], rows, replace=False))
    predicted = [now - span + span * float(h / 24) for h in hours]
    latency = rng.lognormal(np.log(450), 0.4, rows)
    unknown = rng.uniform(0, 1, rows) < 0.03
    # v1, promoted to v2 at 16 h, rolled back to v1 for the last 2 hours.
    version = np.where((hours >= 16) & (hours < 22), 2, 1)
    labels = rng.choice(len(_LABELS), rows)
    lake = open_lake(config)
    bounds = np.linspace(0, rows, appends + 1).astype(int)
    for batch, (a, b) in enumerate(itertools.pairwise(bounds)):
        if a == b:
            continue
        table = pa.table(
            {
                "image_id": [f"{i:064x}" for i in range(a, b)],
                "path": [
                    photos[i % len(photos)]
                    if rows - i <= len(photos)
                    else f"file:{config.path('landing')}/day/{i:07d}.jpg"
                    for i in range(a, b)
                ],
                "label": [_LABELS[k] for k in labels[a:b]],
                "confidence": rng.uniform(0.5, 1.0, b - a),
                "top_k": [[{"label": _LABELS[k], "prob": 0.9}] for k in labels[a:b]],
                "is_unknown": unknown[a:b],
                "model_version": version[a:b],
                "uploaded_at": [
                    t - dt.timedelta(milliseconds=float(m))
                    for t, m in zip(predicted[a:b], latency[a:b], strict=True)
                ],
                "discovered_at": predicted[a:b],
                "predicted_at": predicted[a:b],
                "latency_ms": latency[a:b],
                "batch_id": [batch] * (b - a),
                "kind": [_LABELS[k].lower() for k in labels[a:b]],
                "kind_confidence": rng.uniform(0.5, 1.0, b - a),
                "variety_not_sure": [False] * (b - a),
            }
        )
        lake.append_arrow(lake.conform(table, PREDICTIONS), PREDICTIONS)
        if batch % 50 == 0:  # now and then an unreadable upload
            bad = pa.Table.from_pylist(
                [
                    {
                        "path": f"file:{config.path('landing')}/bad/{batch}.jpg",
                        "image_id": None,
                        "reason": "truncated" if batch % 100 else "not_an_image",
                        "detail": "synthetic",
                        "size_bytes": 10,
                        "uploaded_at": predicted[a],
                        "detected_at": predicted[a],
                        "batch_id": batch,
                    }
                ],
                schema=SCHEMAS[QUARANTINE],
            )
            lake.append_arrow(bad, QUARANTINE)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        body: bytes = response.read()
        return body


def _measure(config: Config, layout: str, hours: float, requests: int) -> dict[str, Any]:
    lake = open_lake(config)
    versions = {t: lake.version(t) for t in (PREDICTIONS, QUARANTINE)}
    with background_dashboard(config) as url:
        api_s, page_s, first_page_s = [], [], None
        payload: dict[str, Any] = {}
        for i in range(requests + 1):
            started = time.perf_counter()
            body = _get(url + "api/dashboard")
            elapsed = time.perf_counter() - started
            payload = json.loads(body)
            if i:
                api_s.append(elapsed)
        for i in range(requests + 1):
            started = time.perf_counter()
            for part in ("", "static/dashboard.js", "static/dashboard.css", "api/dashboard"):
                body = _get(url + part)
            for photo in json.loads(body)["photos"]:
                _get(url + photo["thumbnail"].lstrip("/"))
            elapsed = time.perf_counter() - started
            if i:
                page_s.append(elapsed)
            else:
                first_page_s = elapsed
    assert versions == {t: lake.version(t) for t in (PREDICTIONS, QUARANTINE)}, "it wrote"
    return {
        "layout": layout,
        "window_hours": hours,
        "rows_read": payload["read"]["predictions_rows"],
        "files_read": payload["read"]["predictions_files"],
        "api_median_ms": round(1000 * statistics.median(api_s), 1),
        "api_max_ms": round(1000 * max(api_s), 1),
        "page_first_ms": round(1000 * (first_page_s or 0.0), 1),
        "page_median_ms": round(1000 * statistics.median(page_s), 1),
        "page_max_ms": round(1000 * max(page_s), 1),
        "json_bytes": len(json.dumps(payload)),
    }


def _print_table(rows: int, appends: int, requests: int, results: list[dict[str, Any]]) -> None:
    print(
        f"fruits dashboard, {rows} predictions over 24 h in {appends} appends; "
        f"median / max of {requests} requests"
    )
    head = ("layout", "window", "rows read", "files", "api ms", "page ms", "first page ms")
    print(" | ".join(head))
    for r in results:
        print(
            f"{r['layout']} | {r['window_hours']:g} h | {r['rows_read']} | {r['files_read']} | "
            f"{r['api_median_ms']} / {r['api_max_ms']} | "
            f"{r['page_median_ms']} / {r['page_max_ms']} | {r['page_first_ms']}"
        )
