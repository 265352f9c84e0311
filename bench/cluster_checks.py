"""The cluster and Spark Connect acceptance checks, end to end through the CLI, on fresh roots:

  A: 200 Test photos (2 from each of 100 classes) -> `fruits stream --once` on the standalone
     cluster -> the rows in Delta;
  B: the same photos into a long-running `fruits stream` on the cluster, 10 photos a trigger;
     one executor JVM SIGKILLed at its first Python task -> the rows once all have landed, the
     executors removed and the tasks that ran again (from the driver's REST API);
  C: through Spark Connect: `fruits train` (--data), the 200 photos -> `fruits stream --once`,
     `fruits status --json`; then `fruits stream --once` in local[*] on the same photos with
     the same model: the answers compared.

Usage, from a checkout (it uses tests/spark_services.py), with `make cluster-start` and
`make connect-start` done:
    .venv/bin/python -m bench.cluster_checks --images ../shared/data/fruits360/Test \\
        --train-data DIR_WITH_Training_AND_Test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any


def _select(images: Path, target: Path) -> int:
    for label in sorted(p.name for p in images.iterdir() if p.is_dir())[:100]:
        photos = sorted((images / label).glob("*.jpg"))
        (target / label).mkdir(parents=True)
        for photo in (photos[4], photos[19]):
            shutil.copy(photo, target / label / photo.name)
    return sum(1 for _ in target.rglob("*.jpg"))


def _rows(root: Path) -> tuple[int, int]:
    from fruits.sinks.delta_rs import DeltaRsLake

    lake = DeltaRsLake(str(root / "lake"))
    paths = lake.read_arrow("predictions", columns=["path"]).column("path").to_pylist()
    paths += lake.read_arrow("quarantine", columns=["path"]).column("path").to_pylist()
    return len(paths), len(set(paths))


def main() -> None:
    from tests import spark_services as services

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True, type=Path)
    parser.add_argument("--train-data", required=True)
    parser.add_argument("--parts", default="ABC")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fruits-cluster-checks-"))
    selected = work / "photos"
    n = _select(args.images, selected)
    print(f"selected {n} photos; work folder {work}")
    onnx = str(work / "onnx")
    results: dict[str, Any] = {}
    model_root = work / "model"

    def env(root: Path, **extra: str) -> dict[str, str]:
        return {"FRUITS_ROOT": str(root), "FRUITS__FEATURIZER__ONNX_DIR": onnx, **extra}

    cluster = {
        "FRUITS__SPARK__MASTER": services.MASTER_URL,
        "FRUITS__SPARK__EXECUTOR_MEMORY": "1g",
        "FRUITS__SPARK__DRIVER_MEMORY": "1g",
    }
    remote = {"FRUITS__SPARK__REMOTE": services.CONNECT_URL}
    log = work / "cli.log"
    # One model for all parts, trained through Spark Connect (part C's training).
    started = time.perf_counter()
    trained = services.run_cli(
        ["train", "--data", args.train_data], env(model_root, **remote), log, timeout_s=3600
    )
    results["C_train_through_connect"] = {
        k: trained[k] for k in ("model_version", "n_classes", "accuracy_test", "seconds_total")
    }
    # the trained model: every part reads that root's MLflow registry
    models = {"FRUITS__MLFLOW__TRACKING_URI": f"sqlite:///{model_root}/mlflow.db"}

    if "A" in args.parts:
        root = work / "a"
        services.run_cli(["upload", str(selected)], env(root, **models), log)
        started = time.perf_counter()
        summary = services.run_cli(["stream", "--once"], env(root, **cluster, **models), log)
        rows, distinct = _rows(root)
        results["A_cluster_stream_once"] = {
            "landed": n,
            "rows": rows,
            "distinct_paths": distinct,
            "batches": summary["batches"],
            "wall_s": round(time.perf_counter() - started, 1),
        }
        print(results["A_cluster_stream_once"])

    if "B" in args.parts:
        root = work / "b"
        services.run_cli(["upload", str(selected)], env(root, **models), log)
        app = f"fruits-checks-b-{os.getpid()}"
        stream_log = root / "stream.log"
        stream = services.cli(
            ["stream"],
            env(
                root,
                **cluster,
                **models,
                FRUITS__SPARK__APP_NAME=app,
                FRUITS__STREAM__MAX_FILES_PER_TRIGGER="10",
                FRUITS__SPARK__UI_PORT="4150",
            ),
            stream_log,
        )
        try:
            application = services.app_id(app)
            killed = None
            while killed is None:
                for pid in services.executor_pids(application):
                    if services.has_python_worker(pid):
                        os.kill(pid, signal.SIGKILL)
                        killed = pid
                        break
                time.sleep(0.05)
            rows_at_kill = _rows(root)[0]
            deadline = time.monotonic() + 900
            while _rows(root)[0] < n and time.monotonic() < deadline and stream.poll() is None:
                time.sleep(0.5)
            alive = stream.poll() is None
            ui = next(
                line.rsplit(" ", 1)[1]
                for line in stream_log.read_text().splitlines()
                if "Spark UI" in line
            )
            api = f"{ui}/api/v1/applications"
            (info,) = services.get_json(api)
            executors = services.get_json(f"{api}/{info['id']}/allexecutors")
            stages = services.get_json(f"{api}/{info['id']}/stages")
            stream.send_signal(signal.SIGTERM)
            code = stream.wait(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(stream.pid, signal.SIGKILL)
        rows, distinct = _rows(root)
        results["B_cluster_executor_killed"] = {
            "landed": n,
            "rows": rows,
            "distinct_paths": distinct,
            "rows_when_killed": rows_at_kill,
            "stream_alive_after": alive,
            "exit_code_after_sigterm": code,
            "executors_removed": [
                e["id"] for e in executors if e["id"] != "driver" and not e["isActive"]
            ],
            "executors_active": [
                e["id"] for e in executors if e["id"] != "driver" and e["isActive"]
            ],
            "failed_tasks": sum(s.get("numFailedTasks", 0) for s in stages),
            "batches_logged": stream_log.read_text().count("] batch "),
        }
        print(results["B_cluster_executor_killed"])

    if "C" in args.parts:
        root = work / "c"
        services.run_cli(["upload", str(selected)], env(root, **models), log)
        summary = services.run_cli(["stream", "--once"], env(root, **remote, **models), log)
        status = services.run_cli(["status", "--json"], env(root, **remote, **models), log)
        local_root = work / "c-local"
        services.run_cli(["upload", str(selected)], env(local_root, **models), log)
        services.run_cli(
            ["stream", "--once"], env(local_root, FRUITS__SPARK__MASTER="local[*]", **models), log
        )
        from fruits.sinks.delta_rs import DeltaRsLake

        def answers(at: Path) -> dict[str, tuple[str, float, bool]]:
            rows = DeltaRsLake(str(at / "lake")).read_arrow("predictions").to_pylist()
            return {
                r["path"].split("/landing/", 1)[1]: (r["label"], r["confidence"], r["is_unknown"])
                for r in rows
            }

        connect, local = answers(root), answers(local_root)
        same_labels = sum(connect[p][0] == local[p][0] for p in local if p in connect)
        max_diff = max(abs(connect[p][1] - local[p][1]) for p in local if p in connect)
        results["C_connect"] = {
            "landed": n,
            "stream_rows_in": summary["rows_in"],
            "status_predictions_rows": status["predictions_rows"],
            "status_quarantine_rows": status["quarantine_rows"],
            "local_rows": len(local),
            "same_paths": connect.keys() == local.keys(),
            "same_labels": same_labels,
            "max_confidence_difference": max_diff,
        }
        print(results["C_connect"])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
