"""Storage outages and secrets, against the real Azurite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pyspark.errors import StreamingQueryException

from fruits.config import Config
from fruits.sinks.delta import open_lake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE
from fruits.upload import plan_upload, upload
from streaming.job import run_stream

from .conftest import DELTA_WRITERS, PROJECT, WEIGHTS, hadoop_landing
from .test_azure import _landed_names, _unique_photos, start_landing_query

pytestmark = pytest.mark.spark

AZURITE = str(PROJECT / "scripts" / "azurite.sh")


def _upload(config: Config, files: list[Path]) -> None:
    summary = upload(
        plan_upload([str(f) for f in files], ["jpg"]), config.path("landing"), azure=config.azure
    )
    assert summary.failed == []


def test_storage_outage_mid_stream_fails_cleanly_and_the_restart_loses_nothing(
    spark: Any, azure_config: Config, tmp_path: Path
) -> None:
    config = azure_config
    photos = _unique_photos(tmp_path / "photos", 12)
    _upload(config, photos[:6])
    query = start_landing_query(spark, config)
    try:
        query.processAllAvailable()
        _upload(config, photos[6:])
        subprocess.run([AZURITE, "stop"], check=True)  # storage goes away under the stream
        # Listing, download or the Delta commit fails; the query stops with that error
        # instead of hanging (the SDKs retry for ~15 s at most). Not raising = it hung.
        with pytest.raises(StreamingQueryException):
            query.awaitTermination(180)
    finally:
        if query.isActive:
            query.stop()
        subprocess.run([AZURITE, "start"], check=True)

    result = run_stream(config, once=True)  # the restart, once storage is back
    paths = open_lake(config).read_arrow(PREDICTIONS).column("path").to_pylist()
    assert result["rows_in"] >= 1
    assert len(paths) == len(set(paths)) == 12  # none lost, none twice
    assert sorted(paths) == _landed_names(config)
    assert open_lake(config).read_arrow(QUARANTINE).num_rows == 0


@pytest.mark.parametrize("writer", DELTA_WRITERS)
def test_an_account_key_in_the_environment_leaves_no_trace(
    azure_config: Config, tmp_path: Path, writer: str
) -> None:
    """Upload, stream, status, and a failing run with a wrong key: the key (the emulator's
    account key, taken from the SDK, real for Azurite) is in no output, file or table.

    With Spark's writer the lake goes through Hadoop's ABFS driver with that key (written by
    Spark's Delta), and the landing is named by its abfs:// URL (read through the Blob SDK)."""
    from azure.storage.blob._shared.parser import DEVSTORE_ACCOUNT_KEY as KEY

    photos = _unique_photos(tmp_path / "photos", 3)
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
        "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    )
    root = Path(azure_config.root)
    env = {
        **os.environ,
        "FRUITS_ROOT": str(root),
        "FRUITS_WEIGHTS": str(WEIGHTS),
        "FRUITS__SPARK__MASTER": "local[2]",
        "FRUITS__AZURE__USE_EMULATOR": "false",
        "AZURE_STORAGE_CONNECTION_STRING": connection,
        "FRUITS__PATHS__LANDING": azure_config.path("landing"),
        "FRUITS__PATHS__LAKE": azure_config.path("lake"),
        "FRUITS__FEATURIZER__ONNX_DIR": str(azure_config.featurizer.onnx_dir),
        "FRUITS__SPARK__DELTA_WRITER": writer,
    }
    if writer == "spark":
        env["FRUITS__PATHS__LANDING"] = hadoop_landing(azure_config)

    def fruits(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "fruits.cli", *args, "--config", "azurite"]
        return subprocess.run(
            command, cwd=PROJECT, env={**env, **extra}, capture_output=True, text=True
        )

    runs = [
        fruits("upload", *map(str, photos)),
        fruits("stream", "--once"),
        fruits("status"),
        # A wrong key: the run fails, and says so without printing either key.
        fruits(
            "stream",
            "--once",
            AZURE_STORAGE_CONNECTION_STRING=connection.replace(KEY, "V3Jvbmc" + KEY[7:]),
            FRUITS__STREAM__QUERY_NAME="wrong-key",
        ),
    ]
    assert [r.returncode for r in runs[:3]] == [0, 0, 0], runs[1].stderr[-2000:]
    assert runs[3].returncode != 0 and "error" in runs[3].stderr.lower()
    assert open_lake(azure_config).read_arrow(PREDICTIONS).num_rows == 3

    outputs = [r.stdout + r.stderr for r in runs]
    files = [p for p in root.rglob("*") if p.is_file()]  # checkpoints, registry, reports
    lake = open_lake(azure_config)
    tables = [str(lake.read_arrow(t).to_pylist()) for t in (PREDICTIONS, QUARANTINE)]
    wrong = "V3Jvbmc" + KEY[7:]
    for secret in (KEY, wrong, KEY[:20]):
        assert not any(secret in text for text in outputs)
        assert not any(secret.encode() in p.read_bytes() for p in files)
        assert not any(secret in text for text in tables)
    assert len(files) > 10  # the run did write its checkpoint, state and registry copy
