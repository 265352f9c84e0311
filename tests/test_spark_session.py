"""The streaming job's JVM starts with the stream's flags, whichever call starts the session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fruits.config import Config

from .conftest import PROJECT, WEIGHTS, copy_registry

pytestmark = pytest.mark.spark

# Run in a fresh process: the first session of a process launches its JVM, for good, and this
# test run's JVM is already started (conftest's session).
_STREAM_ONCE = """
import json, os
from pyspark.sql import SparkSession
from fruits.config import load_config
from streaming.job import run_stream


class NoHub:  # nothing is published: the landing is empty
    def create_batch(self, **kwargs):
        raise AssertionError("nothing to publish")

    def send_batch(self, batch):
        raise AssertionError("nothing to publish")

    def close(self):
        pass


config = load_config(os.environ["CONFIG"], environ=os.environ)
result = run_stream(config, once=True, eventhub_client=lambda target: NoHub())
spark = SparkSession.getActiveSession()
print(json.dumps({
    "jvm": spark.sparkContext._jvm.java.lang.System.getProperty("fruits.jvm"),
    "ui": spark.sparkContext.getConf().get("spark.ui.enabled"),
    "rows_in": result["rows_in"],
}))
"""


def test_the_stream_jvm_has_the_stream_options_with_event_hubs_and_the_spark_writer(
    trained: tuple[Config, dict[str, Any]], onnx_dir: Path, tmp_path: Path
) -> None:
    # Event Hubs on and Spark's Delta writer: the outbox opens the Spark lake (get_spark)
    # before the job asks for its session; that first call used to launch the JVM with the
    # training jobs' flags (spark.java_options) and UI setting.
    copy_registry(trained[0], tmp_path)
    (tmp_path / "landing").mkdir()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("FRUITS", "EVENTHUB", "PYSPARK"))
    }
    env.update(
        CONFIG=str(PROJECT / "conf" / "local.yaml"),
        FRUITS_ROOT=str(tmp_path),
        FRUITS_WEIGHTS=str(WEIGHTS),
        FRUITS__SPARK__MASTER="local[1]",
        FRUITS__SPARK__DELTA_WRITER="spark",
        FRUITS__SPARK__JAVA_OPTIONS="-Dfruits.jvm=batch",
        FRUITS__SPARK__STREAM_JAVA_OPTIONS="-Dfruits.jvm=stream",
        FRUITS__SPARK__UI="false",
        FRUITS__SPARK__STREAM_UI="true",
        FRUITS__EVENTHUB__ENABLED="true",
        FRUITS__EVENTHUB__FULLY_QUALIFIED_NAMESPACE="fruits-test.servicebus.windows.net",
        FRUITS__FEATURIZER__ONNX_DIR=str(onnx_dir),
    )
    done = subprocess.run(
        [sys.executable, "-c", _STREAM_ONCE],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"jvm": "stream", "ui": "true", "rows_in": 0}, done.stderr[-3000:]
