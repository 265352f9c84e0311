# Sourced by the service scripts (azurite.sh, spark-cluster.sh, spark-connect.sh).

# stop_pid PID SECONDS: SIGTERM, then SIGKILL if the process is still alive after SECONDS (a
# service may hold SIGTERM while requests are open; a JVM may take a while to flush its logs).
stop_pid() {
  local pid=$1 seconds=$2
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((seconds * 2))); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
}
