#!/usr/bin/env bash
# A local Spark Connect server (pyspark ships it: org.apache.spark.sql.connect.service.
# SparkConnectServer), as a local component (like scripts/azurite.sh).
#
#   scripts/spark-connect.sh start     start it, wait until it answers on its port
#   scripts/spark-connect.sh stop      SIGTERM, then SIGKILL after 10 s
#   scripts/spark-connect.sh status
#
# Listens on sc://127.0.0.1:15002 (FRUITS_CONNECT_PORT); its Spark UI on :4045
# (FRUITS_CONNECT_UI_PORT). Then
#   FRUITS__SPARK__REMOTE=sc://127.0.0.1:15002 fruits train|evaluate|stream|status ...
# Its Python workers and foreachBatch processes run the project's Python (FRUITS_PYTHON); it has
# Delta's SQL extension when scripts/spark-jars.sh put Delta's jars in pyspark's folder. Its
# master is local[2] (FRUITS_CONNECT_MASTER, e.g. spark://127.0.0.1:7077 for the cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_process.sh

PYTHON=${FRUITS_PYTHON:-.venv/bin/python}
HOME_DIR=${FRUITS_CONNECT_HOME:-.spark-connect}
HOST=127.0.0.1
PORT=${FRUITS_CONNECT_PORT:-15002}
UI_PORT=${FRUITS_CONNECT_UI_PORT:-4045}
MASTER=${FRUITS_CONNECT_MASTER:-local[2]}
DRIVER_MEMORY=${FRUITS_CONNECT_DRIVER_MEMORY:-2g}
PID_FILE=$HOME_DIR/connect.pid
LOG_FILE=$HOME_DIR/connect.log

running() {
  [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

port_busy() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

start() {
  if running; then
    echo "spark-connect: already running (pid $(cat "$PID_FILE"))"
    return 0
  fi
  if port_busy "$PORT"; then
    echo "spark-connect: port $PORT is in use by another program; choose another with FRUITS_CONNECT_PORT" >&2
    return 1
  fi
  local spark_home python cores
  spark_home=$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
  python=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")
  mkdir -p "$HOME_DIR/local" "$HOME_DIR/warehouse"
  local delta=()
  if ls "$spark_home"/jars/delta-spark_*.jar >/dev/null 2>&1; then
    delta=(--conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension
      --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog)
  fi
  # Task slots, known to clients (they have no SparkContext): the cores of a local[N] master.
  cores=$(echo "$MASTER" | sed -n 's/^local\[\([0-9][0-9]*\)\]$/\1/p')
  local parallelism=()
  [ -n "$cores" ] && parallelism=(--conf "spark.default.parallelism=$cores")
  PYSPARK_PYTHON=$python PYSPARK_DRIVER_PYTHON=$python SPARK_LOCAL_DIRS="$PWD/$HOME_DIR/local" \
    TF_CPP_MIN_LOG_LEVEL=2 \
    nohup "$spark_home/bin/spark-submit" \
    --class org.apache.spark.sql.connect.service.SparkConnectServer \
    --name fruits-connect --master "$MASTER" --driver-memory "$DRIVER_MEMORY" \
    --conf "spark.connect.grpc.binding.address=$HOST" \
    --conf "spark.connect.grpc.binding.port=$PORT" \
    --conf "spark.ui.port=$UI_PORT" \
    --conf "spark.pyspark.python=$python" \
    --conf spark.python.worker.reuse=true \
    --conf "spark.sql.warehouse.dir=$PWD/$HOME_DIR/warehouse" \
    "${delta[@]}" "${parallelism[@]}" \
    spark-internal >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"  # spark-submit execs the JVM: this is the JVM's pid
  for _ in $(seq 1 120); do
    if port_busy "$PORT"; then
      echo "spark-connect: up (pid $(cat "$PID_FILE")): sc://$HOST:$PORT, master $MASTER"
      echo "spark-connect: Spark UI http://$HOST:$UI_PORT/ (or the next free port; see $LOG_FILE)"
      return 0
    fi
    if ! running; then
      echo "spark-connect: exited during start; see $LOG_FILE" >&2
      tail -5 "$LOG_FILE" >&2 || true
      return 1
    fi
    sleep 0.5
  done
  echo "spark-connect: not answering after 60 s; see $LOG_FILE" >&2
  return 1
}

stop() {
  if ! running; then
    rm -f "$PID_FILE"
    echo "spark-connect: not running"
    return 0
  fi
  stop_pid "$(cat "$PID_FILE")" 10
  rm -f "$PID_FILE"
  echo "spark-connect: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "spark-connect: running (pid $(cat "$PID_FILE"))"; else echo "spark-connect: not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
