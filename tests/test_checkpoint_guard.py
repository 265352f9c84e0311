"""The single-query guard on a checkpoint, wherever the checkpoint lives (no Spark here)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from streaming.job import CheckpointInUseError, checkpoint_lock


@pytest.mark.parametrize(
    "checkpoint",
    [
        "abfss://lake@account.dfs.core.windows.net/fruits/checkpoints/predict",
        "az://lake/fruits/checkpoints/predict",
        "/Volumes/main/fruits/fruits/checkpoints/predict",
    ],
)
def test_a_second_query_of_this_process_on_a_url_or_volume_checkpoint_is_refused(
    checkpoint: str,
) -> None:
    with (
        checkpoint_lock(checkpoint),
        pytest.raises(CheckpointInUseError, match="this process"),
        checkpoint_lock(checkpoint.rstrip("/") + "/"),  # the same checkpoint
    ):
        pass
    with checkpoint_lock(checkpoint):  # released on exit: the next run takes it
        pass


def test_a_volume_checkpoint_gets_no_local_lock_file() -> None:
    # /Volumes is Databricks' FUSE mount of object storage: flock there locks nothing across
    # machines. Here (no such mount) the guard must not create that tree on the local disk.
    volumes = Path("/Volumes")
    existed = volumes.exists()
    volume = volumes / f"fruits-test-{uuid.uuid4().hex[:12]}"
    checkpoint = f"{volume}/checkpoints/predict"
    try:
        with checkpoint_lock(checkpoint):
            assert not volume.exists()
    finally:  # what a guard that does create it left behind
        shutil.rmtree(volume, ignore_errors=True)
        if not existed and volumes.exists() and not any(volumes.iterdir()):
            volumes.rmdir()
    assert not volume.exists()


def test_a_local_checkpoint_is_locked_across_processes_and_released(tmp_path: Path) -> None:
    import subprocess
    import sys

    checkpoint = str(tmp_path / "checkpoints" / "predict")
    probe = (
        "import sys\n"
        "from streaming.job import CheckpointInUseError, checkpoint_lock\n"
        "try:\n"
        "    with checkpoint_lock(sys.argv[1]):\n"
        "        print('took it')\n"
        "except CheckpointInUseError as exc:\n"
        "    print(exc)\n"
    )

    def other_process() -> str:
        done = subprocess.run(
            [sys.executable, "-c", probe, checkpoint], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    with checkpoint_lock(checkpoint):
        assert "in use by pid" in other_process()
    assert other_process() == "took it"
