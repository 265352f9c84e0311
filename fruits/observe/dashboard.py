"""``fruits dashboard``: a local web page over the tables and the registry ``fruits status``
reads, which refreshes itself.

A Starlette application served by uvicorn: the page (``dashboard.html``, ``dashboard.js``,
``dashboard.css``, shipped in this package) polls ``/api/dashboard`` every
``dashboard.refresh_s`` seconds and draws its plots as SVG in the browser (no CDN: it works
offline). The JSON is a dict of named sections (``window``, ``summary``, ``series``,
``quarantine``, ``models``, ``photos``, ``read``), so a panel is added as a section.
``/thumbnail?path=<the photo's URL in the tables>`` answers a small JPEG of a photo decoded by
the project's decoder (HEIC, AVIF, EXIF orientation), read from the landing, else from the
archive where ``stream.clean_source: archive`` moved it; a photo gone or unreadable answers a
placeholder image saying why, and a path outside the landing and the archive is refused.

Read-only: it reads the recent rows through Delta's file statistics
(:func:`fruits.observe.status.recent_rows`), the registry's versions and its ``champion``, and
photos; it never writes a table, the registry or the landing.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import itertools
import os
import socket
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fruits.config import Config, interval_seconds
from fruits.decode import Decoded, ImageLimits, decode_image
from fruits.model.registry import ModelRegistry
from fruits.observe.drift import drift_of
from fruits.observe.status import recent_rows
from fruits.sinks.delta import Lake, open_lake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE
from fruits.sources.stores import FolderStore, LandingStore, ReadFailed, landing_store

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = [
    "Thumbnails",
    "background_dashboard",
    "collect_dashboard",
    "dashboard_app",
    "serve_dashboard",
]

# Read for every row of the window (plots, model timeline, newest photos), in one read: with
# many small files, building delta-rs' dataset of the table costs more than the strings.
_PREDICTION_COLUMNS = [
    "path",
    "label",
    "confidence",
    "is_unknown",
    "kind",
    "variety_not_sure",
    "model_version",
    "predicted_at",
    "latency_ms",
]
_QUARANTINE_COLUMNS = ["path", "reason", "detail", "detected_at"]
# About this many points per plot, whatever the window: a bucket is a whole number of minutes.
_BUCKETS = 120
THUMBNAIL_PX = 160
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_THUMBNAIL_CACHE = 512  # decoded thumbnails kept (about 5 KB each)
_STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


def collect_dashboard(
    config: Config,
    *,
    lake: Lake | None = None,
    registry: ModelRegistry | None = None,
    window: dt.timedelta | None = None,
    now: dt.datetime | None = None,
    photos: int = 12,
    quarantined: int = 10,
) -> dict[str, Any]:
    """Everything the page shows, JSON-ready: per-bucket photos per minute, latency p50/p95 and
    unknown share over ``window`` (default ``dashboard.window_hours``) up to ``now``,
    quarantine reasons and newest rows, the served model versions beside the registry's, and
    the ``photos`` newest answers with their thumbnails' addresses."""
    started = time.perf_counter()
    lake = lake or open_lake(config)
    registry = registry or ModelRegistry(config)
    window = window or dt.timedelta(hours=config.dashboard.window_hours)
    end = now or dt.datetime.now(dt.UTC)
    start = end - window
    bucket_s = 60 * max(1, -(-int(window.total_seconds()) // (60 * _BUCKETS)))
    predictions, predictions_files = recent_rows(
        lake, PREDICTIONS, "predicted_at", start, _PREDICTION_COLUMNS
    )
    bad, quarantine_files = recent_rows(lake, QUARANTINE, "detected_at", start, _QUARANTINE_COLUMNS)
    in_window = _between(predictions, "predicted_at", start, end)
    bad_in_window = _between(bad, "detected_at", start, end)
    champion = registry.champion()
    # recent_rows reads from the newest row's time at the latest: its rows hold the newest
    last_at = pc.max(predictions.column("predicted_at")).as_py() if predictions.num_rows else None
    unknown = int(pc.sum(in_window.column("is_unknown")).as_py() or 0)
    return {
        "window": {
            "hours": window.total_seconds() / 3600,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "bucket_s": bucket_s,
            "refresh_s": config.dashboard.refresh_s,
        },
        "summary": {
            "predictions_rows": lake.count(PREDICTIONS),
            "quarantine_rows": lake.count(QUARANTINE),
            "photos": in_window.num_rows,
            "unknown": unknown,
            "unknown_share": unknown / in_window.num_rows if in_window.num_rows else None,
            "quarantined": bad_in_window.num_rows,
            "last_prediction_at": _iso(last_at),
            "champion": champion,
        },
        "series": _series(in_window, bad_in_window, start, end, bucket_s),
        "quarantine": {
            "reasons": _counts(bad_in_window.column("reason")),
            "newest": _newest(bad, "detected_at", quarantined),
        },
        "models": _models(in_window, registry, champion),
        "drift": _drift(in_window, registry, end, config),
        "photos": [
            {**row, "thumbnail": f"/thumbnail?path={quote(row['path'], safe='')}"}
            for row in _newest(predictions, "predicted_at", photos)
        ],
        "read": {
            "predictions_rows": predictions.num_rows,
            "predictions_files": predictions_files,
            "quarantine_files": quarantine_files,
            "seconds": round(time.perf_counter() - started, 4),
        },
    }


def _drift(
    predictions: pa.Table, registry: ModelRegistry, end: dt.datetime, config: Config
) -> dict[str, Any] | None:
    """The last ``health.window``'s answers against the serving version's validation answers,
    as ``fruits status --check`` judges them (fruits/observe/drift.py), with its thresholds."""
    window = dt.timedelta(seconds=interval_seconds(config.health.window))
    measured = drift_of(_between(predictions, "predicted_at", end - window, end), registry)
    if measured is None:
        return None
    return {
        **measured.as_dict(),
        "window": config.health.window,
        "max_confidence_drift": config.health.max_confidence_drift,
        "max_answer_drift": config.health.max_answer_drift,
    }


def _between(table: pa.Table, column: str, start: dt.datetime, end: dt.datetime) -> pa.Table:
    times = table.column(column)
    return table.filter(pc.and_(pc.greater_equal(times, start), pc.less_equal(times, end)))


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _series(
    predictions: pa.Table, bad: pa.Table, start: dt.datetime, end: dt.datetime, bucket_s: int
) -> dict[str, Any]:
    """Per bucket of ``bucket_s`` from ``start``: photos per minute, latency p50/p95 (ms), the
    unknown share and the photos quarantined; None where a bucket has no photo."""
    origin = (start - _EPOCH) // dt.timedelta(microseconds=1)  # exact: no float rounding
    width = bucket_s * 1_000_000
    n = max(1, -(-int((end - start).total_seconds()) // bucket_s))
    buckets = np.clip((_micros(predictions.column("predicted_at")) - origin) // width, 0, n - 1)
    counts = np.bincount(buckets, minlength=n)
    unknown = np.bincount(
        buckets,
        weights=np.asarray(
            predictions.column("is_unknown").fill_null(False).to_numpy(zero_copy_only=False),
            dtype=np.float64,
        ),
        minlength=n,
    )
    latency = np.asarray(
        predictions.column("latency_ms").to_numpy(zero_copy_only=False), dtype=np.float64
    )
    timed = ~np.isnan(latency)
    p50, p95 = _bucket_percentiles(buckets[timed], latency[timed], n, (0.5, 0.95))
    bad_buckets = np.clip((_micros(bad.column("detected_at")) - origin) // width, 0, n - 1)
    quarantined = np.bincount(bad_buckets, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = unknown / counts
    return {
        "start": [(start + dt.timedelta(seconds=i * bucket_s)).isoformat() for i in range(n)],
        "photos": counts.tolist(),
        "photos_per_minute": _floats(counts / (bucket_s / 60)),
        "latency_p50_ms": _floats(p50),
        "latency_p95_ms": _floats(p95),
        "unknown_share": _floats(share),
        "quarantined": quarantined.tolist(),
    }


def _bucket_percentiles(
    buckets: np.ndarray, values: np.ndarray, n: int, quantiles: tuple[float, ...]
) -> list[np.ndarray]:
    """Each quantile of ``values`` per bucket (linear interpolation, numpy's default), NaN for
    an empty bucket: one sort for all buckets, not one per bucket."""
    order = np.lexsort((values, buckets))
    ordered = values[order]
    counts = np.bincount(buckets, minlength=n)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    filled = counts > 0
    results = []
    for q in quantiles:
        out = np.full(n, np.nan)
        position = (counts[filled] - 1) * q
        low = np.floor(position).astype(np.int64)
        high = np.ceil(position).astype(np.int64)
        below, above = ordered[first[filled] + low], ordered[first[filled] + high]
        out[filled] = below + (above - below) * (position - low)
        results.append(out)
    return results


def _models(predictions: pa.Table, registry: ModelRegistry, champion: int | None) -> dict[str, Any]:
    """Which version served when in the window (runs of consecutive answers by one version,
    so a promotion and a rollback show as the version changing), beside the registry's."""
    segments: list[dict[str, Any]] = []
    served: dict[int, dict[str, Any]] = {}
    if predictions.num_rows:
        ordered = predictions.select(["model_version", "predicted_at"]).sort_by("predicted_at")
        versions = np.asarray(
            ordered.column("model_version").fill_null(-1).to_numpy(zero_copy_only=False)
        )
        micros = _micros(ordered.column("predicted_at"))

        def at(i: int) -> str | None:  # only the segments' ends become datetimes
            return _iso(_EPOCH + dt.timedelta(microseconds=int(micros[i])))

        changes = np.flatnonzero(np.diff(versions)) + 1
        bounds = [0, *changes.tolist(), len(versions)]
        for a, b in itertools.pairwise(bounds):
            version = int(versions[a])
            segments.append(
                {
                    "version": version if version >= 0 else None,
                    "from": at(a),
                    "to": at(b - 1),
                    "photos": b - a,
                }
            )
            entry = served.setdefault(
                version, {"version": segments[-1]["version"], "first": at(a), "photos": 0}
            )
            entry["last"] = at(b - 1)
            entry["photos"] += b - a
    return {
        "champion": champion,
        # A stream flapping between versions would make thousands: the newest runs suffice.
        "segments": segments[-200:],
        "served": sorted(served.values(), key=lambda s: s["first"]),
        "registry": [
            {
                "version": v.version,
                "created_at": _iso(dt.datetime.fromtimestamp(v.created_ms / 1000, dt.UTC))
                if v.created_ms
                else None,
                "aliases": list(v.aliases),
                "classifier": v.tags.get("classifier"),
                "accuracy_test": v.metrics.get("test"),
            }
            for v in registry.versions()
        ],
    }


def _newest(table: pa.Table, time_column: str, n: int) -> list[dict[str, Any]]:
    if n < 1 or not table.num_rows:
        return []
    order = pc.sort_indices(table, sort_keys=[(time_column, "descending"), ("path", "ascending")])
    rows = table.take(order[:n]).to_pylist()
    return [{k: _json_value(v) for k, v in row.items()} for row in rows]


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    if not len(column):
        return {}
    counted = pc.value_counts(column).to_pylist()
    ordered = sorted(counted, key=lambda c: (-c["counts"], str(c["values"])))
    return {str(c["values"]): int(c["counts"]) for c in ordered}


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v), 4) for v in values]


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no NaN
    return value


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else None


# -- thumbnails ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thumbnail:
    body: bytes
    media_type: str
    note: str | None  # why a placeholder was answered; None for the photo itself


class Thumbnails:
    """Small JPEGs of photos the tables name, read through the landing store (a folder or Blob)
    and, for a photo cleaned up since, the archive, decoded by the project's decoder and
    downscaled here; the newest ones are kept in memory, by name and version (a re-upload
    under the same name is decoded again)."""

    def __init__(self, config: Config, *, size: int = THUMBNAIL_PX) -> None:
        self.size = size
        self.limits = ImageLimits(config.images.max_bytes, config.images.max_pixels)
        self.landing = landing_store(config.path("landing"), config.azure)
        self.archive = landing_store(config.path("archive"), config.azure)
        self._cache: OrderedDict[tuple[str, str], Thumbnail] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str) -> Thumbnail:
        name = _name_in(self.landing, url)
        if name is None:
            return _placeholder("refused: not a photo of the landing", self.size)
        relative = name.removeprefix(self.landing.prefix)
        places = [(self.landing, name), (self.archive, f"{self.archive.prefix}{relative}")]
        for store, candidate in places:
            if not _inside(store, candidate):
                return _placeholder("refused: outside the landing and the archive", self.size)
            try:
                thumbnail = self._from(store, candidate)
            except ReadFailed as exc:
                return _placeholder(f"unreadable: {exc}", self.size)
            if thumbnail is not None:
                return thumbnail
        return _placeholder("gone: no longer in the landing nor in the archive", self.size)

    def _from(self, store: LandingStore, name: str) -> Thumbnail | None:
        info = store.info(name)
        if info is None:
            return None
        key = (store.url(name), info.etag)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = store.read(name, info.etag, self.limits.max_bytes + 1)
        if data is None:
            return None  # deleted or rewritten between the two calls
        decoded = decode_image(data, size=self.size, limits=self.limits)
        if isinstance(decoded, Decoded):
            thumbnail = Thumbnail(_jpeg(decoded.pixels), "image/jpeg", None)
        else:
            thumbnail = _placeholder(f"{decoded.reason}: {decoded.detail}", self.size)
        with self._lock:
            self._cache[key] = thumbnail
            while len(self._cache) > _THUMBNAIL_CACHE:
                self._cache.popitem(last=False)
        return thumbnail


def _name_in(store: LandingStore, url: str) -> str | None:
    """The store's name of the file at ``url`` (its ``path`` in the tables), or None when that
    URL is not one of the store's files: another folder, a ``..`` or an empty segment."""
    base = store.url("")
    if not url.startswith(base):
        return None
    name = url[len(base) :]
    if not name.startswith(store.prefix):
        return None
    if any(part in ("", ".", "..") for part in name.split("/")) or "\\" in name or "\0" in name:
        return None
    return name


def _inside(store: LandingStore, name: str) -> bool:
    """A folder's file, symbolic links resolved, is under the folder (a link in the landing to
    another file of the machine is not shown); a blob name is what it says."""
    if not isinstance(store, FolderStore):
        return True
    root = os.path.realpath(store.root)
    return os.path.realpath(os.path.join(root, *name.split("/"))).startswith(root + os.sep)


def _jpeg(pixels: np.ndarray) -> bytes:
    from PIL import Image

    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _placeholder(reason: str, size: int) -> Thumbnail:
    """A grey square saying ``reason``, as an image: the page shows it where the photo was."""
    words, lines, line = reason.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > 22:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    text = "".join(
        f'<text x="50%" y="{40 + 16 * i}" text-anchor="middle">{html.escape(t[:40])}</text>'
        for i, t in enumerate(lines[:6])
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="0 0 {size} {size}" font-family="sans-serif" font-size="12" fill="#444">'
        f'<rect width="100%" height="100%" fill="#e4e4e4"/>{text}</svg>'
    )
    return Thumbnail(svg.encode(), "image/svg+xml", reason)


# -- the web application ---------------------------------------------------------------------


def _resource(name: str) -> str:
    return (resources.files("fruits.observe") / name).read_text(encoding="utf-8")


def dashboard_app(config: Config) -> Starlette:
    """The Starlette application: the page, its script and style, ``/api/dashboard`` and
    ``/thumbnail``; GET only."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    lake = open_lake(config)
    registry = ModelRegistry(config)
    thumbnails = Thumbnails(config)
    page = string.Template(_resource("dashboard.html")).substitute(
        refresh_ms=int(config.dashboard.refresh_s * 1000),
        root=html.escape(config.root),
    )
    static = {name: _resource(name) for name in _STATIC}

    def index(request: Request) -> Response:
        return HTMLResponse(page)

    def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            return PlainTextResponse("not found", status_code=404)
        return Response(static[name], media_type=_STATIC[name])

    def api(request: Request) -> Response:
        return JSONResponse(
            collect_dashboard(config, lake=lake, registry=registry),
            headers={"Cache-Control": "no-store"},
        )

    def thumbnail(request: Request) -> Response:
        path = request.query_params.get("path", "")
        found = thumbnails.get(path)
        headers = {"Cache-Control": "max-age=300"}
        if found.note is not None:
            headers = {"Cache-Control": "no-store", "X-Fruits-Placeholder": found.note[:200]}
        return Response(found.body, media_type=found.media_type, headers=headers)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/static/{name}", asset),
            Route("/api/dashboard", api),
            Route("/thumbnail", thumbnail),
        ]
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _server(config: Config) -> Any:
    import uvicorn

    settings = uvicorn.Config(
        dashboard_app(config), log_level="warning", access_log=False, lifespan="off"
    )
    return uvicorn.Server(settings)


def serve_dashboard(config: Config, *, host: str | None = None, port: int | None = None) -> str:
    """Serve the dashboard in this thread until Ctrl-C (uvicorn's graceful stop); returns its
    URL. Logs the URL once it listens."""
    from fruits.console import log

    sock = _bind(host or config.dashboard.host, config.dashboard.port if port is None else port)
    url = _url(sock)
    server = _server(config)
    log(f"dashboard on {url} (read-only; Ctrl-C stops)")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return url


@contextmanager
def background_dashboard(
    config: Config, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """The dashboard served from a background thread while the block runs (tests, benchmarks):
    ``with background_dashboard(config) as url: ...``; port 0 takes a free one."""
    sock = _bind(host, port)
    server = _server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="dashboard", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.02)
        yield _url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
