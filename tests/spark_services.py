"""Test-only helpers for the real Spark services of scripts/: the standalone cluster (its master's
JSON status, its executors' JVMs found by their command line) and the Spark Connect server, and
the CLI run in a child process against them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
MASTER_PORT = int(os.environ.get("FRUITS_CLUSTER_MASTER_PORT", "7077"))
MASTER_UI_PORT = int(os.environ.get("FRUITS_CLUSTER_UI_PORT", "8080"))
CONNECT_PORT = int(os.environ.get("FRUITS_CONNECT_PORT", "15002"))
MASTER_URL = f"spark://{HOST}:{MASTER_PORT}"
CONNECT_URL = f"sc://{HOST}:{CONNECT_PORT}"


def master_status() -> dict[str, Any] | None:
    """The standalone master's JSON status (workers, applications), None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{MASTER_UI_PORT}/json/", timeout=5) as reply:
            status: dict[str, Any] = json.load(reply)
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return status


def port_answers(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((HOST, port)) == 0


def service(script: str, command: str) -> None:
    subprocess.run([str(PROJECT / "scripts" / script), command], check=True, cwd=PROJECT)


def app_id(name: str, timeout_s: float = 120) -> str:
    """The id of the running application called ``name``, from the master."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = master_status() or {}
        for app in status.get("activeapps", []):
            if app["name"] == name:
                return str(app["id"])
        time.sleep(0.5)
    raise AssertionError(f"no application {name} on the master after {timeout_s} s")


def _processes() -> list[tuple[int, int, list[str]]]:
    """(pid, parent pid, command line) of every process this user can see."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found.append((int(entry.name), parent, [a.decode(errors="replace") for a in argv if a]))
    return found


def executor_pids(application: str) -> list[int]:
    """The JVMs of ``application``'s executors: CoarseGrainedExecutorBackend processes whose
    command line names that application id."""
    return sorted(
        pid
        for pid, _, argv in _processes()
        if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in argv and application in argv
    )


def has_python_worker(executor: int) -> bool:
    """Whether an executor JVM has started its Python worker daemon: a task of a pandas UDF
    is running or has run on it."""
    return any(
        parent == executor and any("pyspark.daemon" in a or "pyspark.worker" in a for a in argv)
        for _, parent, argv in _processes()
    )


def cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``fruits ...`` in its own process group, output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fruits.cli", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=PROJECT,
        )


def last_json(log: Path) -> dict[str, Any]:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    assert lines, log.read_text(errors="replace")[-3000:]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_cli(
    args: list[str], env: dict[str, str], log: Path, timeout_s: float = 600
) -> dict[str, Any]:
    """Run ``fruits ...`` to its end; its last JSON line."""
    process = cli(args, env, log)
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        raise
    assert code == 0, log.read_text(errors="replace")[-4000:]
    return last_json(log)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)
