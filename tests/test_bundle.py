"""The Databricks Asset Bundle (databricks.yml, resources/*.yml) as a deployment reads it.

Databricks cannot run here, so the bundle is checked against the ``databricks-bundles``
package's own job models (a wrong or misplaced key fails, as ``bundle validate`` would), its
variables against their uses, and each job's environment against the packaged
``conf/databricks.yaml`` it runs: the job must start from what the bundle gives it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from databricks.bundles.jobs import DataSecurityMode, Job, JobRunAs

from fruits import cli
from fruits.config import (
    PACKAGED_CONFIGS,
    Config,
    FeaturizerConfig,
    config_file,
    load_config,
)
from fruits.errors import ConfigError
from fruits.features.featurizer import ExtractorSpec

from .conftest import DATABRICKS_ENV, PROJECT

BUNDLE = PROJECT / "databricks.yml"
RESOURCE_FILES = sorted((PROJECT / "resources").glob("*.yml"))
REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\-\[\]]+)\}")
PLACEHOLDER = re.compile(r"<[A-Za-z][A-Za-z0-9_.\- ]*>")
# What only a deployer knows: no default may stand in for it.
REQUIRED = {
    "storage_account", "catalog", "schema", "service_principal", "warehouse_id",
    "alert_destination_id",
}  # fmt: skip
SAMPLE = {
    "storage_account": "fruitsprod",
    "catalog": "main",
    "schema": "fruits",
    "service_principal": "6c1f0b1e-0000-4000-8000-000000000001",
    "warehouse_id": "1a2b3c4d5e6f7a8b",
    "alert_destination_id": "0b7c6d5e-0000-4000-8000-000000000002",
}
DEPLOYER = "someone@example.com"  # ${workspace.current_user.userName}
# The workspace references the bundle resolves itself, as they read for DEPLOYER.
WORKSPACE = {
    "workspace.current_user.userName": DEPLOYER,
    "workspace.resource_path": f"/Workspace/Users/{DEPLOYER}/.bundle/fruits/dev/resources",
}
# The jobs that run the wheel's `fruits` command (resources/jobs.yml).
WHEEL_JOBS = {"fruits_stream", "fruits_retrain", "fruits_maintain"}
# The top-level and per-target keys of a bundle (Databricks' bundle settings reference): the
# package models resources only, so the rest of databricks.yml is checked against these.
BUNDLE_KEYS = {
    "bundle", "variables", "artifacts", "include", "targets", "run_as", "workspace",
    "resources", "permissions", "sync", "presets", "experimental", "python", "scripts",
}  # fmt: skip
TARGET_KEYS = {
    "mode", "default", "variables", "run_as", "workspace", "resources", "presets",
    "permissions", "artifacts", "bundle", "git", "sync", "cluster_id", "compute_id",
}  # fmt: skip
VARIABLE_KEYS = {"description", "default", "type", "lookup"}


def _bundle() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(BUNDLE.read_text())
    return loaded


def _resources(kind: str) -> dict[str, dict[str, Any]]:
    """Every resource of ``kind`` (jobs, dashboards, alerts) of the bundle's resource files."""
    found: dict[str, dict[str, Any]] = {}
    for file in RESOURCE_FILES:
        resources = (yaml.safe_load(file.read_text()) or {}).get("resources", {})
        # Jobs are checked here, dashboards and alerts in tests/test_lakeview.py.
        assert set(resources) <= {"jobs", "dashboards", "alerts"}, file.name
        for name, resource in resources.get(kind, {}).items():
            assert name not in found, f"{kind}: {name} defined twice"
            found[name] = resource
    return found


def _jobs() -> dict[str, dict[str, Any]]:
    return _resources("jobs")


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _values(target: str, **overrides: str) -> dict[str, str]:
    """Every variable's value for a deployment of ``target``: its default, the target's value,
    the deployer's (SAMPLE), then ``overrides`` (what `--var` would give)."""
    bundle = _bundle()
    values = {n: v["default"] for n, v in bundle["variables"].items() if "default" in v}
    values.update(bundle["targets"][target].get("variables", {}))
    values.update({k: v for k, v in SAMPLE.items() if k not in values}, **overrides)
    return {name: str(value) for name, value in values.items()}


def _substitute(node: Any, values: Mapping[str, str]) -> Any:
    """``node`` with every ``${...}`` resolved as the CLI would; an undeclared one fails."""
    if isinstance(node, dict):
        return {key: _substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(value, values) for value in node]
    if not isinstance(node, str):
        return node

    def resolve(match: re.Match[str]) -> str:
        ref = match[1]
        if ref in WORKSPACE:
            return WORKSPACE[ref]
        assert ref.startswith("var."), f"unexpected reference ${{{ref}}}"
        assert ref[4:] in values, f"${{{ref}}} is not a declared variable"
        return values[ref[4:]]

    return REFERENCE.sub(resolve, node)


def _deployed_jobs(target: str, **overrides: str) -> dict[str, dict[str, Any]]:
    """The jobs as deployed to ``target``: variables resolved, the target's run_as applied."""
    bundle = _bundle()
    run_as = bundle["targets"][target].get("run_as", bundle.get("run_as"))
    jobs: dict[str, dict[str, Any]] = _substitute(_jobs(), _values(target, **overrides))
    for job in jobs.values():
        if run_as is not None:
            job.setdefault("run_as", _substitute(run_as, _values(target, **overrides)))
    return jobs


def _clusters(job: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for task in job.get("tasks", []):
        if "new_cluster" in task:
            yield task["new_cluster"]
    for cluster in job.get("job_clusters", []):
        yield cluster["new_cluster"]


def _task_config(job: dict[str, Any]) -> Config:
    """The configuration the job's one task starts with: the packaged file its parameters
    name, read with its cluster's environment (and nothing of this process')."""
    (task,) = job["tasks"]
    parameters = (task.get("python_wheel_task") or task["spark_python_task"])["parameters"]
    assert parameters[parameters.index("--config") + 1] == "databricks"
    return load_config("databricks", environ=task["new_cluster"].get("spark_env_vars", {}))


def test_every_variable_used_is_declared_and_every_declared_one_is_used() -> None:
    variables = _bundle()["variables"]
    texts = [BUNDLE.read_text(), *(f.read_text() for f in RESOURCE_FILES)]
    used = {m[4:] for text in texts for m in REFERENCE.findall(text) if m.startswith("var.")}
    assert used == set(variables), (used - set(variables), set(variables) - used)
    for name, variable in variables.items():
        assert set(variable) <= VARIABLE_KEYS, name
        assert str(variable.get("description", "")).strip(), f"variable {name}: no description"
    assert {name for name, v in variables.items() if "default" not in v} == REQUIRED


def test_the_bundle_loads_into_the_databricks_bundles_job_models() -> None:
    bundle = _bundle()
    assert set(bundle) <= BUNDLE_KEYS, set(bundle) - BUNDLE_KEYS
    assert set(bundle["targets"]) == {"dev", "prod"}
    for target, settings in bundle["targets"].items():
        assert set(settings) <= TARGET_KEYS, (target, set(settings) - TARGET_KEYS)
        assert set(settings.get("variables", {})) <= set(bundle["variables"]), target
        jobs = _deployed_jobs(target)
        assert set(jobs) == WHEEL_JOBS | {"fruits_tables"}
        for name, job in jobs.items():
            model = Job.from_dict(copy.deepcopy(job))  # type: ignore[arg-type]
            # from_dict fails on an unknown key; the round trip also catches a value it
            # would silently convert or drop.
            assert model.as_dict() == job, name
    with pytest.raises(ValueError, match="Unexpected field 'data_security_mod'"):
        job = _deployed_jobs("prod")["fruits_stream"]
        job["tasks"][0]["new_cluster"]["data_security_mod"] = "SINGLE_USER"
        Job.from_dict(job)  # type: ignore[arg-type]


def test_every_cluster_is_dedicated_and_every_target_runs_as_someone() -> None:
    for target in ("dev", "prod"):
        for name, job in _deployed_jobs(target).items():
            clusters = list(_clusters(job))
            assert clusters, name
            for cluster in clusters:
                assert DataSecurityMode(cluster["data_security_mode"]) in (
                    DataSecurityMode.SINGLE_USER,
                    DataSecurityMode.DATA_SECURITY_MODE_DEDICATED,
                ), name
            assert JobRunAs.from_dict(job["run_as"]), (target, name)
    prod = _deployed_jobs("prod")["fruits_stream"]["run_as"]
    assert prod == {"service_principal_name": SAMPLE["service_principal"]}
    assert _deployed_jobs("dev")["fruits_stream"]["run_as"] == {"user_name": DEPLOYER}


def test_a_secret_is_referenced_only_where_its_feature_is_on() -> None:
    secret = re.compile(r"\{\{secrets/")
    for target in ("dev", "prod"):
        jobs = _deployed_jobs(target)
        assert not any(secret.search(s) for s in _strings(jobs)), target
        default = _task_config(jobs["fruits_stream"])
        assert not default.eventhub.enabled
        assert default.stream.autoloader_notifications == "file_events"
        assert not _task_config(jobs["fruits_maintain"]).eventhub.enabled

    hub = "{{secrets/fruits/eventhub-connection-string}}"
    jobs = _deployed_jobs(
        "prod", eventhub_enabled="true", eventhub_connection_string=hub, eventhub_name="preds"
    )
    stream, maintain = jobs["fruits_stream"], jobs["fruits_maintain"]
    stream_config, maintain_config = _task_config(stream), _task_config(maintain)
    env = stream["tasks"][0]["new_cluster"]["spark_env_vars"]
    assert stream_config.eventhub.enabled
    assert env[stream_config.eventhub.connection_string_env] == hub
    # fruits_maintain's vacuum protects the same outbox: Event Hubs on, the same hub.
    assert maintain_config.eventhub.enabled
    assert maintain_config.eventhub.name == stream_config.eventhub.name == "preds"
    assert not any(secret.search(s) for s in _strings(jobs["fruits_retrain"]))
    assert not any(secret.search(s) for s in _strings(maintain))

    queue = "{{secrets/fruits/queue-connection-string}}"
    jobs = _deployed_jobs(
        "prod", autoloader_notifications="queue", queue="photos", queue_connection_string=queue
    )
    queued = _task_config(jobs["fruits_stream"])
    env = jobs["fruits_stream"]["tasks"][0]["new_cluster"]["spark_env_vars"]
    assert queued.stream.autoloader_notifications == "queue" and queued.stream.queue == "photos"
    assert env[queued.stream.queue_connection_string_env] == queue
    assert not queued.eventhub.enabled


def test_each_job_starts_from_what_the_bundle_gives_it() -> None:
    account = SAMPLE["storage_account"]
    for name, job in _deployed_jobs("prod").items():
        config = _task_config(job)
        assert config.root == f"abfss://lake@{account}.dfs.core.windows.net/fruits", name
        assert config.path("landing") == f"abfss://landing@{account}.dfs.core.windows.net/photos"
        assert config.path("archive").startswith(f"abfss://landing@{account}.")
        assert config.path("checkpoints") == "/Volumes/main/fruits/fruits/checkpoints"
        assert config.featurizer.onnx_dir == "/Volumes/main/fruits/fruits/onnx"
        assert config.azure.account_name == account
        assert config.mlflow.model_name == "main.fruits.fruits"
    train = _deployed_jobs("prod")["fruits_retrain"]["tasks"][0]["python_wheel_task"]
    assert f"abfss://training@{account}.dfs.core.windows.net/fruits360" in train["parameters"]


def test_a_job_without_its_variables_stops_with_one_line_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in DATABRICKS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("FRUITS_ROOT", raising=False)
    assert cli.main(["stream", "--config", "databricks"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("fruits: error: config key 'root' needs the environment variable ")
    assert "FRUITS_STORAGE_ACCOUNT" in line
    partial = {"FRUITS_STORAGE_ACCOUNT": "acct"}
    with pytest.raises(ConfigError, match=r"'paths\.checkpoints' needs .* FRUITS_CATALOG"):
        load_config("databricks", environ=partial)
    # An empty variable (a bundle variable left empty) counts as unset.
    with pytest.raises(ConfigError, match="FRUITS_SCHEMA"):
        load_config("databricks", environ={**DATABRICKS_ENV, "FRUITS_SCHEMA": ""})


def test_no_packaged_config_holds_a_placeholder_and_one_left_in_is_refused(
    tmp_path: Path,
) -> None:
    for name in PACKAGED_CONFIGS:
        raw = yaml.safe_load(config_file(name).read_text())
        left = [s for s in _strings(raw) if PLACEHOLDER.search(s)]
        assert not left, (name, left)
    # A copy made from a template, one value not filled in: refused, naming the key.
    template = config_file("databricks").read_text()
    mine = tmp_path / "mine.yaml"
    mine.write_text(template.replace('"${FRUITS_STORAGE_ACCOUNT}"', "<account>"))
    with pytest.raises(ConfigError) as refused:
        load_config(mine, environ=DATABRICKS_ENV)
    assert str(refused.value).startswith(
        "config key 'azure.account_name' still holds the placeholder <account>"
    )
    assert "FRUITS__AZURE__ACCOUNT_NAME" in str(refused.value)
    with pytest.raises(ConfigError, match=r"'eventhub\.fully_qualified_namespace' still holds"):
        load_config(
            "databricks",
            environ={
                **DATABRICKS_ENV,
                "FRUITS__EVENTHUB__FULLY_QUALIFIED_NAMESPACE": "<namespace>.servicebus.windows.net",
            },
        )
    with pytest.raises(ConfigError, match=r"'paths\.landing' still holds the placeholder <x>"):
        load_config("local", environ={"FRUITS__PATHS__LANDING": "/data/<x>/photos"})


def test_databricks_trains_the_default_extractor_and_streams_the_models_own(
    trained: tuple[Config, dict[str, Any]],
) -> None:
    # Training on Databricks pools the same block as everywhere (the default, no second copy).
    raw = yaml.safe_load(config_file("databricks").read_text())
    assert "layer" not in raw["featurizer"]
    databricks = load_config("databricks", environ=DATABRICKS_ENV)
    assert databricks.featurizer.layer == FeaturizerConfig().layer
    assert databricks.featurizer.layer == load_config("local", environ={}).featurizer.layer
    assert databricks.featurizer.image_size == FeaturizerConfig().image_size
    # The stream takes block and input size from the version it serves, whatever the config
    # says: a config asking for another block still serves the trained model's extractor.
    from fruits.model.serving import ServedModel

    config, summary = trained
    other = load_config(
        PROJECT / "conf" / "local.yaml",
        environ={
            "FRUITS_ROOT": config.root,
            "FRUITS_WEIGHTS": config.featurizer.weights,
            "FRUITS__FEATURIZER__ONNX_DIR": str(config.featurizer.onnx_dir),
            "FRUITS__FEATURIZER__LAYER": "mixed3",
            "FRUITS__FEATURIZER__IMAGE_SIZE": "120",
        },
    )
    served = ServedModel(other, log=lambda _line: None).current
    trained_spec = ExtractorSpec.from_config(config)
    assert (served.spec.layer, served.spec.image_size) == (
        trained_spec.layer,
        trained_spec.image_size,
    )
    assert served.spec.extractor_id == trained_spec.extractor_id
    assert served.version == summary["model_version"]
