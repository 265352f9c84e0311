"""The package as a user installs it: a wheel, run from a folder that is not the checkout.

The wheel is built from this checkout and installed with ``--no-deps`` into a folder put
first on ``PYTHONPATH`` (its dependencies are this environment's), so the code that runs is
the wheel's, with its packaged configuration, from an empty working directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import KNOWN_CLASSES, PROJECT, WEIGHTS, copy_tree, real_photos

pytestmark = [pytest.mark.spark, pytest.mark.slow]


PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    shutil.rmtree(PROJECT / "build", ignore_errors=True)  # setuptools would reuse stale files
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", dist, PROJECT], check=True
    )
    shutil.rmtree(PROJECT / "build", ignore_errors=True)
    (built,) = dist.glob("fruits-*.whl")
    names = set(zipfile.ZipFile(built).namelist())
    for packaged in ("local", "azurite", "databricks"):
        assert f"fruits/conf/{packaged}.yaml" in names
    assert "fruits/sources/uploads.py" in names and "bench/throughput.py" in names
    assert "fruits/model/taxonomy.csv" in names  # read at training, through importlib
    assert not any(name.startswith("tests/") for name in names)  # test helpers stay out
    return built


@pytest.fixture(scope="module")
def wheel_site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    subprocess.run([*PIP, "install", "--no-deps", "--target", site, wheel], check=True)
    return site


def test_the_wheel_takes_a_runtimes_libraries_as_they_are(wheel: Path, tmp_path: Path) -> None:
    """On Databricks the wheel installs beside the runtime's pyspark, pandas, pyarrow, numpy
    and TensorFlow: it asks for ranges (Spark and TensorFlow only as extras), and pip, offline,
    finds every requirement met by what this environment has: nothing to replace."""
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
    )
    lines = metadata.decode().splitlines()
    requires = [
        line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")
    ]
    assert "Requires-Python: <3.13,>=3.11" in lines
    base = [r for r in requires if "extra ==" not in r]
    for name in ("pyspark", "pandas", "pyarrow", "numpy", "tensorflow", "delta-spark"):
        pinned = [r for r in requires if r.lower().startswith(name) and "==" in r.split(";")[0]]
        assert pinned == [], pinned
    assert not any(r.startswith(("pyspark", "tensorflow", "delta-spark")) for r in base)
    report = tmp_path / "report.json"
    subprocess.run(
        [*PIP, "install", "--dry-run", "--no-index", "--report", report, wheel], check=True
    )
    installs = [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]]
    assert installs == ["fruits"]


def test_the_wheel_runs_train_stream_and_status_from_any_folder(
    wheel_site: Path, tmp_path: Path
) -> None:
    work, root = tmp_path / "empty", tmp_path / "root"
    work.mkdir()
    data = tmp_path / "data"
    copy_tree(data / "Training", "Training", KNOWN_CLASSES[:2], 8)
    copy_tree(data / "Test", "Test", KNOWN_CLASSES[:2], 2)
    env = {
        **os.environ,
        "PYTHONPATH": str(wheel_site),
        "FRUITS_ROOT": str(root),
        "FRUITS_WEIGHTS": str(WEIGHTS),
        "FRUITS__SPARK__MASTER": "local[2]",
        "FRUITS__TRAINING__CLASSIFIERS": "[logistic_regression]",
    }

    def fruits(*args: str) -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "fruits.cli", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    where = subprocess.run(
        [sys.executable, "-c", "import fruits.config as c; print(c.load_config().source)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(wheel_site / "fruits" / "conf" / "local.yaml")

    trained = fruits("train", "--data", str(data))
    assert trained["model_version"] == 1 and trained["n_classes"] == 2
    photos = [str(p) for label in KNOWN_CLASSES[:2] for p in real_photos("Test", label, 2, skip=2)]
    assert fruits("upload", *photos)["uploaded"] == 4
    streamed = fruits("stream", "--once")
    assert streamed["predictions"] == 4
    status = fruits("status", "--json")
    assert status["predictions_rows"] == 4 and status["model_version"] == 1
    shown = status["last_predictions"]
    assert isinstance(shown, list) and len(shown) == 4
    assert {row["path"].rsplit("/", 1)[-1] for row in shown} == {Path(p).name for p in photos}
    assert not list(work.iterdir())  # nothing written into the working directory
