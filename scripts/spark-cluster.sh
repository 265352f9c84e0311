#!/usr/bin/env bash
# A standalone Spark cluster from pyspark's own jars: one master and two workers, each a JVM of
# its own with its own work folder and one core, as a local component (like scripts/azurite.sh).
#
#   scripts/spark-cluster.sh start     start the master and the workers, wait until both registered
#   scripts/spark-cluster.sh stop      SIGTERM (executors go with their worker), SIGKILL after 10 s
#   scripts/spark-cluster.sh status
#
# Master on spark://127.0.0.1:7077 (web UI :8080), workers' web UIs on :8081 and :8082. Then
#   FRUITS__SPARK__MASTER=spark://127.0.0.1:7077 fruits train|evaluate|stream|bench ...
# Ports, cores and memory are environment variables (below). The executors run the Python the
# driver names (fruits sets PYSPARK_PYTHON to its own interpreter); their JVMs come from the same
# pyspark, so the Delta and Azure jars that scripts/spark-jars.sh put there are on their classpath.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_process.sh

PYTHON=${FRUITS_PYTHON:-.venv/bin/python}
HOME_DIR=${FRUITS_CLUSTER_HOME:-.spark-cluster}
HOST=127.0.0.1
MASTER_PORT=${FRUITS_CLUSTER_MASTER_PORT:-7077}
MASTER_UI_PORT=${FRUITS_CLUSTER_UI_PORT:-8080}
WORKER_UI_PORT=${FRUITS_CLUSTER_WORKER_UI_PORT:-8081}  # worker N: this + N - 1
WORKERS=${FRUITS_CLUSTER_WORKERS:-2}
WORKER_CORES=${FRUITS_CLUSTER_WORKER_CORES:-1}
WORKER_MEMORY=${FRUITS_CLUSTER_WORKER_MEMORY:-1536m}  # what its executors may take in all
# The master's and workers' own JVMs only schedule: a small heap each.
export SPARK_DAEMON_MEMORY=${SPARK_DAEMON_MEMORY:-256m}
export SPARK_NO_DAEMONIZE=1

spark_home() {
  "$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))'
}

pid_of() { cat "$HOME_DIR/$1.pid" 2>/dev/null || true; }

alive() {
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

port_busy() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

alive_workers() {
  # The master's JSON status: how many workers are ALIVE.
  curl -s "http://$HOST:$MASTER_UI_PORT/json/" 2>/dev/null \
    | "$PYTHON" -c 'import json,sys; print(sum(w["state"] == "ALIVE" for w in json.load(sys.stdin)["workers"]))' \
    2>/dev/null || echo 0
}

launch() {  # name, then the arguments of spark-class
  local name=$1
  shift
  nohup "$SPARK_HOME/bin/spark-class" "$@" >"$HOME_DIR/$name.log" 2>&1 &
  echo $! >"$HOME_DIR/$name.pid"  # spark-class execs the JVM: this is the JVM's pid
}

start() {
  if alive master; then
    echo "spark-cluster: already running (master pid $(pid_of master))"
    return 0
  fi
  local port
  for port in "$MASTER_PORT" "$MASTER_UI_PORT" $(seq "$WORKER_UI_PORT" $((WORKER_UI_PORT + WORKERS - 1))); do
    if port_busy "$port"; then
      echo "spark-cluster: port $port is in use by another program; choose others with" \
        "FRUITS_CLUSTER_MASTER_PORT / FRUITS_CLUSTER_UI_PORT / FRUITS_CLUSTER_WORKER_UI_PORT" >&2
      return 1
    fi
  done
  SPARK_HOME=$(spark_home)
  export SPARK_HOME
  mkdir -p "$HOME_DIR"
  launch master org.apache.spark.deploy.master.Master \
    --host "$HOST" --port "$MASTER_PORT" --webui-port "$MASTER_UI_PORT"
  for _ in $(seq 1 60); do
    port_busy "$MASTER_PORT" && break
    alive master || { echo "spark-cluster: the master exited; see $HOME_DIR/master.log" >&2; tail -5 "$HOME_DIR/master.log" >&2; return 1; }
    sleep 0.5
  done
  local n
  for n in $(seq 1 "$WORKERS"); do
    # Its own work folder (executors' working directories, fetched files) and scratch space.
    mkdir -p "$HOME_DIR/worker-$n/work" "$HOME_DIR/worker-$n/local"
    SPARK_LOCAL_DIRS="$PWD/$HOME_DIR/worker-$n/local" launch "worker-$n" \
      org.apache.spark.deploy.worker.Worker \
      --host "$HOST" --cores "$WORKER_CORES" --memory "$WORKER_MEMORY" \
      --work-dir "$PWD/$HOME_DIR/worker-$n/work" --webui-port $((WORKER_UI_PORT + n - 1)) \
      "spark://$HOST:$MASTER_PORT"
  done
  for _ in $(seq 1 120); do
    if [ "$(alive_workers)" -ge "$WORKERS" ]; then
      echo "spark-cluster: up: master spark://$HOST:$MASTER_PORT (pid $(pid_of master)), $WORKERS workers of $WORKER_CORES core(s), $WORKER_MEMORY"
      echo "spark-cluster: web UI: master http://$HOST:$MASTER_UI_PORT/"
      for n in $(seq 1 "$WORKERS"); do
        echo "spark-cluster: web UI: worker $n http://$HOST:$((WORKER_UI_PORT + n - 1))/ (pid $(pid_of "worker-$n"))"
      done
      return 0
    fi
    sleep 0.5
  done
  echo "spark-cluster: workers not registered after 60 s; see $HOME_DIR/*.log" >&2
  return 1
}

stop_one() {
  local name=$1 pid
  pid=$(pid_of "$name")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    stop_pid "$pid" 10
  fi
  rm -f "$HOME_DIR/$name.pid"
}

stop() {
  if ! alive master && [ -z "$(ls "$HOME_DIR"/worker-*.pid 2>/dev/null)" ]; then
    echo "spark-cluster: not running"
    return 0
  fi
  local file
  # Workers first: a worker kills its executors when it stops.
  for file in "$HOME_DIR"/worker-*.pid; do
    [ -e "$file" ] && stop_one "$(basename "$file" .pid)"
  done
  stop_one master
  echo "spark-cluster: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if alive master; then
      echo "spark-cluster: running (master pid $(pid_of master), $(alive_workers) workers alive)"
    else
      echo "spark-cluster: not running"
      exit 1
    fi
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
