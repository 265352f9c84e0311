#!/usr/bin/env bash
# The streaming issue's acceptance checks, end to end through the CLI:
#   A: 200 Test photos -> `fruits stream --once` -> 200 rows, 200 distinct paths; accuracy of the
#      rows vs `fruits evaluate` on the same photos; a second --once adds nothing.
#   B: the same with the process group killed (kill -9) after a few batches, then restarted.
# Usage (from the project root, after `make setup` and a `fruits train`):
#   bash bench/stream_checks.sh <root of a trained model>      e.g. fruits-data
# Any configuration through the environment, e.g. Spark's Delta writer on Azurite's Blob:
#   FRUITS_CONFIG=azurite FRUITS__SPARK__DELTA_WRITER=spark bash bench/stream_checks.sh ROOT
# (with FRUITS_CONFIG=azurite each part gets fresh landing and lake containers). The rows are
# read back with delta-rs, whichever writer wrote them.
set -u
ROOT_WITH_MODEL=$(cd "$1" && pwd)
SHARED=${FRUITS_SHARED:-$(cd .. && pwd)/shared}
export FRUITS_WEIGHTS=${FRUITS_WEIGHTS:-$SHARED/models/inception_v3_notop.weights.h5}
F=.venv/bin/fruits
TEST=$SHARED/data/fruits360/Test
SEL=$(mktemp -d)/photos
mkdir -p "$SEL"
# 200 Test photos: 2 from each of the first 100 classes
ls "$TEST" | head -100 | while read -r c; do
  mkdir -p "$SEL/$c"
  ls "$TEST/$c" | sed -n '5p;20p' | while read -r f; do cp "$TEST/$c/$f" "$SEL/$c/"; done
done
echo "selected: $(find "$SEL" -name '*.jpg' | wc -l)"
export FRUITS__MLFLOW__TRACKING_URI=sqlite:///$ROOT_WITH_MODEL/mlflow.db

fresh_root() {
  export FRUITS_ROOT=$(mktemp -d)
  if [ "${FRUITS_CONFIG:-}" = azurite ]; then
    local suffix; suffix=$(basename "$FRUITS_ROOT" | tr -dc 'a-z0-9' | tail -c 10)
    export FRUITS__PATHS__LANDING="az://landing-$suffix/photos" FRUITS__PATHS__LAKE="az://lake-$suffix/fruits"
  fi
}

echo "== A: stream --once on 200 photos"
fresh_root
$F upload "$SEL"/* 2>/dev/null | tail -1
/usr/bin/time -f "stream --once wall %e s" $F stream --once 2> "$FRUITS_ROOT/a.err" | tail -1
grep -E "batch|wall" "$FRUITS_ROOT/a.err"
$F status --json | tail -1
.venv/bin/python - <<'PY'
import dataclasses
from fruits.config import load_config
from fruits.sinks.delta import open_lake
config = load_config()
config = dataclasses.replace(config, spark=dataclasses.replace(config.spark, delta_writer="deltars"))
rows = open_lake(config).read_arrow("predictions").to_pylist()
ok = sum(r["label"] == r["path"].split("/")[-2] for r in rows)
print(f"stream accuracy {ok}/{len(rows)} = {ok / len(rows):.4f}")
PY
$F evaluate --data "$SEL" 2>/dev/null | tail -1 | cut -c1-200
echo "second --once:"; $F stream --once 2>/dev/null | tail -1; $F status --json | tail -1

echo "== B: kill -9 mid-run, restart"
fresh_root
export FRUITS__STREAM__MAX_FILES_PER_TRIGGER=10  # 20 batches of ~0.3 s
$F upload "$SEL"/* 2>/dev/null | tail -1
setsid $F stream --once > "$FRUITS_ROOT/b1.out" 2> "$FRUITS_ROOT/b1.err" &
pid=$!
for _ in $(seq 1 240); do
  sleep 1
  [ "$(grep -c '^\[fruits.*batch [0-9]*:' "$FRUITS_ROOT/b1.err")" -ge 2 ] && break
done
sleep 0.5
echo "killing after $(grep -c '^\[fruits.*batch [0-9]*:' "$FRUITS_ROOT/b1.err") logged batches"
kill -9 -- -"$pid"; sleep 2
$F status --json | tail -1
$F stream --once 2> "$FRUITS_ROOT/b2.err" | tail -1; grep -E "batch" "$FRUITS_ROOT/b2.err"
$F status --json | tail -1
