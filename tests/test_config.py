from __future__ import annotations

from pathlib import Path

import pytest

from fruits.cli import main
from fruits.config import load_config
from fruits.errors import ConfigError

from .conftest import DATABRICKS_ENV, PROJECT, WEIGHTS

LOCAL = PROJECT / "conf" / "local.yaml"


def test_embedded_default_puts_everything_under_one_root(tmp_path: Path) -> None:
    config = load_config(LOCAL, environ={"FRUITS_ROOT": str(tmp_path)})
    for name in ("lake", "checkpoints", "landing"):
        assert config.path(name) == f"{tmp_path}/{name}"  # type: ignore[arg-type]
    # MLflow: the local SQLite store and its files under the same root, no server.
    assert config.mlflow_uri("tracking_uri") == f"sqlite:///{tmp_path}/mlflow.db"
    assert config.mlflow_uri("artifact_location") == f"{tmp_path}/mlartifacts"
    assert config.mlflow_uri("registry_uri") is None
    assert (config.mlflow.model_name, config.mlflow.experiment) == ("fruits", "fruits")
    assert config.featurizer.weights == "imagenet"
    assert (config.featurizer.image_size, config.featurizer.layer) == (100, "mixed2+mixed3")
    assert config.featurizer.backend == "onnx"
    assert config.training.explained_variance == 0.995
    assert (config.training.unknown_detector, config.training.refit_all) == ("fused", True)


def test_environment_overrides_keys(tmp_path: Path) -> None:
    config = load_config(
        LOCAL,
        environ={
            "FRUITS_WEIGHTS": str(WEIGHTS),
            "FRUITS__FEATURIZER__IMAGE_SIZE": "150",
            "FRUITS__TRAINING__CLASSIFIERS": "[random_forest]",
        },
    )
    assert config.featurizer.weights == str(WEIGHTS)
    assert config.featurizer.image_size == 150
    assert config.training.classifiers == ("random_forest",)


@pytest.mark.parametrize(
    ("yaml_text", "environ", "message"),
    [
        ("featurizer:\n  wieghts: imagenet\n", {}, "unknown config key 'featurizer.wieghts'"),
        ("colour: red\n", {}, "unknown config key 'colour'"),
        ("featurizer:\n  image_size: big\n", {}, "'featurizer.image_size' has an invalid value"),
        ("spark:\n  delta_writer: parquet\n", {}, "'spark.delta_writer' must be one of"),
        ("", {"FRUITS_WEIGHTS": "/nowhere/w.h5"}, "weights file not found: /nowhere/w.h5"),
        ("training:\n  classifier: svm\n", {}, "'training.classifier' must be 'best'"),
        ("paths:\n  models: /registry\n", {}, "unknown config key 'paths.models'"),
        ("mlflow:\n  model_name: ''\n", {}, "'mlflow.model_name' must not be empty"),
    ],
)
def test_bad_config_fails_with_one_line_naming_the_key(
    tmp_path: Path, yaml_text: str, environ: dict[str, str], message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ=environ)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_cli_prints_one_error_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("featurizer:\n  wieghts: imagenet\n")
    assert main(["train", "--config", str(path), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fruits: error: unknown config key 'featurizer.wieghts' in {path}"]


def test_cli_rejects_an_unreadable_data_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRUITS_ROOT", str(tmp_path))
    monkeypatch.setenv("FRUITS_WEIGHTS", str(WEIGHTS))
    assert main(["train", "--config", str(LOCAL), "--data", str(tmp_path / "nope")]) == 2
    assert "data folder not found" in capsys.readouterr().err


def test_the_default_configuration_ships_in_the_package_and_is_the_checkouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no conf/ here: the packaged file is used
    config = load_config(environ={"FRUITS_ROOT": str(tmp_path)})
    assert Path(config.source).resolve() == LOCAL.resolve()  # one file, no copy that drifts
    assert Path(config.source).parent.resolve() == (PROJECT / "fruits" / "conf").resolve()
    assert config.path("lake") == f"{tmp_path}/lake"


def test_a_packaged_configuration_is_chosen_by_name_or_by_fruits_config(tmp_path: Path) -> None:
    assert load_config("azurite", environ={}).azure.use_emulator
    # Databricks: the workspace's MLflow, the model in Unity Catalog (catalog.schema.model).
    databricks = load_config("databricks", environ=DATABRICKS_ENV).mlflow
    assert (databricks.tracking_uri, databricks.registry_uri) == ("databricks", "databricks-uc")
    assert databricks.model_name.count(".") == 2 and databricks.artifact_location is None
    chosen = load_config(environ={"FRUITS_CONFIG": "azurite"})
    assert chosen.azure.use_emulator and chosen.path("landing").startswith("az://")
    file = tmp_path / "mine.yaml"
    file.write_text("root: /somewhere\n")
    assert load_config(environ={"FRUITS_CONFIG": str(file)}).root == "/somewhere"
    with pytest.raises(ConfigError, match=r"config file not found: nowhere\.yaml"):
        load_config(environ={"FRUITS_CONFIG": "nowhere.yaml"})
