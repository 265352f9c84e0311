# Two commands do everything on a fresh machine (each creates .venv/ on first use):
#   make run    train a first model if none exists, then stream the landing folder (Ctrl-C stops)
#   make test   the test suite (with a headless Chromium for the dashboard test: make browser)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared)
# Where the photos are: the shared Fruits-360 subset when it sits beside the project.
DATA ?= $(SHARED)/data/fruits360
# Pretrained weights: the shared file when present, else Keras downloads ImageNet's.
ifneq ($(wildcard $(SHARED)/models/inception_v3_notop.weights.h5),)
export FRUITS_WEIGHTS ?= $(SHARED)/models/inception_v3_notop.weights.h5
endif
export FRUITS_SHARED ?= $(SHARED)

.PHONY: setup native-blas browser run test lint docs clean azurite-start azurite-stop cluster-start \
	cluster-stop connect-start connect-stop
setup: $(VENV)/.installed native-blas

# Spark ML on a native BLAS/LAPACK: installed when root with apt-get, else one line says why not.
native-blas:
	@scripts/native-blas.sh

# Headless Chromium + chromedriver for the dashboard's browser test (tests/test_dashboard.py):
# installed when root with apt-get, else checked, with the command to install them.
browser:
	@scripts/chromium.sh

# The package with its pinned set (constraints.txt), then the Spark jars pyspark lacks (Delta,
# Hadoop's Azure driver) from Maven Central into pyspark's jars folder (scripts/spark-jars.sh).
$(VENV)/.installed: pyproject.toml constraints.txt scripts/spark-jars/pom.xml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,spark,tf,docs]"
	scripts/spark-jars.sh $(BIN)/python
	touch $@

run: setup
	$(BIN)/fruits stream --train-data "$(DATA)"

test: setup browser
	$(BIN)/pytest

# ruff (lint + format) everywhere; mypy strict on the library (pyproject.toml), checking the jobs
# and benchmarks too. CI runs this before the tests.
lint: setup
	$(BIN)/ruff check fruits batch streaming bench tests
	$(BIN)/ruff format --check fruits batch streaming bench tests
	$(BIN)/mypy fruits batch streaming bench

# The documentation site into site/ (mkdocs.yml): warnings are errors, so a broken link or
# anchor fails; the reference pages are generated from the code (docs/gen/). CI runs it after
# lint.
docs: setup
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Azurite (Azure Storage emulator, npm): installed into .azurite/ on first use; blob :10000,
# queue :10001 on 127.0.0.1. conf/azurite.yaml points the system at it.
azurite-start:
	scripts/azurite.sh start

azurite-stop:
	scripts/azurite.sh stop

# A standalone Spark cluster from pyspark's jars: master spark://127.0.0.1:7077 (UI :8080), two
# workers of one core (UIs :8081, :8082). FRUITS__SPARK__MASTER=spark://127.0.0.1:7077 uses it.
cluster-start: setup
	scripts/spark-cluster.sh start

cluster-stop:
	scripts/spark-cluster.sh stop

# A local Spark Connect server (pyspark's own) on sc://127.0.0.1:15002, the project's Python for
# its workers. FRUITS__SPARK__REMOTE=sc://127.0.0.1:15002 runs the jobs through it.
connect-start: setup
	scripts/spark-connect.sh start

connect-stop:
	scripts/spark-connect.sh stop

clean:
	rm -rf $(VENV) fruits-data .azurite .spark-cluster .spark-connect .pytest_cache .mypy_cache \
		.ruff_cache
