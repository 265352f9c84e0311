"""MLflow on real photos: the training run, the registered pyfunc, `mlflow models serve`,
`mlflow.pyfunc.spark_udf` and the pyfunc in a fresh virtual environment, each giving the
stream's answers."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fruits.config import Config
from fruits.model.registry import CHAMPION, ModelRegistry
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE

from .conftest import KNOWN_CLASSES, real_photos

pytestmark = pytest.mark.spark

CHAMPION_URI = f"models:/fruits@{CHAMPION}"


def _photos() -> list[tuple[str, bytes]]:
    """Real held-out photos of every known class, a truncated one and a text file."""
    good = [
        (f"mem://{label}/{p.name}", p.read_bytes())
        for label in KNOWN_CLASSES
        for p in real_photos("Test", label, 2, skip=1)
    ]
    photo = good[0][1]
    return [*good, ("mem://cut.jpg", photo[: len(photo) // 2]), ("mem://notes.jpg", b"kiwis\n")]


def test_a_training_is_an_mlflow_run_that_registers_the_champion(
    trained: tuple[Config, dict[str, Any]],
) -> None:
    from mlflow import MlflowClient

    config, summary = trained
    uri = config.mlflow_uri("tracking_uri")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not the process' current one
    run = client.get_run(summary["run_id"])
    params, metrics = run.data.params, run.data.metrics
    assert params["extractor"].startswith("inception_v3/mixed2+mixed3/avg/100/sha256:")
    assert (params["layer"], params["image_size"], params["seed"]) == ("mixed2+mixed3", "100", "42")
    assert (params["unknown_detector"], params["refit_all"]) == ("fused", "True")
    assert params["classifiers"] == "logistic_regression,decision_tree,random_forest"
    assert int(params["pca_components"]) == summary["pca_components"]
    assert float(params["explained_variance"]) >= 0.95
    assert metrics["accuracy_test"] == summary["accuracy_test"]
    assert metrics["accuracy_validation"] == summary["accuracy_validation"]
    # "unknown" is calibrated on validation: at most 2% of its photos rejected.
    assert metrics["known_rejected_validation"] <= 0.02
    assert metrics["known_rejected_test"] == summary["test_known_rejected"]
    for name in ("logistic_regression", "decision_tree", "random_forest"):
        assert 0 <= metrics[f"validation_accuracy_{name}"] <= 1
        assert metrics[f"fit_seconds_{name}"] > 0
    assert {"seconds_features_Training", "seconds_train", "seconds_register"} <= set(metrics)
    report = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {
        "report/report.md",
        "report/metrics.json",
        "report/confusion_matrix.png",
        "report/pca_variance.png",
    } <= report
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"Training", "Test"}
    training = json.loads(inputs["Training"].dataset.profile)
    assert training["num_rows"] == 4 * 10  # the corrupt photo is not a training example
    assert json.loads(inputs["Training"].dataset.source)["uri"].endswith("/Training")

    version = client.get_model_version("fruits", str(summary["model_version"]))
    assert version.run_id == summary["run_id"]
    assert float(version.tags["accuracy_test"]) == summary["accuracy_test"]
    assert version.tags["classifier"] == summary["classifier"]
    # The first training made it champion (later tests may move the alias, then move it back).
    assert int(client.get_model_version_by_alias("fruits", CHAMPION).version) >= 1


def test_the_registered_pyfunc_and_its_spark_udf_give_the_streams_answers(
    spark: Any, memory_query: Any, stream_config: Config
) -> None:
    import mlflow

    feed, query, _ = memory_query
    photos = _photos()
    now = dt.datetime.now(dt.UTC)
    feed.add([(path, content, now) for path, content in photos])
    query.processAllAvailable()
    lake = DeltaRsLake(stream_config.path("lake"))
    streamed = {r["path"]: r for r in lake.read_arrow(PREDICTIONS).to_pylist()}
    quarantined = {r["path"]: r["reason"] for r in lake.read_arrow(QUARANTINE).to_pylist()}
    assert len(streamed) == 2 * len(KNOWN_CLASSES) and len(quarantined) == 2

    ModelRegistry(stream_config).use()  # this root's registry for "models:/..." URIs
    model = mlflow.pyfunc.load_model(CHAMPION_URI)
    assert [c.name for c in model.metadata.get_input_schema().inputs] == ["content"]
    frame = pd.DataFrame({"path": [p for p, _ in photos], "content": [c for _, c in photos]})
    answered = model.predict(frame[["content"]])
    udf = mlflow.pyfunc.spark_udf(spark, CHAMPION_URI, env_manager="local")
    in_spark = (
        spark.createDataFrame(frame)
        .select("path", udf("content").alias("answer"))
        .select("path", "answer.*")
        .toPandas()
    )

    by_path = dict(zip(frame["path"], answered.to_dict("records"), strict=True))
    spark_by_path = {row["path"]: row for row in in_spark.to_dict("records")}
    correct = 0
    for path, row in streamed.items():
        for answer in (by_path[path], spark_by_path[path]):
            assert answer["image_id"] == row["image_id"]
            assert answer["label"] == row["label"] and answer["is_unknown"] == row["is_unknown"]
            assert answer["confidence"] == pytest.approx(row["confidence"], rel=1e-6)
            assert [t["label"] for t in answer["top_k"]] == [t["label"] for t in row["top_k"]]
            assert [t["prob"] for t in answer["top_k"]] == pytest.approx(
                [t["prob"] for t in row["top_k"]], rel=1e-6
            )
            assert answer["reason"] == ""
            # Both levels, as the stream stored them.
            assert (answer["kind"], answer["variety_not_sure"]) == (
                row["kind"],
                row["variety_not_sure"],
            )
            assert answer["kind_confidence"] == pytest.approx(row["kind_confidence"], rel=1e-6)
        correct += row["label"] == path.split("/")[2]
    assert correct >= 7  # eight real held-out photos of four classes
    for path, reason in quarantined.items():  # what the stream quarantines: a reason, no label
        for answer in (by_path[path], spark_by_path[path]):
            assert (answer["reason"], answer["label"], answer["is_unknown"]) == (reason, "", True)
            assert len(answer["top_k"]) == 0
    assert set(quarantined.values()) == {"truncated", "not_an_image"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _served(tracking_uri: str, cwd: Path) -> Iterator[str]:
    """`mlflow models serve` of the champion in a child process (local environment), from a
    folder that is not the project, without the project's settings; stopped however the test
    ends. Yields its base URL once /ping answers."""
    port = _free_port()
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", str(cwd)),
        "MLFLOW_TRACKING_URI": tracking_uri,
    }
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", CHAMPION_URI]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    log = cwd / "serve.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the server and its uvicorn child: one group to stop
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)  # the server is starting: nothing to wait on but the port
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _post(url: str, payload: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{url}/invocations", data=payload, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_mlflow_models_serve_answers_a_posted_photo_with_its_class(
    stream_config: Config, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    kiwi, banana = (real_photos("Test", label, 1, skip=4)[0] for label in ("Kiwi", "Banana"))
    with _served(str(stream_config.mlflow_uri("tracking_uri")), elsewhere) as url:
        photos = [[base64.b64encode(p.read_bytes()).decode()] for p in (kiwi, banana)]
        split = {"dataframe_split": {"columns": ["content"], "data": photos}}
        status, body = _post(url, json.dumps(split).encode())
        assert status == 200, body
        answers = body["predictions"]
        assert [a["label"] for a in answers] == ["Kiwi", "Banana"]
        assert all(0 < a["confidence"] <= 1 and len(a["top_k"]) == 3 for a in answers)

        # The "inputs" format too; and bad input is an answer: an unreadable photo gets
        # is_unknown and a reason...
        cut = kiwi.read_bytes()[: kiwi.stat().st_size // 2]
        encoded = [base64.b64encode(content).decode() for content in (banana.read_bytes(), cut)]
        status, body = _post(url, json.dumps({"inputs": {"content": encoded}}).encode())
        assert status == 200, body
        good, bad = body["predictions"]
        assert (good["label"], good["reason"]) == ("Banana", "")
        assert (bad["is_unknown"], bad["reason"], bad["label"]) == (True, "truncated", "")
        assert bad["confidence"] is None and bad["top_k"] == []
        # ...and a request that is not the model's input a clear error; the server lives on.
        status, body = _post(url, b'{"dataframe_split": {"columns": ["photo"], "data": [[1]]}}')
        assert status == 400 and "content" in body["message"]
        status, body = _post(url, b"not json")
        assert status == 400 and body["message"]
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
            assert response.status == 200


# Run by the fresh environment's Python: the registered model, loaded and asked about photos
# (their paths in argv) the way another team would, with nothing of the project installed.
_FRESH_LOAD = """
import importlib.util, json, sys
assert importlib.util.find_spec("fruits") is None, "fruits is installed here"
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
import fruits
photos = [open(path, "rb").read() for path in sys.argv[2:]]
answers = model.predict(pd.DataFrame({"content": photos}))
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"pyspark", "tensorflow", "deltalake"})
print(json.dumps({"fruits": fruits.__file__, "heavy": heavy,
                  "answers": answers[["label", "confidence", "reason"]].to_dict("records")}))
"""


@pytest.mark.slow
def test_the_registered_pyfunc_answers_from_a_fresh_virtual_environment(
    trained: tuple[Config, dict[str, Any]], tmp_path: Path
) -> None:
    """What Model Serving and `mlflow models serve --env-manager virtualenv` do: a new venv,
    the model's own requirements.txt installed with pip, then the model loaded there (PyPI
    and pip's cache; pip took 90-190 s here, on 2 cores shared with other work)."""
    import mlflow

    config, summary = trained
    version = summary["model_version"]
    uri = f"models:/fruits/{version}"
    tracking = str(config.mlflow_uri("tracking_uri"))
    ModelRegistry(config).use()
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    started = time.monotonic()
    pip = [python, "-m", "pip", "install", "--prefer-binary", "--disable-pip-version-check"]
    install = subprocess.run(
        [*pip, "--quiet", "--requirement", str(requirements)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    print(f"pip install of the model's requirements: {time.monotonic() - started:.0f} s")

    photos = [real_photos("Test", label, 1, skip=3)[0] for label in KNOWN_CLASSES]
    elsewhere = tmp_path / "elsewhere"  # not the project: nothing of it on sys.path
    elsewhere.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": os.environ.get("HOME", str(elsewhere)),
        "MLFLOW_TRACKING_URI": tracking,
    }
    loaded = subprocess.run(
        [python, "-c", _FRESH_LOAD, uri, *map(str, photos)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    fresh = json.loads(loaded.stdout.strip().splitlines()[-1])
    # fruits came with the model (its code_paths), and nothing heavy was imported.
    model_code = Path(fresh["fruits"]).resolve().parents[1]
    assert model_code.name == "code" and (model_code.parent / "MLmodel").is_file()
    assert fresh["heavy"] == []

    here = mlflow.pyfunc.load_model(uri).predict(
        pd.DataFrame({"content": [p.read_bytes() for p in photos]})
    )
    assert [a["label"] for a in fresh["answers"]] == here["label"].tolist()
    assert [a["confidence"] for a in fresh["answers"]] == pytest.approx(
        here["confidence"].tolist(), rel=1e-5
    )
    assert [a["reason"] for a in fresh["answers"]] == [""] * len(photos)
    assert (
        sum(a["label"] == p.parent.name for a, p in zip(fresh["answers"], photos, strict=True)) >= 3
    )
    # What loading and answering import, and nothing of training, Spark, Delta or Azure.
    wanted = {line.split("==")[0] for line in requirements.read_text().split()}
    assert wanted == {
        "mlflow", "cloudpickle", "onnxruntime", "numpy", "pandas", "pillow", "pillow-heif",
        "pyyaml",
    }  # fmt: skip
