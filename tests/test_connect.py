"""The jobs through a real Spark Connect server (scripts/spark-connect.sh), run through the CLI
in child processes: a Connect client and the test run's local session do not mix in one process.

Under Spark Connect the client has no ``SparkContext``, and the stream's ``foreachBatch`` step
runs in a Python process beside the server: the batch timeout goes through operation tags, the
batch log through the step's outcome files, and the predictions equal ``local[*]``'s.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fruits.config import Config
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE
from streaming.job import run_stream

from . import spark_services as services
from .conftest import KNOWN_CLASSES, WEIGHTS, real_photos

pytestmark = [pytest.mark.connect, pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="session")
def connect_server() -> Iterator[str]:
    """The Spark Connect server: the one running (``make connect-start``, as ``.ci/run`` does),
    or started here by the project's script and stopped afterwards."""
    started = False
    if not services.port_answers(services.CONNECT_PORT):
        services.service("spark-connect.sh", "start")
        started = True
    yield services.CONNECT_URL
    if started:
        services.service("spark-connect.sh", "stop")


def _land(landing: Path) -> list[str]:
    landed = []
    for label in KNOWN_CLASSES:
        folder = landing / label
        folder.mkdir(parents=True)
        for photo in real_photos("Test", label, 3, skip=2):
            shutil.copy(photo, folder / photo.name)
            landed.append(str(folder / photo.name))
    (landing / "notes.jpg").write_bytes(b"shopping list: kiwis\n")
    landed.append(str(landing / "notes.jpg"))
    return landed


def _answers(root: Path) -> tuple[dict[str, tuple[str, float, bool]], dict[str, str]]:
    lake = DeltaRsLake(str(root / "lake"))
    predictions = lake.read_arrow(PREDICTIONS).to_pylist()
    quarantine = lake.read_arrow(QUARANTINE).to_pylist()
    name = lambda path: path.split("/landing/", 1)[1]  # noqa: E731 - the same photo, either root
    return (
        {name(r["path"]): (r["label"], r["confidence"], r["is_unknown"]) for r in predictions},
        {name(r["path"]): r["reason"] for r in quarantine},
    )


def test_train_stream_and_status_through_spark_connect_match_local(
    connect_server: str,
    spark: Any,
    small_dataset: Path,
    make_config: Callable[..., Config],
    tmp_path: Path,
) -> None:
    remote = tmp_path / "remote"
    env = {
        "FRUITS_ROOT": str(remote),
        "FRUITS_WEIGHTS": str(WEIGHTS),
        "FRUITS__SPARK__REMOTE": connect_server,
        # A folder of this test: the server's executors get the export as an artifact.
        "FRUITS__FEATURIZER__ONNX_DIR": str(tmp_path / "onnx"),
    }
    log = tmp_path / "connect.log"
    trained = services.run_cli(["train", "--data", str(small_dataset)], env, log)
    assert trained["model_version"] == 1 and trained["n_classes"] == len(KNOWN_CLASSES)
    evaluated = services.run_cli(["evaluate", "--data", str(small_dataset / "Test")], env, log)
    assert evaluated["n_images"] == 5 * len(KNOWN_CLASSES)

    landed = _land(remote / "landing")
    # A batch past its timeout is interrupted by its operation tag (no job groups here)...
    late = services.cli(
        ["stream", "--once"], {**env, "FRUITS__STREAM__BATCH_TIMEOUT_S": "0.05"}, log
    )
    assert late.wait(timeout=600) != 0
    assert "batch_timeout_s=0.05" in log.read_text(errors="replace")
    # ...and the restart replays it exactly once.
    streamed = services.run_cli(["stream", "--once"], env, log)
    assert (streamed["rows_in"], streamed["quarantined"]) == (len(landed), 1)
    assert "batch 0: 13 in, 12 predicted, 1 quarantined" in log.read_text(errors="replace")
    status = services.run_cli(["status", "--json"], env, log)
    assert (status["predictions_rows"], status["quarantine_rows"]) == (len(landed) - 1, 1)
    assert status["model_version"] == 1

    # The same photos and model in local[*] (this run's session): the same answers.
    local_root = tmp_path / "local"
    _land(local_root / "landing")
    local = make_config(local_root, FRUITS__MLFLOW__TRACKING_URI=f"sqlite:///{remote}/mlflow.db")
    assert run_stream(local, once=True)["rows_in"] == len(landed)
    (remote_predictions, remote_quarantine), (local_predictions, local_quarantine) = (
        _answers(remote),
        _answers(local_root),
    )
    assert remote_quarantine == local_quarantine == {"notes.jpg": "not_an_image"}
    assert remote_predictions.keys() == local_predictions.keys()
    for path, (label, confidence, unknown) in local_predictions.items():
        assert remote_predictions[path][0] == label, path
        assert remote_predictions[path][1] == pytest.approx(confidence, abs=1e-9), path
        assert remote_predictions[path][2] == unknown, path
