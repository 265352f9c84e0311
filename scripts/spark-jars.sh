#!/usr/bin/env bash
# The Spark jars pyspark does not ship (scripts/spark-jars/pom.xml: Delta's native writer and
# Hadoop's Azure driver), resolved from Maven Central into pyspark's own jars folder, so every
# local Spark JVM of this environment (driver, and the workers of a standalone cluster started
# from it) has them, and nothing resolves jars at run time. Local set-ups only: a Databricks
# runtime ships its own Delta and Azure drivers, and the bundle installs no jars.
#
#   scripts/spark-jars.sh PYTHON      (make setup runs it with .venv/bin/python)
#
# Maven caches what it downloads in ~/.m2/repository: later runs work offline. Behind a
# mirror: FRUITS_MAVEN_REPO=https://mirror.example/maven2 (every repository goes through it),
# or FRUITS_MAVEN_SETTINGS=/path/settings.xml (your own Maven settings: mirrors, proxies).
# Without Maven, it says so and exits 0: delta-rs and the fruits_blob source need no jars;
# spark.delta_writer=spark and abfs:// paths then fail with one line naming this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}

JARS=$("$PYTHON" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
if ! command -v mvn >/dev/null 2>&1; then
  echo "spark-jars: Maven (mvn) not found: Spark's Delta writer and abfs:// paths unavailable" >&2
  exit 0
fi

args=(-B -q -Dstyle.color=never -f scripts/spark-jars/pom.xml dependency:copy-dependencies
      -DexcludeTransitive=true -DincludeScope=runtime -DoutputDirectory="$JARS")
if [ -n "${FRUITS_MAVEN_SETTINGS:-}" ]; then
  args=(-s "$FRUITS_MAVEN_SETTINGS" "${args[@]}")
elif [ -n "${FRUITS_MAVEN_REPO:-}" ]; then
  settings=$(mktemp)
  trap 'rm -f "$settings"' EXIT
  cat > "$settings" <<XML
<settings><mirrors><mirror><id>fruits-mirror</id><mirrorOf>*</mirrorOf>
<url>${FRUITS_MAVEN_REPO}</url></mirror></mirrors></settings>
XML
  args=(-s "$settings" "${args[@]}")
fi
# Maven 3.8 prints colour resets even in batch mode: strip them from the log.
mvn "${args[@]}" 2>&1 | sed 's/\x1b\[[0-9;]*m//g'
echo "spark-jars: $(grep -c '<artifactId>' scripts/spark-jars/pom.xml | awk '{print $1 - 1}') jars in $JARS" >&2
