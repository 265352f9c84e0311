"""Crash tests: the real CLI in a child process, killed with SIGKILL at random points.

Nothing is lost and nothing is duplicated: the stream replays a batch whose checkpoint commit
was lost (its Delta commit is skipped by the app transaction), and the training job resumes
from the feature chunks it had committed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fruits.config import Config
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.tables import FEATURES, PREDICTIONS, QUARANTINE

from .conftest import DELTA_WRITERS, KNOWN_CLASSES, WEIGHTS, real_photos
from .spark_services import cli

pytestmark = [pytest.mark.spark, pytest.mark.slow]

KILLS = 5  # per run; the photos take ~31 batches of 8


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _rows(lake: DeltaRsLake) -> int:
    return lake.read_arrow(PREDICTIONS, columns=["path"]).num_rows


@pytest.mark.parametrize("writer", DELTA_WRITERS)
def test_stream_killed_five_times_loses_and_duplicates_nothing(
    trained: tuple[Config, dict[str, Any]], tmp_path: Path, writer: str
) -> None:
    config, _ = trained
    landing = tmp_path / "landing"
    landed = []
    for label in KNOWN_CLASSES:  # 60 real photos a class: 240 files
        for split, n in (("Training", 40), ("Test", 20)):
            folder = landing / f"{label}-{split}"
            folder.mkdir(parents=True, exist_ok=True)
            for photo in real_photos(split, label, n):
                shutil.copy(photo, folder / photo.name)
                landed.append(str(folder / photo.name))
    (landing / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    landed.append(str(landing / "broken.jpg"))
    env = {
        "FRUITS_ROOT": str(tmp_path),
        "FRUITS_WEIGHTS": str(WEIGHTS),
        "FRUITS__MLFLOW__TRACKING_URI": str(config.mlflow_uri("tracking_uri")),
        "FRUITS__SPARK__MASTER": "local[2]",
        # Small batches (a batch of 8 takes ~0.3 s): a kill lands on a run that still has work.
        "FRUITS__STREAM__MAX_FILES_PER_TRIGGER": "8",
        "FRUITS__SPARK__DELTA_WRITER": writer,
    }
    log = tmp_path / "stream.log"
    lake = DeltaRsLake(str(tmp_path / "lake"))
    chance = random.Random(20261124)
    kills = 0
    while kills < KILLS:
        before = _rows(lake)
        process = cli(["stream", "--once"], env, log)
        # Once this run has committed something, a random point within the next batches:
        # featurizing, between the two Delta commits, or before the checkpoint commit.
        deadline = time.monotonic() + 300
        while _rows(lake) == before and process.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(chance.uniform(0.0, 1.0))
        if process.poll() is not None:
            break  # finished before this kill: nothing left to interrupt
        _kill_group(process)
        kills += 1
        print(f"kill {kills}: {before} -> {_rows(lake)} prediction rows")
    final = cli(["stream", "--once"], env, log)
    assert final.wait(timeout=600) == 0, log.read_text()[-3000:]

    predicted = [r["path"] for r in lake.read_arrow(PREDICTIONS, columns=["path"]).to_pylist()]
    quarantined = [r["path"] for r in lake.read_arrow(QUARANTINE, columns=["path"]).to_pylist()]
    arrivals = Counter(p.removeprefix("file:") for p in predicted + quarantined)
    assert kills == KILLS, f"only {kills} kills landed before the run finished"
    assert [p for p, n in arrivals.items() if n > 1] == []  # no duplicates
    assert sorted(arrivals) == sorted(landed)  # nothing lost, nothing invented
    assert [p.removeprefix("file:") for p in quarantined] == [str(landing / "broken.jpg")]


def test_training_killed_mid_featurization_resumes_from_the_cache(
    trained: tuple[Config, dict[str, Any]], dataset_with_corrupt: Path, tmp_path: Path
) -> None:
    _, uninterrupted = trained
    env = {
        "FRUITS_ROOT": str(tmp_path),
        "FRUITS_WEIGHTS": str(WEIGHTS),
        "FRUITS__SPARK__MASTER": "local[2]",
        "FRUITS__TRAINING__FEATURE_CHUNK_SIZE": "8",
    }
    log = tmp_path / "train.log"
    process = cli(["train", "--data", str(dataset_with_corrupt)], env, log)
    deadline = time.monotonic() + 300
    while "Training: 16/" not in log.read_text(errors="replace"):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    _kill_group(process)

    rerun = cli(["train", "--data", str(dataset_with_corrupt)], env, log)
    assert rerun.wait(timeout=600) == 0, log.read_text()[-3000:]
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1])
    assert summary["features_cached"] >= 8  # at least the first chunk committed before the kill
    assert (
        summary["features_cached"] + summary["features_computed"]
        == (uninterrupted["features_computed"])
    )
    for key in ("n_classes", "pca_components", "classifier", "accuracy_test", "rejected_files"):
        assert summary[key] == uninterrupted[key], key
    # The chunks committed before the kill were found by the rerun, not featurized again.
    paths = DeltaRsLake(str(tmp_path / "lake")).read_arrow(FEATURES, columns=["path"])
    assert [p for p, n in Counter(paths.column("path").to_pylist()).items() if n > 1] == []
    assert paths.num_rows == uninterrupted["features_computed"]
