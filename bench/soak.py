"""``fruits bench soak``: a running stream fed ``rate`` photos a second for ``minutes``; does
anything grow that should not?

Starts ``fruits stream`` (a child process, the configuration's maintenance policy on) on a fresh
root with a trained model, then drops photos into the landing folder at a steady rate (hidden
name + rename, as ``fruits upload`` does), one in ``bad_every`` a truncated JPEG that must end in
the quarantine. Every ``sample_s`` seconds it samples:

* resident memory (PSS, shared pages split) of the driver (the ``fruits stream`` process), the
  Spark JVM and Spark's Python workers;
* the batches finished since the last sample (from the stream's log lines): count, mean and
  max duration, and the Delta commit time within them;
* per table, the data files of the current Delta version, the Parquet files on disk (removed
  files until a vacuum) and the commit files of ``_delta_log``;
* the checkpoint's size (Spark's logs, the discovery state, the decision journal) and the files
  left in the landing.

At the end it waits for the last photos, stops the stream (SIGTERM), and checks that each
dropped file is in exactly one table: lost and duplicated counts. Writes ``soak.json`` (samples,
trends, checks) and ``soak.png`` (the samples over time). A trend is the least-squares line
through the samples after the warm-up: ``growth`` is its rise over that span, relative to its
value at the start of the span (0.05 = +5%).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._harness import (
    bench_config,
    machine,
    pick_photos,
    prepare_model,
    stream_environment,
    tree_memory,
)
from fruits.config import Config, is_url
from fruits.console import log
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE

__all__ = ["run_soak", "trend"]

_BATCH_LINE = re.compile(
    r"batch (?P<id>\d+): (?P<rows>\d+) in, .* (?P<seconds>[\d.]+) s \(Delta (?P<delta>[\d.]+) s\)"
)
_TABLES = (PREDICTIONS, QUARANTINE)
# Memory may grow this much after the warm-up and still count as flat.
MEMORY_GROWTH_LIMIT = 0.10


def run_soak(
    config: Config,
    *,
    images: str,
    rate: float,
    minutes: float,
    sample_s: float = 30.0,
    warm_up_minutes: float | None = None,
    bad_every: int = 50,
    models: str | None = None,
    out: str | None = None,
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="fruits-bench-soak-"))
    config = bench_config(config, root, backend=None, image_size=None)
    # The lake on this machine's disk, whatever the configuration says, so its files can be
    # counted; the landing as configured (a folder, or az:// for the Blob source and its
    # discovery state), or a fresh one: a Blob landing gets a container of its own.
    paths = {"lake": str(root / "lake")}
    if is_url(config.path("landing")):
        paths["landing"] = f"az://soak-{root.name.rsplit('-', 1)[-1].lower()}/photos"
        paths["archive"] = paths["landing"].replace("/photos", "/archive")
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, **paths))
    child_env = stream_environment(config)
    model_from = prepare_model(config, images=images, models=models)
    landing = _Landing.open(config)
    out_dir = Path(out or root)
    out_dir.mkdir(parents=True, exist_ok=True)
    warm_up_s = 60 * (warm_up_minutes if warm_up_minutes is not None else min(10, minutes / 6))
    log_path = root / "stream.log"
    feeder = _Feeder(pick_photos(images, min(2000, int(rate * minutes * 60) + 10)), landing)
    samples: list[dict[str, Any]] = []
    with open(log_path, "w") as stream_log:
        stream = subprocess.Popen(
            [sys.executable, "-m", "fruits.cli", "stream", "--config", config.source],
            env=child_env,
            stdout=stream_log,
            stderr=subprocess.STDOUT,
        )
        batches = _BatchLog(log_path)
        started = time.monotonic()
        try:
            feeder.start(rate, bad_every)
            log(f"bench: soak for {minutes:g} min at {rate:g} photos/s; samples in {out_dir}")
            while time.monotonic() - started < minutes * 60:
                time.sleep(sample_s)
                if stream.poll() is not None:
                    raise RuntimeError(f"the stream ended (code {stream.returncode}): {log_path}")
                samples.append(
                    _sample(config, stream.pid, batches, landing, time.monotonic() - started)
                )
                _save(out_dir, samples, {})
            feeder.stop()
            accounted = _wait_for_all(config, feeder, timeout=600)
            samples.append(
                _sample(config, stream.pid, batches, landing, time.monotonic() - started)
            )
        finally:
            feeder.stop()
            stream.send_signal(signal.SIGTERM)
            stream.wait(timeout=300)
    result = {
        "rate_per_s": rate,
        "minutes": minutes,
        "sample_s": sample_s,
        "warm_up_minutes": round(warm_up_s / 60, 1),
        **accounted,
        "trends": _trends(samples, warm_up_s),
        "landing": config.path("landing"),
        "discovery": config.stream.discovery,
        "clean_source": config.stream.clean_source,
        "maintenance": _maintenance_policy(config),
        "model": model_from,
        "log": str(log_path),
        **machine(),
    }
    result["checks"] = _checks(result)
    _save(out_dir, samples, result)
    _plot(out_dir / "soak.png", samples, warm_up_s, title=_title(result))
    return {**result, "json": str(out_dir / "soak.json"), "png": str(out_dir / "soak.png")}


class _Landing:
    """Where the soak drops files: a folder (hidden name, then a rename, as ``fruits upload``
    does), or a Blob container (one upload: a blob appears whole)."""

    def __init__(self, folder: Path | None, container: Any = None, prefix: str = "") -> None:
        self._folder = folder
        self._container = container
        self._prefix = prefix

    @classmethod
    def open(cls, config: Config) -> _Landing:
        location = config.path("landing")
        if not is_url(location):
            Path(location).mkdir(parents=True, exist_ok=True)
            return cls(Path(location))
        from fruits.azure import AzureStorage, BlobLocation

        blob = BlobLocation.parse(location)
        container = AzureStorage(config.azure).container(blob.container, create=True)
        return cls(None, container, blob.prefix.rstrip("/"))

    def drop(self, name: str, data: bytes) -> None:
        if self._folder is None:
            self._container.upload_blob(f"{self._prefix}/{name}", data, overwrite=True)
            return
        temporary = self._folder / f".{name}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, self._folder / name)

    def count(self) -> int:
        if self._folder is None:
            return sum(1 for _ in self._container.list_blobs(name_starts_with=f"{self._prefix}/"))
        return sum(1 for p in self._folder.rglob("*") if p.is_file())


class _Feeder:
    """Drops photos at a steady rate from a thread; remembers what it dropped."""

    def __init__(self, photos: list[Path], landing: _Landing) -> None:
        self._photos = [(p.parent.name.replace(" ", "_"), p.read_bytes()) for p in photos]
        self._landing = landing
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.good: list[str] = []
        self.bad: list[str] = []

    def start(self, rate: float, bad_every: int) -> None:
        truncated = self._photos[0][1][:300]

        def feed() -> None:
            start = time.monotonic()
            n = 0
            while not self._stop.is_set():
                due = start + n / rate
                self._stop.wait(max(0.0, due - time.monotonic()))
                if self._stop.is_set():
                    return
                if bad_every and n % bad_every == bad_every - 1:
                    name = f"truncated-{n:07d}.jpg"
                    self._landing.drop(name, truncated)
                    self.bad.append(name)
                else:
                    label, data = self._photos[n % len(self._photos)]
                    name = f"{label}-{n:07d}.jpg"
                    self._landing.drop(name, data)
                    self.good.append(name)
                n += 1

        self._thread = threading.Thread(target=feed, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class _BatchLog:
    """The batches the stream logged since the last call."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0

    def new(self) -> list[dict[str, float]]:
        with open(self._path) as handle:
            handle.seek(self._offset)
            text = handle.read()
        complete = text[: text.rfind("\n") + 1]
        self._offset += len(complete.encode())
        return [
            {
                "rows": int(m["rows"]),
                "seconds": float(m["seconds"]),
                "delta_seconds": float(m["delta"]),
            }
            for m in _BATCH_LINE.finditer(complete)
        ]


def _sample(
    config: Config, pid: int, batches: _BatchLog, landing: _Landing, elapsed: float
) -> dict[str, Any]:
    memory = {"driver": 0.0, "jvm": 0.0, "python_workers": 0.0}
    for process_pid, name, _, pss in tree_memory(pid):
        kind = "driver" if process_pid == pid else "jvm" if name == "java" else "python_workers"
        memory[kind] += pss
    done = batches.new()
    seconds = [b["seconds"] for b in done if b["rows"]]
    delta = [b["delta_seconds"] for b in done if b["rows"]]
    sample: dict[str, Any] = {
        "t_s": round(elapsed, 1),
        "pss_mb": {k: round(v, 1) for k, v in memory.items()},
        "pss_total_mb": round(sum(memory.values()), 1),
        "batches": len(done),
        "rows": sum(b["rows"] for b in done),
        "batch_s_mean": round(float(np.mean(seconds)), 3) if seconds else None,
        "batch_s_max": round(max(seconds), 3) if seconds else None,
        "delta_s_mean": round(float(np.mean(delta)), 3) if delta else None,
        "tables": {table: _table_files(config, table) for table in _TABLES},
        "checkpoint_bytes": _bytes(Path(config.path("checkpoints"))),
        "landing_files": landing.count(),
    }
    return sample


def _table_files(config: Config, table: str) -> dict[str, int]:
    from deltalake import DeltaTable

    folder = Path(config.path("lake")) / table
    if not (folder / "_delta_log").is_dir():
        return {"active": 0, "on_disk": 0, "log_files": 0, "version": -1}
    delta = DeltaTable(str(folder))
    counts = {
        "active": len(delta.file_uris()),
        "on_disk": sum(1 for _ in folder.rglob("*.parquet")),
        "log_files": sum(1 for _ in (folder / "_delta_log").iterdir()),
        "version": int(delta.version()),
    }
    del delta
    return counts


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _wait_for_all(config: Config, feeder: _Feeder, *, timeout: float) -> dict[str, Any]:
    """Wait until every dropped file is in a table; count the lost and the doubled."""
    lake = DeltaRsLake(config.path("lake"))
    dropped = {*feeder.good, *feeder.bad}
    deadline = time.monotonic() + timeout
    while True:
        found = {
            table: [
                p.rsplit("/", 1)[-1]
                for p in lake.read_arrow(table, columns=["path"])["path"].to_pylist()
            ]
            for table in _TABLES
        }
        names = found[PREDICTIONS] + found[QUARANTINE]
        if dropped <= set(names) or time.monotonic() > deadline:
            break
        time.sleep(2)
    return {
        "dropped": len(dropped),
        "dropped_bad": len(feeder.bad),
        "predictions_rows": len(found[PREDICTIONS]),
        "quarantine_rows": len(found[QUARANTINE]),
        "lost": len(dropped - set(names)),
        "duplicated": len(names) - len(set(names)),
        "in_both_tables": len(set(found[PREDICTIONS]) & set(found[QUARANTINE])),
        "bad_in_quarantine": len(set(feeder.bad) & set(found[QUARANTINE])),
    }


def trend(t: list[float], y: list[float]) -> dict[str, float] | None:
    """The least-squares line through (t, y): slope per hour, and its rise over the span
    relative to its value at the start (``growth``)."""
    if len(t) < 3:
        return None
    slope, intercept = np.polyfit(np.asarray(t), np.asarray(y), 1)
    start = slope * t[0] + intercept
    rise = slope * (t[-1] - t[0])
    return {
        "start": round(float(start), 3),
        "end": round(float(start + rise), 3),
        "slope_per_hour": round(float(slope * 3600), 4),
        "growth": round(float(rise / start), 4) if start else float("nan"),
        "max": round(float(max(y)), 3),
    }


def _series(samples: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}

    def add(name: str, t: float, value: float | None) -> None:
        if value is not None:
            series.setdefault(name, []).append((t, float(value)))

    for s in samples:
        t = s["t_s"]
        add("pss_total_mb", t, s["pss_total_mb"])
        for kind, mb in s["pss_mb"].items():
            add(f"pss_{kind}_mb", t, mb)
        add("batch_s_mean", t, s["batch_s_mean"])
        add("delta_s_mean", t, s["delta_s_mean"])
        add("checkpoint_bytes", t, s["checkpoint_bytes"])
        add("landing_files", t, s["landing_files"])
        for table, files in s["tables"].items():
            add(f"{table}_active_files", t, files["active"])
            add(f"{table}_files_on_disk", t, files["on_disk"])
            add(f"{table}_log_files", t, files["log_files"])
    return series


def _trends(samples: list[dict[str, Any]], warm_up_s: float) -> dict[str, Any]:
    trends: dict[str, Any] = {}
    for name, points in _series(samples).items():
        after = [(t, y) for t, y in points if t >= warm_up_s]
        trends[name] = trend([t for t, _ in after], [y for _, y in after])
    return trends


def _maintenance_policy(config: Config) -> dict[str, Any]:
    """The configuration's maintenance section, as the stream ran with it."""
    policy = getattr(config, "maintenance", None)
    return {} if policy is None else dict(vars(policy))


def _checks(result: dict[str, Any]) -> dict[str, Any]:
    trends = result["trends"]
    memory = trends.get("pss_total_mb") or {}
    batch = trends.get("batch_s_mean") or {}
    files = {table: (trends.get(f"{table}_files_on_disk") or {}).get("max") for table in _TABLES}
    return {
        "memory_growth": memory.get("growth"),
        "memory_flat": memory.get("growth") is not None and memory["growth"] < MEMORY_GROWTH_LIMIT,
        "batch_s_growth": batch.get("growth"),
        "max_files_on_disk": files,
        "lost": result["lost"],
        "duplicated": result["duplicated"],
        "every_file_once": result["lost"] == 0 and result["duplicated"] == 0,
    }


def _title(result: dict[str, Any]) -> str:
    checks = result["checks"]
    growth = checks["memory_growth"]
    return (
        f"fruits bench soak: {result['rate_per_s']:g} photos/s for {result['minutes']:g} min; "
        f"{result['dropped']} files, lost {result['lost']}, duplicated {result['duplicated']}; "
        f"memory growth after warm-up {growth:+.1%}"
        if growth is not None
        else "fruits bench soak"
    )


def _save(out_dir: Path, samples: list[dict[str, Any]], result: dict[str, Any]) -> None:
    temporary = out_dir / ".soak.json.tmp"
    temporary.write_text(json.dumps({**result, "samples": samples}, indent=1, default=str))
    os.replace(temporary, out_dir / "soak.json")


def _plot(path: Path, samples: list[dict[str, Any]], warm_up_s: float, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _series(samples)
    panels = [
        (
            "memory (PSS, MB)",
            ["pss_total_mb", "pss_jvm_mb", "pss_python_workers_mb", "pss_driver_mb"],
        ),
        ("batch time (s, mean per sample)", ["batch_s_mean", "delta_s_mean"]),
        ("Delta files (current version)", [f"{t}_active_files" for t in _TABLES]),
        (
            "Delta files on disk / log files",
            [f"{t}_files_on_disk" for t in _TABLES] + [f"{t}_log_files" for t in _TABLES],
        ),
        ("checkpoint (MB)", ["checkpoint_mb"]),
        ("files in the landing", ["landing_files"]),
    ]
    if "checkpoint_bytes" in series:
        series["checkpoint_mb"] = [(t, y / 2**20) for t, y in series["checkpoint_bytes"]]
    figure, axes = plt.subplots(3, 2, figsize=(13, 11), sharex=True)
    for axis, (name, keys) in zip(axes.flat, panels, strict=True):
        for key in keys:
            points = series.get(key, [])
            if points:
                axis.plot([t / 60 for t, _ in points], [y for _, y in points], label=key)
        axis.axvline(warm_up_s / 60, color="grey", linestyle=":", linewidth=1)
        axis.set_title(name, fontsize=10)
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    for axis in axes[-1]:
        axis.set_xlabel("minutes")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
