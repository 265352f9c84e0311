"""The jobs on a real standalone cluster (scripts/spark-cluster.sh: a master and two workers, each
a JVM of its own with one core), run through the CLI in child processes: a cluster session
cannot share the test run's local one.

An executor JVM is killed (SIGKILL, found by its command line) while the stream and while the
training job run: its tasks run again on the other one (or on its replacement), the job goes on,
and every photo is in the tables exactly once.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fruits.config import Config
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE

from . import spark_services as services
from .conftest import KNOWN_CLASSES, WEIGHTS, copy_registry, real_photos

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="session")
def cluster() -> Iterator[str]:
    """The standalone cluster: the one running (``make cluster-start``, as ``.ci/run`` does), or
    started here by the project's script and stopped afterwards."""
    started = False
    if services.master_status() is None:
        services.service("spark-cluster.sh", "start")
        started = True
    status = services.master_status()
    assert status is not None and status["aliveworkers"] >= 2, status
    yield services.MASTER_URL
    if started:
        services.service("spark-cluster.sh", "stop")


def _env(root: Path, app: str, **extra: str) -> dict[str, str]:
    return {
        "FRUITS_ROOT": str(root),
        "FRUITS_WEIGHTS": str(WEIGHTS),
        "FRUITS__SPARK__MASTER": services.MASTER_URL,
        "FRUITS__SPARK__APP_NAME": app,
        # The cluster's executors: one per worker, sized to fit beside the others' work.
        "FRUITS__SPARK__EXECUTOR_MEMORY": "1g",
        "FRUITS__SPARK__DRIVER_MEMORY": "1g",
        # A folder of this run: the executors must get the export through Spark.
        "FRUITS__FEATURIZER__ONNX_DIR": str(root / "onnx"),
        **extra,
    }


def _kill_an_executor_at_its_first_task(app: str, deadline_s: float = 300) -> int:
    """SIGKILL the first executor JVM of ``app`` that starts a Python worker (a UDF task
    running on it); its pid."""
    application = services.app_id(app)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for pid in services.executor_pids(application):
            if services.has_python_worker(pid):
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no executor of {application} ran a Python task in {deadline_s} s")


def _lost_executors(log: Path) -> dict[str, Any]:
    """From the driver's REST API (the stream serves the Spark UI): executors removed, and
    tasks that failed and ran again."""
    match = re.search(r"Spark UI \(.*\): (http://\S+)", log.read_text(errors="replace"))
    assert match, log.read_text(errors="replace")[-3000:]
    api = f"{match.group(1)}/api/v1/applications"
    (app,) = services.get_json(api)
    executors = services.get_json(f"{api}/{app['id']}/allexecutors")
    stages = services.get_json(f"{api}/{app['id']}/stages")
    return {
        "removed": [e["id"] for e in executors if e["id"] != "driver" and not e["isActive"]],
        "active": [e["id"] for e in executors if e["id"] != "driver" and e["isActive"]],
        "failed_tasks": sum(s.get("numFailedTasks", 0) for s in stages),
    }


def test_stream_loses_an_executor_and_every_photo_lands_once(
    cluster: str, trained: tuple[Config, dict[str, Any]], tmp_path: Path
) -> None:
    config, _ = trained
    copy_registry(config, tmp_path)
    landing = tmp_path / "landing"
    landed = []
    for label in KNOWN_CLASSES:  # 24 real photos a class: 96 files
        folder = landing / label
        folder.mkdir(parents=True)
        for photo in real_photos("Test", label, 24):
            shutil.copy(photo, folder / photo.name)
            landed.append(str(folder / photo.name))
    (landing / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    landed.append(str(landing / "broken.jpg"))
    app = f"fruits-test-stream-{os.getpid()}"
    env = _env(
        tmp_path, app, FRUITS__STREAM__MAX_FILES_PER_TRIGGER="32", FRUITS__SPARK__UI_PORT="4140"
    )
    log = tmp_path / "stream.log"
    stream = services.cli(["stream"], env, log)  # long-running, not --once
    try:
        killed = _kill_an_executor_at_its_first_task(app)
        print(f"killed executor JVM {killed}")
        lake = DeltaRsLake(str(tmp_path / "lake"))
        deadline = time.monotonic() + 420
        while True:
            predicted = lake.read_arrow(PREDICTIONS, columns=["path"]).num_rows
            quarantined = lake.read_arrow(QUARANTINE, columns=["path"]).num_rows
            if predicted + quarantined >= len(landed):
                break
            assert stream.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            time.sleep(0.5)
        assert stream.poll() is None  # the query goes on
        lost = _lost_executors(log)
        print(lost)
        assert lost["removed"] and lost["active"], lost  # one lost, work went on elsewhere
        assert lost["failed_tasks"] >= 1, lost  # the killed executor's task ran again
        stream.send_signal(signal.SIGTERM)
        assert stream.wait(timeout=120) == 0, log.read_text(errors="replace")[-4000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(stream.pid, signal.SIGKILL)
    rows = [
        *lake.read_arrow(PREDICTIONS, columns=["path"]).column("path").to_pylist(),
        *lake.read_arrow(QUARANTINE, columns=["path"]).column("path").to_pylist(),
    ]
    arrivals = Counter(p.removeprefix("file:") for p in rows)
    assert [p for p, n in arrivals.items() if n > 1] == []  # no duplicates
    assert sorted(arrivals) == sorted(landed)  # nothing lost


def test_training_loses_an_executor_and_trains_the_same_model(
    cluster: str,
    trained: tuple[Config, dict[str, Any]],
    dataset_with_corrupt: Path,
    tmp_path: Path,
) -> None:
    _, uninterrupted = trained
    app = f"fruits-test-train-{os.getpid()}"
    env = _env(tmp_path, app, FRUITS__TRAINING__FEATURE_CHUNK_SIZE="8")
    log = tmp_path / "train.log"
    train = services.cli(["train", "--data", str(dataset_with_corrupt)], env, log)
    try:
        killed = _kill_an_executor_at_its_first_task(app)
        print(f"killed executor JVM {killed}")
        assert train.wait(timeout=900) == 0, log.read_text(errors="replace")[-4000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(train.pid, signal.SIGKILL)
    summary = services.last_json(log)
    # Every photo featurized once, the same corrupt photo rejected, the same model chosen.
    for key in ("features_computed", "rejected_files", "n_classes", "pca_components", "classifier"):
        assert summary[key] == uninterrupted[key], key
