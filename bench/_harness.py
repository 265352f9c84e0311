"""What every benchmark shares: the machine's description, process-tree memory, photo picks,
a throw-away root with a trained model, and uploads the way ``fruits upload`` makes them."""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from fruits.config import Config
from fruits.console import log
from fruits.errors import ConfigError
from fruits.features.featurizer import Backend, onnx_dir

__all__ = [
    "TreeMemory",
    "bench_config",
    "cpu_spent",
    "drop_photo",
    "machine",
    "pick_photos",
    "prepare_model",
    "spark_cores",
    "stream_environment",
    "tree_cpu_seconds",
    "tree_memory",
]

_VERSIONS = ("pyspark", "tensorflow-cpu", "keras", "onnxruntime", "tf2onnx", "deltalake", "numpy")


def machine() -> dict[str, Any]:
    """Cores, CPU model and library versions: printed with every figure."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in _VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d"),
    }


def spark_cores(master: str) -> int:
    """Task slots of a local master: ``local[N]`` -> N, ``local[*]``/``local`` -> cores/1."""
    if master.startswith("local[") and master.endswith("]"):
        inner = master[6:-1].split(",")[0]
        return os.cpu_count() or 1 if inner == "*" else int(inner)
    return 1 if master == "local" else os.cpu_count() or 1


class TreeMemory:
    """Peak resident memory of a process and all its descendants (the Spark JVM, Spark's
    Python daemon and workers), sampled from /proc in a background thread. A sum of RSS, so
    pages shared by forked processes count more than once: an upper bound (a JVM caught between
    fork and exec of a child counts twice). ``peak_pss_mb`` sums the proportional set size
    instead (shared pages split between their users): the memory the tree really holds.
    ``peak_by_kind`` is the RSS breakdown at the RSS peak."""

    def __init__(self, pid: int | None = None, interval_s: float = 0.2) -> None:
        self._pid = os.getpid() if pid is None else pid
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_mb = 0.0
        self.peak_pss_mb = 0.0
        self.peak_by_kind: dict[str, Any] = {}

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        processes = tree_processes(self._pid)
        self.peak_pss_mb = max(self.peak_pss_mb, sum(pss for _, _, pss in processes))
        total = sum(mb for _, mb, _ in processes)
        if total > self.peak_mb:
            self.peak_mb = total
            kinds: dict[str, list[float]] = {}
            for name, mb, _ in processes:
                kinds.setdefault(name, []).append(mb)
            self.peak_by_kind = {
                name: {"processes": len(mbs), "mb": round(sum(mbs))} for name, mbs in kinds.items()
            }


def tree_rss_mb(root: int) -> float:
    """RSS of ``root`` and its descendants, in MiB."""
    return sum(mb for _, mb, _ in tree_processes(root))


def tree_processes(root: int) -> list[tuple[str, float, float]]:
    """(command name, RSS MiB, PSS MiB) of ``root`` and each of its descendants."""
    return [(name, rss, pss) for _, name, rss, pss in tree_memory(root)]


def tree_memory(root: int) -> list[tuple[int, str, float, float]]:
    """(pid, command name, RSS MiB, PSS MiB) of ``root`` and each of its descendants."""
    page = os.sysconf("SC_PAGE_SIZE")
    result = []
    for process in _process_tree(root):
        try:
            statm = Path(f"/proc/{process.pid}/statm").read_text().split()
        except OSError:  # the process ended while we looked
            continue
        rss = int(statm[1]) * page / 2**20
        result.append((process.pid, process.name, rss, _pss_mb(process.pid)))
    return result


def tree_cpu_seconds(root: int | None = None) -> dict[tuple[int, str], float]:
    """CPU seconds (user + system) used so far by ``root`` (default: this process) and each of
    its descendants, by (pid, command name). Two snapshots around a run give where its CPU went
    (:func:`cpu_spent`)."""
    tick = os.sysconf("SC_CLK_TCK")
    return {
        (process.pid, process.name): (process.utime + process.stime) / tick
        for process in _process_tree(os.getpid() if root is None else root)
    }


@dataclasses.dataclass(frozen=True)
class _Process:
    pid: int
    name: str
    utime: int  # clock ticks
    stime: int


def _process_tree(root: int) -> list[_Process]:
    """``root`` and its descendants, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    found: dict[int, _Process] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        # The name may hold spaces and parentheses: the fields follow the last ")".
        fields = stat.rsplit(")", 1)[1].split()
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        found[pid] = _Process(pid, name, utime=int(fields[11]), stime=int(fields[12]))
    result, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in found:
            result.append(found[pid])
        todo.extend(children.get(pid, []))
    return result


def cpu_spent(
    before: dict[tuple[int, str], float], after: dict[tuple[int, str], float]
) -> dict[str, float]:
    """CPU seconds by command name between two :func:`tree_cpu_seconds` snapshots (a process
    born in between counts from zero; one that ended in between is not seen)."""
    spent: dict[str, float] = {}
    for (pid, name), seconds in after.items():
        spent[name] = spent.get(name, 0.0) + seconds - before.get((pid, name), 0.0)
    return {name: round(seconds, 2) for name, seconds in sorted(spent.items()) if seconds > 0}


def _pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pick_photos(images: str | Path, n: int) -> list[Path]:
    """``n`` photos spread evenly over the sorted ``<Class>/*.jpg`` files (all classes)."""
    photos = sorted(Path(images).rglob("*.jpg"))
    if len(photos) < n:
        raise ConfigError(f"--images {images}: {len(photos)} photos, {n} needed")
    return photos[:: len(photos) // n][:n]


def bench_config(
    config: Config,
    root: Path,
    *,
    backend: Backend | None,
    image_size: int | None,
    layer: str | None = None,
) -> Config:
    """``config`` under a fresh root, with the backend, size and layer asked for. The ONNX export
    stays where the original configuration caches it, so a benchmark does not re-export."""
    featurizer = dataclasses.replace(
        config.featurizer,
        backend=backend or config.featurizer.backend,
        image_size=image_size or config.featurizer.image_size,
        layer=layer or config.featurizer.layer,
        onnx_dir=str(Path(onnx_dir(config)).resolve()),
    )
    return dataclasses.replace(config, root=str(root), featurizer=featurizer)


def prepare_model(config: Config, *, images: str, models: str | None) -> str:
    """A champion model in ``config``'s registry: a copy of the registry of ``models`` (a root
    that holds ``mlflow.db``, or that file; the models' files stay where they are), or a small
    one trained now (LogisticRegression on 4 classes x 8 photos of ``<images>/../Training``) at
    the configured size, in a child process so that the benchmark's own Spark JVM holds no
    training memory. Returns how, for the output."""
    if models:
        source = Path(models) / "mlflow.db" if Path(models).is_dir() else Path(models)
        Path(config.root).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, Path(config.root) / "mlflow.db")
        return f"copy of {source}"
    training = Path(images).resolve().parent / "Training"
    if not training.is_dir():
        raise ConfigError(f"no --models and no {training} to train a small model from")
    data = Path(config.root) / "tiny-dataset"
    classes = sorted(p.name for p in training.iterdir() if p.is_dir())[:4]
    for label in classes:
        (data / "Training" / label).mkdir(parents=True)
        for photo in sorted((training / label).glob("*.jpg"))[::15][:8]:
            shutil.copy(photo, data / "Training" / label / photo.name)
    featurizer = config.featurizer
    log(
        f"bench: training a small model ({', '.join(classes)}) at {featurizer.image_size}, "
        f"{featurizer.layer}"
    )
    env = {**stream_environment(config), "FRUITS__TRAINING__CLASSIFIERS": "[logistic_regression]"}
    command = [sys.executable, "-m", "fruits.cli", "train", "--config", config.source]
    done = subprocess.run([*command, "--data", str(data)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training the benchmark's model failed:\n{done.stderr[-2000:]}")
    return f"trained now on {len(classes)} classes x 8 photos of {training}"


_CHILD_PATHS: tuple[Literal["lake", "landing", "archive"], ...] = ("lake", "landing", "archive")


def stream_environment(config: Config) -> dict[str, str]:
    """The environment that gives a child ``fruits`` command this benchmark's configuration."""
    return {
        **os.environ,
        "FRUITS_ROOT": config.root,
        "FRUITS__FEATURIZER__BACKEND": config.featurizer.backend,
        "FRUITS__FEATURIZER__IMAGE_SIZE": str(config.featurizer.image_size),
        "FRUITS__FEATURIZER__LAYER": config.featurizer.layer,
        "FRUITS__FEATURIZER__ONNX_DIR": f"'{config.featurizer.onnx_dir}'",
        "FRUITS__STREAM__TRIGGER_INTERVAL": config.stream.trigger_interval,
        **{f"FRUITS__PATHS__{name.upper()}": config.path(name) for name in _CHILD_PATHS},
    }


def drop_photo(photo: Path, landing: Path) -> str:
    """Copy under a hidden name, then rename: the stream never sees a partial file."""
    name = f"{photo.parent.name.replace(' ', '_')}-{uuid.uuid4().hex[:8]}.jpg"
    temporary = landing / f".{name}.tmp"
    shutil.copyfile(photo, temporary)
    os.replace(temporary, landing / name)
    return name


def drop_photos(photos: Sequence[Path], landing: Path) -> list[str]:
    landing.mkdir(parents=True, exist_ok=True)
    return [drop_photo(p, landing) for p in photos]
