"""The stream options that used to mean something else per source, on a real folder landing
through the real stream: ``include_existing_files: false`` takes none of the files already
there (it quarantined each as ``empty``), ``path_glob`` narrows the names (it was ignored), and
a re-upload under the same name is a new arrival (Spark's file source ignored it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fruits.config import Config
from fruits.sinks.delta import open_lake
from fruits.sinks.tables import PREDICTIONS, QUARANTINE
from streaming.job import run_stream

from .conftest import copy_registry, real_photos

pytestmark = pytest.mark.spark


def test_existing_files_glob_and_re_uploads_mean_the_same_on_a_folder(
    spark: Any,
    trained: tuple[Config, dict[str, Any]],
    make_config: Callable[..., Config],
    tmp_path: Path,
) -> None:
    copy_registry(trained[0], tmp_path)
    config = make_config(
        tmp_path,
        FRUITS__STREAM__INCLUDE_EXISTING_FILES="false",
        FRUITS__STREAM__PATH_GLOB="IMG_*",
    )
    kiwi, banana = (real_photos("Test", label, 1)[0].read_bytes() for label in ("Kiwi", "Banana"))
    landing = Path(config.path("landing"))
    landing.mkdir(parents=True)
    (landing / "IMG_old.jpg").write_bytes(kiwi)  # there before the first start

    def rows() -> tuple[list[str], int]:
        lake = open_lake(config)
        names = [
            p.rsplit("/", 1)[-1] for p in lake.read_arrow(PREDICTIONS).column("path").to_pylist()
        ]
        return sorted(names), lake.read_arrow(QUARANTINE).num_rows

    assert run_stream(config, once=True)["rows_in"] == 0
    (landing / "IMG_1.jpg").write_bytes(kiwi)
    (landing / "other.jpg").write_bytes(kiwi)  # not IMG_*: not discovered
    run_stream(config, once=True)
    assert rows() == (["IMG_1.jpg"], 0)

    (landing / "IMG_1.jpg").write_bytes(banana)  # the same name, another photo
    run_stream(config, once=True)
    assert rows() == (["IMG_1.jpg", "IMG_1.jpg"], 0)
    labels = open_lake(config).read_arrow(PREDICTIONS).column("label").to_pylist()
    assert sorted(labels) == ["Banana", "Kiwi"]
