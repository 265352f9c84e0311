#!/usr/bin/env bash
# Azurite, the Azure Storage emulator (npm package "azurite"), as a local component.
#
#   scripts/azurite.sh start    install on first use, start, wait until it answers
#   scripts/azurite.sh stop     SIGTERM, then SIGKILL if still alive after a few seconds
#   scripts/azurite.sh status
#
# Blob on 127.0.0.1:10000, Queue on 127.0.0.1:10001 (the SDKs' "UseDevelopmentStorage=true"
# ports). Data persists in .azurite/data, so a stop/start (an "outage") keeps the blobs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_process.sh

VERSION=3.37.0
HOME_DIR=${AZURITE_HOME:-.azurite}
BIN=$HOME_DIR/node_modules/.bin/azurite
PID_FILE=$HOME_DIR/azurite.pid
LOG_FILE=$HOME_DIR/azurite.log
BLOB_PORT=10000
QUEUE_PORT=10001
TABLE_PORT=10002

running() {
  [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

answers() {
  # Any HTTP answer (Azurite says 400 or 403 to an anonymous GET) means it is up.
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/devstoreaccount1?comp=list" || true)
  [ -n "$code" ] && [ "$code" != 000 ]
}

start() {
  if running; then
    echo "azurite: already running (pid $(cat "$PID_FILE"))"
    return 0
  fi
  if answers "$BLOB_PORT"; then
    echo "azurite: port $BLOB_PORT already answers (another emulator?); using it"
    return 0
  fi
  if [ ! -x "$BIN" ]; then
    echo "azurite: installing azurite@$VERSION from npm into $HOME_DIR (first time)"
    mkdir -p "$HOME_DIR"
    npm install --prefix "$HOME_DIR" --no-audit --no-fund --silent "azurite@$VERSION" >/dev/null
  fi
  mkdir -p "$HOME_DIR/data"
  # --skipApiVersionCheck: newer SDKs send API versions Azurite does not list yet.
  # --loose: ignore headers Azurite does not implement instead of failing the request.
  nohup "$BIN" --silent --skipApiVersionCheck --loose --location "$HOME_DIR/data" \
    --blobHost 127.0.0.1 --blobPort "$BLOB_PORT" \
    --queueHost 127.0.0.1 --queuePort "$QUEUE_PORT" \
    --tableHost 127.0.0.1 --tablePort "$TABLE_PORT" >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 60); do
    if answers "$BLOB_PORT" && answers "$QUEUE_PORT"; then
      echo "azurite: up (pid $(cat "$PID_FILE")): blob :$BLOB_PORT, queue :$QUEUE_PORT"
      return 0
    fi
    if ! running; then
      echo "azurite: exited during start; see $LOG_FILE" >&2
      tail -5 "$LOG_FILE" >&2 || true
      return 1
    fi
    sleep 0.5
  done
  echo "azurite: not answering after 30 s; see $LOG_FILE" >&2
  return 1
}

stop() {
  if ! running; then
    rm -f "$PID_FILE"
    echo "azurite: not running"
    return 0
  fi
  # Azurite can ignore SIGTERM while requests are open: give it 5 s, then SIGKILL.
  stop_pid "$(cat "$PID_FILE")" 5
  rm -f "$PID_FILE"
  echo "azurite: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "azurite: running (pid $(cat "$PID_FILE"))"; else echo "azurite: not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
